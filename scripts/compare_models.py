"""Measure each estimator and vectorizer setting on the BBC News corpus, to choose the default.

Run: .venv/bin/python scripts/compare_models.py [--splits 5] [--repeats 10]

Accuracy on one 445-document held-out set moves in steps of 0.22 points, so the mean and minimum
over several stratified splits are shown too. Speeds are the best of several runs: on a shared
machine the best run is the one least disturbed by neighbours.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from docingest import training
from docingest.classifier import Classifier

DEFAULT_VECTORIZER = r"[a-z]{3,} sublinear f32 min_df=2"
FAST = {"sublinear_tf": True, "dtype": np.float32, "min_df": 2}

VECTORIZERS: Mapping[str, Mapping[str, Any]] = {
    "sklearn defaults": {},
    r"\b\w\w+\b sublinear f32 min_df=2": FAST,
    r"[a-z]{2,} sublinear f32 min_df=2": {**FAST, "token_pattern": r"[a-z]{2,}"},
    DEFAULT_VECTORIZER: training.VECTORIZER_PARAMS,
    r"[a-z]{3,} sublinear f32": {**training.VECTORIZER_PARAMS, "min_df": 1},
    r"[a-z]{4,} sublinear f32 min_df=2": {**FAST, "token_pattern": r"[a-z]{4,}"},
    "1-2 grams sublinear f32 min_df=2": {**FAST, "ngram_range": (1, 2)},
}

SINGLE_CALLS = 100
HEADINGS = (
    "estimator",
    "vectorizer",
    "features",
    "acc",
    "macro-F1",
    "mean acc",
    "min acc",
    "fit s",
    "batch docs/s",
    f"single docs/s ({SINGLE_CALLS} calls)",
)


@dataclass(slots=True)
class Row:
    estimator: str
    vectorizer: str
    classifier: Classifier
    features: int
    accuracy: float
    macro_f1: float
    mean_accuracy: float
    min_accuracy: float
    fit_seconds: float
    batch_seconds: float = float("inf")
    single_seconds: float = float("inf")


def split_accuracies(
    texts: list[str], labels: list[str], estimator: str, params: Mapping[str, Any], splits: int
) -> list[float]:
    accuracies = []
    for seed in range(42, 42 + splits):
        split = training.split_corpus(texts, labels, seed=seed)
        pipeline = training.build_pipeline(estimator, seed=seed, vectorizer_params=params)
        pipeline.fit(split.train_texts, split.train_labels)
        metrics = training.evaluate(pipeline, split.test_texts, split.test_labels)
        accuracies.append(metrics["accuracy"])
    return accuracies


def fit_and_score(
    texts: list[str], labels: list[str], estimator: str, vectorizer: str, splits: int
) -> Row:
    params = VECTORIZERS[vectorizer]
    split = training.split_corpus(texts, labels)
    pipeline = training.build_pipeline(estimator, vectorizer_params=params)
    start = time.perf_counter()
    pipeline.fit(split.train_texts, split.train_labels)
    fit_seconds = time.perf_counter() - start
    metrics = training.evaluate(pipeline, split.test_texts, split.test_labels)
    accuracies = split_accuracies(texts, labels, estimator, params, splits)
    return Row(
        estimator=estimator,
        vectorizer=vectorizer,
        classifier=Classifier(pipeline, {"version": vectorizer, "labels": sorted(set(labels))}),
        features=len(pipeline.named_steps["tfidf"].vocabulary_),
        accuracy=metrics["accuracy"],
        macro_f1=metrics["macro_f1"],
        mean_accuracy=statistics.fmean(accuracies),
        min_accuracy=min(accuracies),
        fit_seconds=fit_seconds,
    )


def batch_seconds(classifier: Classifier, texts: list[str]) -> float:
    start = time.perf_counter()
    classifier.predict(texts)
    return time.perf_counter() - start


def single_seconds(classifier: Classifier, texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        classifier.predict([text])
    return time.perf_counter() - start


def time_predictions(rows: list[Row], held_out: list[str], repeats: int) -> None:
    """Round-robin over the candidates so that a noisy moment slows one run of each, not one row."""
    singles = held_out[:SINGLE_CALLS]
    for _ in range(repeats):
        for row in rows:
            row.batch_seconds = min(row.batch_seconds, batch_seconds(row.classifier, held_out))
            row.single_seconds = min(row.single_seconds, single_seconds(row.classifier, singles))


def render(rows: list[Row], held_out: int, splits: int) -> Table:
    table = Table(title=f"BBC News, {held_out} held-out documents (seed 42); * = default")
    for heading in HEADINGS:
        table.add_column(f"{heading} {splits} splits" if heading == "mean acc" else heading)
    for row in rows:
        chosen = (row.estimator, row.vectorizer) == (training.DEFAULT_ESTIMATOR, DEFAULT_VECTORIZER)
        table.add_row(
            f"{'*' if chosen else ''}{row.estimator}",
            escape(row.vectorizer),
            str(row.features),
            f"{row.accuracy:.4f}",
            f"{row.macro_f1:.4f}",
            f"{row.mean_accuracy:.4f}",
            f"{row.min_accuracy:.4f}",
            f"{row.fit_seconds:.2f}",
            f"{held_out / row.batch_seconds:,.0f}",
            f"{SINGLE_CALLS / row.single_seconds:,.0f}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5, help="splits for the mean accuracy")
    parser.add_argument("--repeats", type=int, default=10, help="timing runs; the best counts")
    args = parser.parse_args()
    texts, labels = training.load_bbc()
    console = Console(width=200)
    rows = []
    with console.status("fitting") as status:
        for vectorizer in VECTORIZERS:
            for estimator in training.ESTIMATORS:
                status.update(escape(f"fitting {estimator} with {vectorizer}"))
                rows.append(fit_and_score(texts, labels, estimator, vectorizer, args.splits))
        status.update("timing predictions")
        held_out = training.split_corpus(texts, labels).test_texts
        time_predictions(rows, held_out, args.repeats)
    console.print(render(rows, len(held_out), args.splits))


if __name__ == "__main__":
    main()
