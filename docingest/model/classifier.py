"""Load a trained model once per process and classify whole batches of documents in one call.

A single-document call costs about a millisecond of scikit-learn input validation, more than the
tokenizing itself, so callers should hand over every document they have at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import sklearn
import skops.io as sio

# Types a model file may contain beyond those skops trusts out of the box (builtins, numpy, scipy
# and every scikit-learn estimator), one fully qualified name each, after review. The pipelines
# that training.py builds report exactly these, for every supported estimator
# (tests/unit/test_classifier.py checks it). WordVectorizer is rebuilt from its attributes (ints, a
# str -> int dict and a float array) without running any of its code.
TRUSTED_TYPES: Final[tuple[str, ...]] = ("docingest.model.vectorizer.WordVectorizer",)

REQUIRED_METADATA: Final[tuple[str, ...]] = ("version", "labels")


# How many labels, best first, each document keeps with their probabilities.
TOP_ALTERNATIVES: Final = 3


@dataclass(frozen=True, slots=True)
class Prediction:
    """The confidence is the predicted class's probability (0..1), stored with the document.

    `alternatives` are the best `TOP_ALTERNATIVES` labels with their probabilities, the
    predicted one first: a reviewer sees at once whether the model hesitated, and between what.
    """

    category: str
    confidence: float
    alternatives: list[dict[str, Any]]


class ModelLoadError(Exception):
    """The model file cannot be used; the message tells an operator what to fix."""


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
        """One vectorised call for the whole batch: per-call overhead dwarfs per-document cost."""
        if isinstance(texts, str):
            raise TypeError("predict takes a sequence of texts, not a single string")
        if not texts:
            return []
        # Our inputs are texts we validated, so scikit-learn's own checks only cost time (~20 %).
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            probabilities = self._pipeline.predict_proba(list(texts))
        ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :TOP_ALTERNATIVES]
        top = np.take_along_axis(probabilities, ranked, axis=1)
        return [
            self._prediction(indices, chances)
            for indices, chances in zip(ranked.tolist(), top.tolist(), strict=True)
        ]

    def _prediction(self, indices: list[int], chances: list[float]) -> Prediction:
        alternatives = [
            {"category": self._classes[index], "probability": chance}
            for index, chance in zip(indices, chances, strict=True)
        ]
        return Prediction(self._classes[indices[0]], chances[0], alternatives)


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
