"""Reproducible training of a document classifier, and the model card that describes it.

The same data, split and seed always give the same held-out metrics, so the numbers in a model's
card can be compared across runs and versions. The card (`TrainedModel.metadata`) holds only
plain Python values: it is stored as JSON in the registry and inside the skops artifact.
"""

from __future__ import annotations

import os
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sklearn
import skops.io as sio
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline

from docingest.model.classifier import Classifier
from docingest.model.scoring import Scorer
from docingest.model.vectorizer import WordVectorizer

# Measured with scripts/model_benchmark.py (docs/models.md): logreg is the most accurate and its
# multinomial softmax gives the better-founded confidence; its solver needs no shuffling seed.
# C=10: C=1 lost 0.3 point and was underconfident.
DEFAULT_ESTIMATOR = "logreg"

# Every estimator must have predict_proba: the service stores a confidence per document.
ESTIMATORS: Mapping[str, Callable[[int], Any]] = {
    "nb": lambda seed: MultinomialNB(),
    "logreg": lambda seed: LogisticRegression(C=10.0, max_iter=1000),
    "sgd": lambda seed: SGDClassifier(loss="log_loss", alpha=1e-5, random_state=seed),
}

DEFAULT_TEST_SIZE = 0.25
VECTORIZER_DESCRIPTION = (
    "docingest WordVectorizer: ASCII words of 3+ letters, min_df 2, sublinear TF-IDF"
)
# Single-document calls timed for the card: enough for a stable rate, short enough to not matter.
SINGLE_CALLS = 100
BATCH_RUNS = 3

Step = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Split:
    """A fixed stratified train/held-out split, shared by training and model comparison."""

    train_texts: list[str]
    test_texts: list[str]
    train_labels: list[str]
    test_labels: list[str]


@dataclass(frozen=True, slots=True)
class TrainedModel:
    pipeline: Pipeline
    metadata: dict[str, Any]


def split_corpus(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    test_size: float = DEFAULT_TEST_SIZE,
    seed: int = 42,
) -> Split:
    """Stratify so that every class is held out in proportion, even the smallest."""
    try:
        train_texts, test_texts, train_labels, test_labels = train_test_split(
            list(texts), list(labels), test_size=test_size, random_state=seed, stratify=labels
        )
    except ValueError as error:  # too few documents for a held-out example of every class
        raise ValueError(
            f"cannot hold out {test_size:g} of {len(texts)} documents with every category on "
            f"both sides: {error}"
        ) from error
    return Split(train_texts, test_texts, train_labels, test_labels)


def build_pipeline(
    estimator: str = DEFAULT_ESTIMATOR, *, seed: int = 42, vectorizer: Any = None
) -> Pipeline:
    """Raise ValueError for an unknown estimator before any work is done.

    `vectorizer` replaces docingest's WordVectorizer, for comparisons.
    """
    if estimator not in ESTIMATORS:
        supported = ", ".join(sorted(ESTIMATORS))
        raise ValueError(f"unknown estimator {estimator!r}; supported: {supported}")
    return Pipeline(
        [
            ("tfidf", WordVectorizer() if vectorizer is None else vectorizer),
            ("classifier", ESTIMATORS[estimator](seed)),
        ]
    )


def evaluate(pipeline: Pipeline, texts: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Plain Python numbers only, so the metrics persist and serialize without numpy types."""
    predicted = pipeline.predict(list(texts))
    classes = [str(label) for label in pipeline.classes_]
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    per_class = {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    }
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
    }


def measure_speed(pipeline: Pipeline, texts: Sequence[str]) -> dict[str, float]:
    """Through the service's own prediction path, the workers' scorer (its scoring form); the
    best batch run is the least disturbed."""
    labels = [str(label) for label in pipeline.classes_]
    form = Classifier(pipeline, {"version": "measuring", "labels": labels}).scoring_form()
    scorer = Scorer.from_bytes(form, source="the model measured")
    batch = list(texts)
    batch_seconds = min(_seconds(scorer.predict, batch) for _ in range(BATCH_RUNS))
    singles = batch[:SINGLE_CALLS]
    single_seconds = _seconds(lambda docs: [scorer.predict([doc]) for doc in docs], singles)
    return {
        "batched_docs_per_second": round(len(batch) / batch_seconds, 1),
        "single_docs_per_second": round(len(singles) / single_seconds, 1),
    }


def _seconds(function: Callable[[list[str]], object], texts: list[str]) -> float:
    start = time.perf_counter()
    function(texts)
    return max(time.perf_counter() - start, 1e-9)


def train(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    test_size: float = DEFAULT_TEST_SIZE,
    seed: int = 42,
    source: str = "custom",
    on_step: Step | None = None,
) -> TrainedModel:
    """Fit on a fixed split and keep the held-out metrics with the model they describe.

    `on_step` is told the name of each long step as it starts, for a progress display.
    """
    build_pipeline(estimator)  # an unknown estimator fails before any work
    split = split_corpus(texts, labels, test_size=test_size, seed=seed)
    return train_on_split(
        split, estimator=estimator, test_size=test_size, seed=seed, source=source, on_step=on_step
    )


def train_on_split(
    split: Split,
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    test_size: float = DEFAULT_TEST_SIZE,
    seed: int = 42,
    source: str = "custom",
    on_step: Step | None = None,
) -> TrainedModel:
    """`train` on a split made by the caller (`learning.py` joins the splits of several
    sources); `test_size` and `seed` are the ones it was made with, for the card."""
    step = on_step or (lambda name: None)
    pipeline = build_pipeline(estimator, seed=seed)
    labels = [*split.train_labels, *split.test_labels]
    step("fitting")
    start = time.perf_counter()
    pipeline.fit(split.train_texts, split.train_labels)
    train_seconds = time.perf_counter() - start
    step("evaluating")
    metrics = evaluate(pipeline, split.test_texts, split.test_labels)
    step("measuring speed")
    speed = measure_speed(pipeline, split.test_texts)
    now = datetime.now(UTC)
    metadata = {
        "version": f"{estimator}-{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}",
        "estimator": estimator,
        "labels": sorted(set(labels)),
        "label_counts": dict(sorted(Counter(labels).items())),
        "source": source,
        "trained_at": now.isoformat(timespec="seconds"),
        "train_seconds": round(train_seconds, 3),
        "train_size": len(split.train_texts),
        "test_size": len(split.test_texts),
        "test_fraction": test_size,
        "seed": seed,
        "metrics": metrics,
        "speed": speed,
        "sklearn_version": sklearn.__version__,
        "vectorizer": VECTORIZER_DESCRIPTION,
    }
    return TrainedModel(pipeline=pipeline, metadata=metadata)


def model_bytes(model: TrainedModel) -> bytes:
    """The skops artifact. Deflate shrinks the JSON-heavy vocabulary about twentyfold at no
    measurable load cost."""
    content = {"pipeline": model.pipeline, "metadata": model.metadata}
    artifact: bytes = sio.dumps(content, compression=zipfile.ZIP_DEFLATED)
    return artifact


def save_model(model: TrainedModel, path: Path) -> None:
    """Write beside the target and rename, so a reader never sees a half-written model."""
    artifact = model_bytes(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("wb") as file:
            file.write(artifact)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
