"""Compare docingest's vectorizer with scikit-learn's default `TfidfVectorizer`, per estimator.

Run: .venv/bin/python scripts/model_benchmark.py [--repeats 15] [--test-size 0.25]

BBC News, one stratified split (seed 42). Both pipelines share the estimator and predict through
the service's own path (`Classifier.predict`). Timings are the best of several runs, taken
round-robin so that a noisy moment on a shared machine slows one run of each, not one row.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from sklearn.feature_extraction.text import TfidfVectorizer

from docingest.model import training
from docingest.model.classifier import Classifier
from docingest.model.datasets import load_dataset

SINGLE_CALLS = 100
VECTORIZERS = ("scikit-learn TfidfVectorizer()", "docingest WordVectorizer")


@dataclass(slots=True)
class Row:
    estimator: str
    vectorizer: str
    classifier: Classifier
    accuracy: float
    macro_f1: float
    fit_seconds: float
    batch_seconds: float = float("inf")
    single_seconds: float = float("inf")


def fit(split: training.Split, estimator: str, vectorizer: str) -> Row:
    replacement = TfidfVectorizer() if vectorizer == VECTORIZERS[0] else None
    pipeline = training.build_pipeline(estimator, vectorizer=replacement)
    start = time.perf_counter()
    pipeline.fit(split.train_texts, split.train_labels)
    fit_seconds = time.perf_counter() - start
    metrics = training.evaluate(pipeline, split.test_texts, split.test_labels)
    metadata = {"version": vectorizer, "labels": list(pipeline.classes_)}
    return Row(
        estimator,
        vectorizer,
        Classifier(pipeline, metadata),
        metrics["accuracy"],
        metrics["macro_f1"],
        fit_seconds,
    )


def seconds(classifier: Classifier, batches: list[list[str]]) -> float:
    start = time.perf_counter()
    for batch in batches:
        classifier.predict(batch)
    return time.perf_counter() - start


def time_predictions(rows: list[Row], held_out: list[str], repeats: int) -> None:
    singles = [[text] for text in held_out[:SINGLE_CALLS]]
    for _ in range(repeats):
        for row in rows:
            row.batch_seconds = min(row.batch_seconds, seconds(row.classifier, [held_out]))
            row.single_seconds = min(row.single_seconds, seconds(row.classifier, singles))


def render(rows: list[Row], held_out: int) -> Table:
    table = Table(title=f"BBC News, {held_out} held-out documents (seed 42); * = default")
    headings = ("estimator", "vectorizer", "accuracy", "macro-F1", "fit s", "batched docs/s")
    for heading in (*headings, f"single docs/s ({SINGLE_CALLS} calls)", "batched speed ratio"):
        table.add_column(heading, justify="left" if heading in headings[:2] else "right")
    baseline = {
        row.estimator: row.batch_seconds for row in rows if row.vectorizer == VECTORIZERS[0]
    }
    for row in rows:
        chosen = row.estimator == training.DEFAULT_ESTIMATOR and row.vectorizer == VECTORIZERS[1]
        table.add_row(
            f"{'*' if chosen else ''}{row.estimator}",
            row.vectorizer,
            f"{row.accuracy:.4f}",
            f"{row.macro_f1:.4f}",
            f"{row.fit_seconds:.2f}",
            f"{held_out / row.batch_seconds:,.0f}",
            f"{SINGLE_CALLS / row.single_seconds:,.0f}",
            f"{baseline[row.estimator] / row.batch_seconds:.2f}x",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timing runs; the best counts")
    parser.add_argument("--test-size", type=float, default=training.DEFAULT_TEST_SIZE)
    args = parser.parse_args()
    bbc = load_dataset("bbc")
    split = training.split_corpus(bbc.texts, bbc.labels, test_size=args.test_size)
    console = Console(width=160)
    rows = []
    with console.status("fitting") as status:
        for estimator in training.ESTIMATORS:
            for vectorizer in VECTORIZERS:
                status.update(f"fitting {estimator} with {vectorizer}")
                rows.append(fit(split, estimator, vectorizer))
        status.update("timing predictions")
        time_predictions(rows, split.test_texts, args.repeats)
    console.print(render(rows, len(split.test_texts)))


if __name__ == "__main__":
    main()
