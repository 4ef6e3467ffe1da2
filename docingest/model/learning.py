"""Learning from people's labels (`docingest train db`), and whether a new model is better.

Each source of training data (the labelled documents, a data set mixed in) is split on its own,
stratified, with the same seed and fraction as any training, so a data set's held-out part is
the one its own model was measured on. The new model trains on every training part; then it and
the active model are measured on each held-out part separately: a model better on the new
labels but worse on the old categories does not pass.

The gate compares the two only where both could be right: on held-out documents of categories
the active model serves. A category new to it scores 0 there by construction, which says
nothing about the categories it does serve, so those documents are reported, never counted as a
win. A part with fewer than MIN_HELD_OUT such documents is too small to say anything (one
document moves its accuracy by more than 10 points) and is not counted either; and every
category the active model serves must be held out somewhere, or the gate cannot tell whether
the new model forgot it. When it cannot say, it does not activate.
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
    """The labelled documents, one per distinct text, split. A category labelled once cannot be
    held out and is only trained on; at least one label must be held out, or nothing would be
    measured. Copies of a text (resent documents) would land on both sides of the split and
    measure the model on what it trained on: each text counts once, with its most given label."""
    pairs = _distinct_texts(labelled_documents(engine))
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


def _distinct_texts(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """One (text, label) per text, in first-seen order; the label people gave it most often."""
    labels: dict[str, Counter[str]] = {}
    for text, label in pairs:
        labels.setdefault(text, Counter())[label] += 1
    return [(text, counted.most_common(1)[0][0]) for text, counted in labels.items()]


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


MIN_HELD_OUT = 10


def compare(new: Classifier, active: Classifier | None, parts: Sequence[Part]) -> dict[str, Any]:
    """The new and the active model on each part's held-out documents, for the card.

    Per part: `documents` held out, `compared` (those of a category the active model serves)
    and both models' scores on those. `verdict`: `better` (not lower on any counted part, or no
    model active), `worse`, or `inconclusive` with `reasons`; `better` is the verdict's boolean.
    """
    held_out: list[dict[str, Any]]
    if active is None:
        held_out = [
            {"name": part.name, "documents": len(part.split.test_texts), "compared": 0,
             "new": _scores(new, part.split.test_texts, part.split.test_labels)}
            for part in parts
        ]  # fmt: skip
        return _verdict(None, held_out, "better", [])
    served = set(active.labels)
    held_out = [_compared(new, active, part, served) for part in parts]
    counted = [part for part in held_out if part["compared"] >= MIN_HELD_OUT]
    reasons = [
        f"{part['name']}: {part['compared']} held-out documents of the active model's "
        f"categories, fewer than {MIN_HELD_OUT}; not counted"
        for part in held_out
        if 0 < part["compared"] < MIN_HELD_OUT
    ]
    seen = {label for part in parts for label in part.split.test_labels}
    unseen = sorted(served - seen)
    if unseen:
        reasons.append(
            f"no held-out document of {', '.join(unseen)}, which the active model serves: mix "
            "in the data set it was trained on (--with) or label documents of them"
        )
    if unseen or not counted:
        return _verdict(active, held_out, "inconclusive", reasons)
    worse = any(part["new"]["macro_f1"] < part["active"]["macro_f1"] for part in counted)
    return _verdict(active, held_out, "worse" if worse else "better", reasons)


def _compared(new: Classifier, active: Classifier, part: Part, served: set[str]) -> dict[str, Any]:
    """`new` and `active` on the categories the active model serves; `learned`: the new model
    alone on the others (new to the active model, reported, never compared)."""
    pairs = list(zip(part.split.test_texts, part.split.test_labels, strict=True))
    known = [pair for pair in pairs if pair[1] in served]
    unknown = [pair for pair in pairs if pair[1] not in served]
    entry: dict[str, Any] = {"name": part.name, "documents": len(pairs), "compared": len(known)}
    if known:
        entry |= {"new": _scores(new, *_unzip(known)), "active": _scores(active, *_unzip(known))}
    if unknown:
        entry["learned"] = _scores(new, *_unzip(unknown)) | {"documents": len(unknown)}
    return entry


def _unzip(pairs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    return [text for text, _ in pairs], [label for _, label in pairs]


def _verdict(
    active: Classifier | None, held_out: list[dict[str, Any]], verdict: str, reasons: list[str]
) -> dict[str, Any]:
    return {
        "active_version": active.version if active is not None else None,
        "held_out": held_out,
        "verdict": verdict,
        "better": verdict == "better",
        "reasons": reasons,
    }


def _scores(classifier: Classifier, texts: list[str], labels: list[str]) -> dict[str, float]:
    predicted = [prediction.category for prediction in classifier.predict(texts)]
    macro_f1 = f1_score(
        labels, predicted, labels=sorted(set(labels)), average="macro", zero_division=0
    )
    return {"macro_f1": float(macro_f1), "accuracy": float(accuracy_score(labels, predicted))}
