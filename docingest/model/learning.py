"""Learning from people's labels (`docingest train db`), and whether a new model is better.

Each source of training data (the labelled documents, a data set mixed in) is split on its own,
stratified, with the same seed and fraction as any training, so a data set's held-out part is
the one its own model was measured on. The new model trains on every training part; then it and
the active model are measured on each held-out part separately: a model better on the new
labels but worse on the old categories does not pass.

The comparison's macro-F1 averages over the categories of the held-out documents: a model that
does not know a category there scores 0 on it, and categories it predicts that are not there
lower the precision of those that are, without entering the mean with a 0 of their own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sklearn.metrics import accuracy_score, f1_score
from sqlalchemy import Engine

from docingest.labels.repository import labelled_documents
from docingest.model.classifier import Classifier
from docingest.model.datasets import Dataset
from docingest.model.training import Split, Step, TrainedModel, split_corpus, train_on_split

LABELS = "labels"


@dataclass(frozen=True, slots=True)
class Part:
    """One source of training data, split on its own and measured on its own."""

    name: str
    split: Split


def labelled_part(engine: Engine, *, test_size: float, seed: int) -> Part:
    """The labelled documents, split. A category labelled once cannot be held out and is only
    trained on; at least one label must be held out, or nothing would be measured."""
    pairs = labelled_documents(engine)
    counts = Counter(label for _, label in pairs)
    once = [pair for pair in pairs if counts[pair[1]] < 2]
    more = [pair for pair in pairs if counts[pair[1]] >= 2]
    if not more:
        raise ValueError(
            f"{len(pairs)} labelled documents: label at least 2 documents of a category to hold "
            "one out"
        )
    split = split_corpus(
        [text for text, _ in more], [label for _, label in more], test_size=test_size, seed=seed
    )
    return Part(
        LABELS,
        Split(
            [*split.train_texts, *(text for text, _ in once)],
            split.test_texts,
            [*split.train_labels, *(label for _, label in once)],
            split.test_labels,
        ),
    )


def dataset_part(dataset: Dataset, *, test_size: float, seed: int) -> Part:
    split = split_corpus(dataset.texts, dataset.labels, test_size=test_size, seed=seed)
    return Part(dataset.name, split)


def train_parts(
    parts: Sequence[Part],
    *,
    estimator: str,
    test_size: float,
    seed: int,
    on_step: Step | None = None,
) -> TrainedModel:
    """One model on every part's training side; the card's metrics on every held-out side."""
    joined = Split(
        [text for part in parts for text in part.split.train_texts],
        [text for part in parts for text in part.split.test_texts],
        [label for part in parts for label in part.split.train_labels],
        [label for part in parts for label in part.split.test_labels],
    )
    if len(set(joined.train_labels)) < 2:
        raise ValueError(
            "the training data holds one category only: label documents of another category, "
            "or mix in a data set (--with bbc)"
        )
    return train_on_split(
        joined,
        estimator=estimator,
        test_size=test_size,
        seed=seed,
        source="+".join(part.name for part in parts),
        on_step=on_step,
    )


def compare(new: Classifier, active: Classifier | None, parts: Sequence[Part]) -> dict[str, Any]:
    """The new and the active model on each part's held-out documents, for the card.

    `better`: the new model's macro-F1 is not lower on any part (true when none is active).
    """
    held_out: list[dict[str, Any]] = []
    for part in parts:
        texts, labels = part.split.test_texts, part.split.test_labels
        scores = {"new": _scores(new, texts, labels)}
        if active is not None:
            scores["active"] = _scores(active, texts, labels)
        held_out.append({"name": part.name, "documents": len(texts), **scores})
    better = all(
        scores["new"]["macro_f1"] >= scores["active"]["macro_f1"]
        for scores in held_out
        if "active" in scores
    )
    return {
        "active_version": active.version if active is not None else None,
        "held_out": held_out,
        "better": better,
    }


def _scores(classifier: Classifier, texts: list[str], labels: list[str]) -> dict[str, float]:
    predicted = [prediction.category for prediction in classifier.predict(texts)]
    macro_f1 = f1_score(
        labels, predicted, labels=sorted(set(labels)), average="macro", zero_division=0
    )
    return {"macro_f1": float(macro_f1), "accuracy": float(accuracy_score(labels, predicted))}
