"""Load a trained model's skops artifact and classify whole batches of documents in one call,
where scikit-learn is loaded anyway (training, comparing models, registering them); and write
the scoring form that workers classify with, without scikit-learn (`scoring.Scorer`).

A single-document call costs about a millisecond of scikit-learn input validation, more than the
tokenizing itself, so callers should hand over every document they have at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import sklearn
import skops.io as sio
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.naive_bayes import MultinomialNB

from docingest.model.scoring import (
    REQUIRED_METADATA,
    Link,
    ModelLoadError,
    Prediction,
    Probabilities,
    Scorer,
    predict_with,
)
from docingest.model.vectorizer import WordVectorizer

# Types a model file may contain beyond those skops trusts out of the box (builtins, numpy, scipy
# and every scikit-learn estimator), one fully qualified name each, after review. The pipelines
# that training.py builds report exactly these, for every supported estimator
# (tests/unit/test_classifier.py checks it). WordVectorizer is rebuilt from its attributes (ints, a
# str -> int dict and a float array) without running any of its code.
TRUSTED_TYPES: Final[tuple[str, ...]] = ("docingest.model.vectorizer.WordVectorizer",)

# How far a scoring form's probabilities may be from its pipeline's (tests/unit/test_scoring.py:
# the same features and sums, so they differ by rounding alone).
AGREEMENT: Final = 1e-9


class Classifier:
    """A fitted pipeline and its metadata; threads may share it, prediction is read-only."""

    def __init__(self, pipeline: Any, metadata: dict[str, Any]) -> None:
        self._pipeline = pipeline
        self._classes: list[str] = [str(label) for label in pipeline.classes_]
        self.metadata = metadata
        self.version: str = str(metadata["version"])
        self.labels: list[str] = list(metadata["labels"])

    @classmethod
    def load(cls, path: Path) -> Classifier:
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        return cls.from_bytes(path.read_bytes(), source=str(path))

    @classmethod
    def from_bytes(cls, artifact: bytes, *, source: str) -> Classifier:
        """Refuse any artifact holding a type we have not reviewed: loading may run its code.

        `source` names the artifact (a path, a registry version) in error messages.
        """
        content = _load_trusted(artifact, source)
        pipeline, metadata = _unpack(content, source)
        return cls(pipeline, metadata)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        return predict_with(self._probabilities, self._classes, texts)

    def _probabilities(self, texts: list[str]) -> Probabilities:
        # Our inputs are texts we validated, so scikit-learn's own checks only cost time (~20 %).
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            probabilities: Probabilities = self._pipeline.predict_proba(texts)
        return probabilities

    def scoring_form(self) -> bytes:
        """The `.npz` workers classify with (`scoring.Scorer`), or ModelLoadError (its message
        follows the model's name) for a pipeline it cannot reproduce: checked, it must give this
        pipeline's probabilities on a text of every term of the vocabulary and on one of none."""
        steps = getattr(self._pipeline, "steps", [])
        vectorizer, estimator = (steps[0][1], steps[-1][1]) if len(steps) == 2 else (None, None)
        if not isinstance(vectorizer, WordVectorizer):
            raise ModelLoadError(
                "cannot be scored without scikit-learn: its pipeline is not a WordVectorizer "
                "then one estimator"
            )
        weights, intercepts, link = _linear(estimator)
        terms = vectorizer.get_feature_names_out()
        try:
            scorer = Scorer(
                metadata=self.metadata,
                labels=np.array(self._classes, dtype=np.str_),
                terms=np.char.encode(terms, "ascii"),
                idf=vectorizer.idf_,
                weights=np.asarray(weights, dtype=np.float64),
                intercepts=np.asarray(intercepts, dtype=np.float64),
                link=link,
            )
        except ValueError as error:
            raise ModelLoadError(f"has no usable scoring form: {error}") from error
        texts = [" ".join(terms.tolist()), ""]
        apart = float(np.abs(scorer.probabilities(texts) - self._probabilities(texts)).max())
        if not apart <= AGREEMENT:
            raise ModelLoadError(
                f"gives other probabilities in its scoring form than in its pipeline ({apart:.3g} "
                f"apart, at most {AGREEMENT:g})"
            )
        return scorer.to_bytes()


def _linear(estimator: Any) -> tuple[npt.NDArray[Any], npt.NDArray[Any], Link]:
    """The weights per class, the intercepts and the link of the estimator's predict_proba."""
    if isinstance(estimator, MultinomialNB):
        return estimator.feature_log_prob_, estimator.class_log_prior_, Link.SOFTMAX
    binary = getattr(estimator, "coef_", np.empty((0, 0))).shape[0] == 1
    if isinstance(estimator, LogisticRegression):
        return estimator.coef_, estimator.intercept_, Link.SIGMOID if binary else Link.SOFTMAX
    if isinstance(estimator, SGDClassifier) and estimator.loss == "log_loss":
        link = Link.SIGMOID if binary else Link.ONE_VS_REST
        return estimator.coef_, estimator.intercept_, link
    raise ModelLoadError(
        f"cannot be scored without scikit-learn: its {type(estimator).__name__} is not one "
        "docingest scores (LogisticRegression, SGDClassifier(loss='log_loss'), MultinomialNB)"
    )


def _load_trusted(artifact: bytes, source: str) -> Any:
    try:
        found = sio.get_untrusted_types(data=artifact)
    except Exception as error:  # any parse failure on arbitrary bytes means "not a model"
        raise ModelLoadError(f"{source} is not a skops model artifact: {error!r}") from error
    untrusted = sorted(set(found) - set(TRUSTED_TYPES))
    if untrusted:
        raise ModelLoadError(f"{source} holds untrusted types, not loaded: {', '.join(untrusted)}")
    try:
        return sio.loads(artifact, trusted=list(TRUSTED_TYPES))
    except Exception as error:  # e.g. written by an incompatible scikit-learn version
        raise ModelLoadError(f"{source} could not be rebuilt: {error!r}") from error


def _unpack(content: Any, source: str) -> tuple[Any, dict[str, Any]]:
    """Check the shape save_model writes, so a wrong file fails here and not on first use."""
    if not isinstance(content, dict) or not {"pipeline", "metadata"} <= content.keys():
        raise ModelLoadError(
            f"{source} is not a docingest model: expected a dict with 'pipeline' and 'metadata'"
        )
    pipeline, metadata = content["pipeline"], content["metadata"]
    if not isinstance(metadata, dict) or not set(REQUIRED_METADATA) <= metadata.keys():
        raise ModelLoadError(f"{source} metadata lacks one of: {', '.join(REQUIRED_METADATA)}")
    if not hasattr(pipeline, "predict_proba") or not hasattr(pipeline, "classes_"):
        raise ModelLoadError(f"{source} pipeline is not a fitted classifier with probabilities")
    if [str(label) for label in pipeline.classes_] != list(metadata["labels"]):
        raise ModelLoadError(f"{source} metadata labels do not match the pipeline's classes")
    return pipeline, metadata
