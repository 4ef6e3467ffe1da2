"""`docingest train db`: training on people's labels, mixed with a data set, compared with the
active model on the same held-out documents, activated only when not worse on any."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from docingest.cli import app
from docingest.db import make_engine
from docingest.documents.store import store_batch
from docingest.labels.service import put_label
from docingest.model import learning, registry, training
from docingest.model.classifier import Classifier
from docingest.model.datasets import load_bbc
from docingest.schemas import LabelIn, utcnow
from docingest.settings import get_settings
from tests.cooking import cooking_texts
from tests.helpers import UNAMBIGUOUS, migrated_sqlite

runner = CliRunner()


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_path: Path) -> Iterator[Engine]:
    """DATABASE_URL for the commands: a SQLite database whose active model is the default."""
    url = migrated_sqlite(tmp_path)
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    engine = make_engine(url)
    registry.add(engine, model_path.read_bytes(), activate=True)
    yield engine
    engine.dispose()
    get_settings.cache_clear()


def labelled(engine: Engine, classifier: Classifier, labels: dict[str, str]) -> None:
    """Store each text as a worker would, classified, then label it."""
    now = utcnow()
    texts = list(labels)
    rows = [
        {
            "id": uuid.uuid4(),
            "content": text,
            "category": prediction.category,
            "confidence": prediction.confidence,
            "model_version": classifier.version,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for text, prediction in zip(texts, classifier.predict(texts), strict=True)
    ]
    store_batch(engine, rows)
    for row in rows:
        put_label(engine, row["id"], LabelIn(category=labels[row["content"]]), by="test")


def news(count: int) -> dict[str, str]:
    """BBC articles from the training side of the default split, with their categories."""
    texts, categories = load_bbc()
    split = training.split_corpus(texts, categories)
    chosen = random.Random(3).sample(range(len(split.train_texts)), count)
    return {split.train_texts[i]: split.train_labels[i] for i in chosen}


def train(*arguments: str) -> str:
    result = runner.invoke(app, ["train", *arguments])
    assert result.exit_code == 0, result.output
    return result.output


def test_labels_are_split_on_their_own_and_a_single_example_only_trains(
    engine: Engine, classifier: Classifier
) -> None:
    labelled(engine, classifier, dict.fromkeys(cooking_texts(8), "cooking") | {"odd one": "odd"})
    part = learning.labelled_part(engine, test_size=0.25, seed=42)
    assert part.name == "labels"
    assert (len(part.split.train_texts), part.split.test_labels) == (7, ["cooking"] * 2)
    assert "odd" in part.split.train_labels


def test_too_few_labels_are_refused_with_a_reason(engine: Engine, classifier: Classifier) -> None:
    labelled(engine, classifier, {"one": "a", "two": "b"})
    result = runner.invoke(app, ["train", "db"])
    assert result.exit_code == 2
    assert "label at least 2 documents of a category" in result.output
    labelled(engine, classifier, dict.fromkeys(cooking_texts(8), "cooking"))
    result = runner.invoke(app, ["train", "db"])  # cooking and two single labels: 3 categories
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["train", "bbc", "--with", "bbc"]).exit_code == 2


def test_a_new_category_is_never_a_win_and_the_old_ones_must_be_held_out(
    classifier: Classifier,
) -> None:
    """Held-out documents of a category the active model does not serve are reported, not
    compared; without held-out documents of the categories it serves the gate cannot tell."""
    part = learning.Part("labels", training.Split([], cooking_texts(12), [], ["cooking"] * 12))
    comparison = learning.compare(classifier, classifier, [part])
    [held_out] = comparison["held_out"]
    assert (held_out["documents"], held_out["compared"]) == (12, 0)
    assert "active" not in held_out
    assert (comparison["verdict"], comparison["better"]) == ("inconclusive", False)
    assert "no held-out document of business, entertainment" in comparison["reasons"][0]
    alone = learning.compare(classifier, None, [part])
    assert (alone["active_version"], alone["verdict"], alone["better"]) == (None, "better", True)


def test_a_held_out_part_too_small_to_say_anything_is_not_counted(classifier: Classifier) -> None:
    chosen = news(learning.MIN_HELD_OUT - 1)
    part = learning.Part("labels", training.Split([], list(chosen), [], list(chosen.values())))
    comparison = learning.compare(classifier, classifier, [part])
    assert comparison["verdict"] == "inconclusive"
    assert f"labels: {len(chosen)} held-out documents of the active model's categories, fewer " \
        f"than {learning.MIN_HELD_OUT}; not counted" in comparison["reasons"]  # fmt: skip


def test_six_labels_without_a_data_set_never_replace_the_news_model(
    engine: Engine, classifier: Classifier
) -> None:
    """The new user's path: five labels of a new category, one of another, no --with."""
    sports = next(text for text, label in news(40).items() if label == "sports")
    labelled(engine, classifier, dict.fromkeys(cooking_texts(5), "cooking") | {sports: "sports"})
    printed = train("db", "--activate-if-better")
    assert registry.active_version(engine) == classifier.version
    assert "cannot tell" in printed
    assert "registered (not active)" in printed.replace("\n", "")
    politics = UNAMBIGUOUS["politics"]
    active = registry.load(engine, registry.active_version(engine) or "")
    assert active.predict([politics])[0].category == "politics"


def test_copies_of_a_labelled_text_count_once(engine: Engine, classifier: Classifier) -> None:
    texts = cooking_texts(8)
    labelled(engine, classifier, dict.fromkeys(texts, "cooking"))
    labelled(engine, classifier, dict.fromkeys(texts[:4], "cooking"))  # resent and labelled again
    part = learning.labelled_part(engine, test_size=0.25, seed=42)
    assert sorted(part.split.train_texts + part.split.test_texts) == sorted(texts)


def test_train_db_with_bbc_learns_a_new_category_and_activates_if_better(
    engine: Engine, classifier: Classifier
) -> None:
    labelled(engine, classifier, dict.fromkeys(cooking_texts(40), "cooking") | news(10))
    printed = train("db", "--with", "bbc", "--activate-if-better")

    active = registry.card(engine)
    assert active["version"] != classifier.version
    assert "cooking" in active["labels"]
    assert active["source"] == "labels+bbc"
    comparison = active["comparison"]
    assert comparison["active_version"] == classifier.version
    assert comparison["better"]
    labels, bbc = comparison["held_out"]
    assert (labels["name"], bbc["name"], bbc["documents"]) == ("labels", "bbc", 557)
    assert labels["compared"] < learning.MIN_HELD_OUT < labels["documents"]  # cooking: not compared
    assert bbc["new"]["macro_f1"] >= bbc["active"]["macro_f1"]
    assert "not worse on any" in printed

    shown = runner.invoke(app, ["model", "show"])
    assert shown.exit_code == 0, shown.output
    assert f"compared with {classifier.version}" in shown.output.replace("\n", "")
    assert "│ bbc      │       557 │" in shown.output


def test_a_model_worse_on_the_old_categories_is_not_activated(
    engine: Engine, classifier: Classifier
) -> None:
    """The article's MultinomialNB is less accurate on BBC News than the active logreg."""
    labelled(engine, classifier, dict.fromkeys(cooking_texts(40), "cooking"))
    printed = train("db", "--with", "bbc", "--estimator", "nb", "--activate-if-better")
    assert registry.active_version(engine) == classifier.version
    trained = registry.list_models(engine)[0].card["comparison"]
    assert not trained["better"]
    bbc = trained["held_out"][1]
    assert bbc["new"]["macro_f1"] < bbc["active"]["macro_f1"]
    assert "worse on some" in printed
    assert "registered (not active)" in printed.replace("\n", "")
