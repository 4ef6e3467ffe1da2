"""Classifying with numpy alone: what a worker needs of a model, read without scikit-learn, SciPy
or skops (a worker process that imported them held 270-330 MB: docs/models.md).

The registry keeps, beside each model's skops artifact, its *scoring form* (`Scorer.to_bytes`,
made at registration by `Classifier.scoring_form`, where scikit-learn is): an `.npz` of plain
arrays, the vocabulary in index order, its IDF, one row of linear weights per class with the
intercepts (or class log priors), the labels, how decision values become probabilities, and the
card. `np.load(allow_pickle=False)` reads it without running anything it holds. The features are
`features.tfidf`, the very code WordVectorizer runs; the linear part and the probabilities are
computed as scikit-learn computes them, in float64, so they agree with the pipeline's to 1e-9
(tests/unit/test_scoring.py).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from docingest.model.features import Weights, tfidf

# How many labels, best first, each document keeps with their probabilities.
TOP_ALTERNATIVES: Final = 3

# The layout of a scoring form; a worker refuses another (one written by a newer docingest),
# which activation's check by the workers (`environment`) turns into a refused activation.
FORMAT: Final = 1

REQUIRED_METADATA: Final[tuple[str, ...]] = ("version", "labels")

Probabilities = npt.NDArray[np.float64]


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
    """The model cannot be used; the message tells an operator what to fix."""


class Predictor(Protocol):
    """What a worker classifies with: a `Scorer`; a `Classifier` (scikit-learn's pipeline) gives
    the same predictions where scikit-learn is loaded anyway (training, comparing)."""

    version: str
    labels: list[str]
    metadata: dict[str, Any]

    def predict(self, texts: Sequence[str]) -> list[Prediction]: ...


def predict_with(
    probabilities: Callable[[list[str]], Probabilities],
    classes: Sequence[str],
    texts: Sequence[str],
) -> list[Prediction]:
    """One vectorised call for the whole batch: per-call overhead dwarfs per-document cost."""
    if isinstance(texts, str):
        raise TypeError("predict takes a sequence of texts, not a single string")
    if not texts:
        return []
    chances = probabilities(list(texts))
    ranked = np.argsort(-chances, axis=1, kind="stable")[:, :TOP_ALTERNATIVES]
    top = np.take_along_axis(chances, ranked, axis=1)
    return [
        _prediction(classes, indices, best)
        for indices, best in zip(ranked.tolist(), top.tolist(), strict=True)
    ]


def _prediction(classes: Sequence[str], indices: list[int], chances: list[float]) -> Prediction:
    alternatives = [
        {"category": classes[index], "probability": chance}
        for index, chance in zip(indices, chances, strict=True)
    ]
    return Prediction(classes[indices[0]], chances[0], alternatives)


class Link(StrEnum):
    """How decision values (features @ weights.T + intercepts) become probabilities, as the
    estimator's `predict_proba` makes them."""

    # LogisticRegression with 3+ classes; MultinomialNB, whose probabilities are its joint log
    # likelihoods normalized, which is a softmax of them.
    SOFTMAX = "softmax"
    # SGDClassifier(loss="log_loss") with 3+ classes: each class's sigmoid, then normalized
    # (scikit-learn's `_predict_proba_lr`).
    ONE_VS_REST = "one-vs-rest"
    # One row of weights for two classes (LogisticRegression, SGDClassifier): the second
    # class's sigmoid.
    SIGMOID = "sigmoid"


def _sigmoid(values: Probabilities) -> Probabilities:
    """scipy.special.expit's formula: 1 / (1 + exp(-x)), 0 where exp overflows."""
    with np.errstate(over="ignore"):
        result: Probabilities = 1.0 / (1.0 + np.exp(-values))
    return result


def _softmax(scores: Probabilities) -> Probabilities:
    """scikit-learn's `utils.extmath.softmax`, step for step."""
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    return scores


def _one_vs_rest(scores: Probabilities) -> Probabilities:
    """scikit-learn's `_predict_proba_lr` for several classes: a row of zeros (every sigmoid
    underflowed) becomes uniform."""
    chances = _sigmoid(scores)
    sums = chances.sum(axis=1)
    zero = sums == 0
    chances[zero, :] = 1
    sums[zero] = chances.shape[1]
    chances /= sums[:, None]
    return chances


def _binary(scores: Probabilities) -> Probabilities:
    second = _sigmoid(scores[:, 0])
    return np.stack([1 - second, second], axis=1)


LINKS: Final[Mapping[Link, Callable[[Probabilities], Probabilities]]] = {
    Link.SOFTMAX: _softmax,
    Link.ONE_VS_REST: _one_vs_rest,
    Link.SIGMOID: _binary,
}

FIELDS: Final = ("format", "metadata", "link", "labels", "terms", "idf", "weights", "intercepts")


class Scorer:
    """A model's scoring form, ready to classify; threads may share it, prediction is read-only.

    Refuses (ValueError) arrays that do not fit together: a wrong form fails when loaded, not on
    first use.
    """

    def __init__(
        self,
        *,
        metadata: dict[str, Any],
        labels: npt.NDArray[np.str_],
        terms: npt.NDArray[np.bytes_],
        idf: npt.NDArray[np.float32],
        weights: npt.NDArray[np.float64],
        intercepts: npt.NDArray[np.float64],
        link: Link,
    ) -> None:
        self._arrays = {
            "labels": labels,
            "terms": terms,
            "idf": idf,
            "weights": weights,
            "intercepts": intercepts,
        }
        _check(metadata, self._arrays, link)
        self.metadata = metadata
        self.version: str = str(metadata["version"])
        self.labels: list[str] = list(metadata["labels"])
        self._classes: list[str] = labels.tolist()
        self._link = link
        self._vocabulary: dict[bytes, int] = {term: i for i, term in enumerate(terms.tolist())}
        self._idf = idf
        self._weights = np.ascontiguousarray(weights)
        self._intercepts = intercepts

    @classmethod
    def from_bytes(cls, form: bytes, *, source: str) -> Scorer:
        """Read with `allow_pickle=False`: an array that would need unpickling is refused, so
        loading runs no code. `source` names the model in error messages."""
        try:
            with np.load(io.BytesIO(form), allow_pickle=False) as stored:
                fields = {name: stored[name] for name in stored.files}
        except Exception as error:  # any parse failure on arbitrary bytes means "not a form"
            raise ModelLoadError(f"{source} scoring form cannot be read: {error!r}") from error
        if missing := [name for name in FIELDS if name not in fields]:
            raise ModelLoadError(f"{source} scoring form lacks: {', '.join(missing)}")
        form_format = fields["format"]
        if form_format.shape != () or form_format.dtype.kind != "i" or form_format != FORMAT:
            raise ModelLoadError(
                f"{source} scoring form has format {form_format}, this docingest reads format "
                f"{FORMAT}"
            )
        try:
            return cls(
                metadata=json.loads(str(fields["metadata"])),
                labels=fields["labels"],
                terms=fields["terms"],
                idf=fields["idf"],
                weights=fields["weights"],
                intercepts=fields["intercepts"],
                link=Link(str(fields["link"])),
            )
        except ValueError as error:
            raise ModelLoadError(f"{source} scoring form is not usable: {error}") from error

    def to_bytes(self) -> bytes:
        """The `.npz` that `from_bytes` reads; compressed (the vocabulary shrinks tenfold)."""
        fields: dict[str, Any] = {
            "format": np.int64(FORMAT),
            "metadata": np.str_(json.dumps(self.metadata)),
            "link": np.str_(self._link.value),
            **self._arrays,
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **fields)
        return buffer.getvalue()

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        return predict_with(self.probabilities, self._classes, texts)

    def probabilities(self, texts: Sequence[str]) -> Probabilities:
        """One row per text, one column per label in `labels` order."""
        return self._probabilities_of(self._features(texts))

    def _features(self, texts: Sequence[str]) -> Weights:
        return tfidf(texts, self._vocabulary, self._idf)

    def _probabilities_of(self, features: Weights) -> Probabilities:
        """features @ weights.T + intercepts in float64, as scikit-learn computes it for float64
        features (its sparse product adds a document's terms one by one, `reduceat` in pairs:
        they differ by rounding, ~1e-15), then made probabilities as the estimator makes them."""
        starts, ends = features.indptr[:-1], features.indptr[1:]
        # Per class, each entry's weight times its term's (`take`: a third of indexing's time),
        # summed per document; a document without entries keeps its 0 (reduceat would give it
        # its start's entry), the others' entries run from their start to the next one's.
        products = self._weights.take(features.columns, axis=1)
        products *= features.data
        sums = np.zeros((len(products), len(starts)))
        filled = starts < ends
        sums[:, filled] = np.add.reduceat(products, starts[filled], axis=1)
        return LINKS[self._link](sums.T + self._intercepts)


# Each array of a scoring form: its dtype (or dtype kind) and its number of dimensions.
_LAYOUT: Final[Mapping[str, tuple[str | np.dtype[Any], int]]] = {
    "labels": ("U", 1),
    "terms": ("S", 1),
    "idf": (np.dtype(np.float32), 1),
    "weights": (np.dtype(np.float64), 2),
    "intercepts": (np.dtype(np.float64), 1),
}


def _check(metadata: dict[str, Any], arrays: Mapping[str, Any], link: Link) -> None:
    """ValueError naming the first array that does not fit the others."""
    if not isinstance(metadata, dict) or not set(REQUIRED_METADATA) <= metadata.keys():
        raise ValueError(f"metadata lacks one of: {', '.join(REQUIRED_METADATA)}")
    for name, (kind, dimensions) in _LAYOUT.items():
        array = arrays[name]
        if not isinstance(array, np.ndarray) or array.ndim != dimensions:
            raise ValueError(f"{name} is not an array of {dimensions} dimension(s)")
        if (array.dtype.kind if isinstance(kind, str) else array.dtype) != kind:
            raise ValueError(f"{name} holds {array.dtype}, not {kind}")
    labels, terms, idf, weights, intercepts = (arrays[name] for name in _LAYOUT)
    rows = 1 if link is Link.SIGMOID else len(labels)
    if link is Link.SIGMOID and len(labels) != 2:
        raise ValueError(f"a sigmoid separates 2 labels, not {len(labels)}")
    if len(labels) < 2 or weights.shape != (rows, len(terms)) or idf.shape != terms.shape:
        raise ValueError(
            f"{len(labels)} labels, {len(terms)} terms and {idf.shape[0]} IDF values do not fit "
            f"weights of shape {weights.shape}"
        )
    if intercepts.shape != (rows,):
        raise ValueError(f"{rows} rows of weights but {intercepts.shape[0]} intercepts")
    if labels.tolist() != list(metadata["labels"]):
        raise ValueError("metadata labels do not match the labels of the weights")
