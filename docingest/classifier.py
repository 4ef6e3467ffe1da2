"""Load a trained model once per process and classify whole batches of documents in one call.

A single-document call costs about a millisecond of scikit-learn input validation, more than the
tokenizing itself, so callers should hand over every document they have at once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import sklearn
import skops.io as sio

# Types a model file may contain beyond those skops trusts out of the box (builtins, numpy, scipy
# and every scikit-learn estimator). With skops 0.16 the pipelines that training.py builds report
# none, for every supported estimator (tests/test_classifier.py checks it); a new estimator that
# reports some must list them here, one fully qualified name each, after review.
TRUSTED_TYPES: Final[tuple[str, ...]] = ()

REQUIRED_METADATA: Final[tuple[str, ...]] = ("version", "labels")


@dataclass(frozen=True, slots=True)
class Prediction:
    """The confidence is the predicted class's probability (0..1), stored with the document."""

    category: str
    confidence: float


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
        """Refuse any file holding a type we have not reviewed: loading may run its code."""
        content = _load_trusted(path)
        pipeline, metadata = _unpack(content, path)
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
        best = probabilities.argmax(axis=1)
        confidences = probabilities.max(axis=1)
        return [
            Prediction(self._classes[index], confidence)
            for index, confidence in zip(best.tolist(), confidences.tolist(), strict=True)
        ]


def _load_trusted(path: Path) -> Any:
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        found = sio.get_untrusted_types(file=path)
    except Exception as error:  # any parse failure on arbitrary bytes means "not a model"
        raise ModelLoadError(f"{path} is not a skops model file: {error!r}") from error
    untrusted = sorted(set(found) - set(TRUSTED_TYPES))
    if untrusted:
        raise ModelLoadError(f"{path} holds untrusted types, not loaded: {', '.join(untrusted)}")
    try:
        return sio.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as error:  # e.g. written by an incompatible scikit-learn version
        raise ModelLoadError(f"{path} could not be rebuilt: {error!r}") from error


def _unpack(content: Any, path: Path) -> tuple[Any, dict[str, Any]]:
    """Check the shape save_model writes, so a wrong file fails here and not on first use."""
    if not isinstance(content, dict) or not {"pipeline", "metadata"} <= content.keys():
        raise ModelLoadError(
            f"{path} is not a docingest model: expected a dict with 'pipeline' and 'metadata'"
        )
    pipeline, metadata = content["pipeline"], content["metadata"]
    if not isinstance(metadata, dict) or not set(REQUIRED_METADATA) <= metadata.keys():
        raise ModelLoadError(f"{path} metadata lacks one of: {', '.join(REQUIRED_METADATA)}")
    if not hasattr(pipeline, "predict_proba") or not hasattr(pipeline, "classes_"):
        raise ModelLoadError(f"{path} pipeline is not a fitted classifier with probabilities")
    if [str(label) for label in pipeline.classes_] != list(metadata["labels"]):
        raise ModelLoadError(f"{path} metadata labels do not match the pipeline's classes")
    return pipeline, metadata


_cache: dict[Path, Classifier] = {}
_cache_lock = threading.Lock()


def get_classifier(path: Path) -> Classifier:
    """Load once per process and path: a load takes ~0.3 s, a batch prediction milliseconds.

    The lock makes concurrent first calls from a worker's threads wait for one load, not race.
    """
    key = path.resolve()
    with _cache_lock:
        if key not in _cache:
            _cache[key] = Classifier.load(key)
        return _cache[key]
