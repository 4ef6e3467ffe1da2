from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from docingest import training

CLASS_SIZES = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}

Corpus = tuple[list[str], list[str]]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return training.load_bbc()


@pytest.fixture(scope="module")
def model(corpus: Corpus) -> training.TrainedModel:
    return training.train(*corpus)


def test_load_bbc_reads_every_document_with_its_folder_label(corpus: Corpus) -> None:
    texts, labels = corpus
    assert len(texts) == len(labels) == 2225
    assert Counter(labels) == CLASS_SIZES
    assert all(text.strip() for text in texts)


def test_load_bbc_decodes_every_file_without_losing_characters(corpus: Corpus) -> None:
    texts, _ = corpus
    assert not any("\ufffd" in text for text in texts)


def test_load_bbc_order_is_deterministic(corpus: Corpus) -> None:
    texts, labels = corpus
    assert labels == sorted(labels)
    assert training.load_bbc() == (texts, labels)


def test_default_model_reaches_the_target_accuracy(model: training.TrainedModel) -> None:
    metrics = model.metadata["metrics"]
    assert metrics["accuracy"] >= 0.97
    assert metrics["macro_f1"] >= 0.97
    assert set(metrics["per_class"]) == set(CLASS_SIZES)
    for scores in metrics["per_class"].values():
        assert 0.9 <= scores["precision"] <= 1
        assert 0.9 <= scores["recall"] <= 1
    assert sum(s["support"] for s in metrics["per_class"].values()) == model.metadata["test_size"]


def test_metadata_describes_the_run(model: training.TrainedModel) -> None:
    metadata = model.metadata
    assert metadata["estimator"] == training.DEFAULT_ESTIMATOR
    assert metadata["version"].startswith(f"{training.DEFAULT_ESTIMATOR}-")
    assert metadata["labels"] == sorted(CLASS_SIZES)
    assert (metadata["train_size"], metadata["test_size"]) == (1780, 445)
    assert metadata["seed"] == 42
    assert datetime.fromisoformat(metadata["trained_at"]).tzinfo == UTC
    assert metadata["sklearn_version"]


def test_same_seed_gives_identical_metrics_and_a_new_version(
    corpus: Corpus, model: training.TrainedModel
) -> None:
    again = training.train(*corpus)
    assert again.metadata["metrics"] == model.metadata["metrics"]
    assert again.metadata["version"] != model.metadata["version"]


@pytest.mark.parametrize("estimator", sorted(training.ESTIMATORS))
def test_each_estimator_trains_and_gives_probabilities(corpus: Corpus, estimator: str) -> None:
    trained = training.train(*corpus, estimator=estimator)
    assert trained.metadata["estimator"] == estimator
    assert trained.metadata["metrics"]["accuracy"] >= 0.95
    probabilities = trained.pipeline.predict_proba(corpus[0][:3])
    assert probabilities.sum(axis=1) == pytest.approx([1, 1, 1], abs=1e-5)


def test_unknown_estimator_raises_value_error(corpus: Corpus) -> None:
    with pytest.raises(ValueError, match="unknown estimator 'magic'; supported: logreg, nb, sgd"):
        training.train(*corpus, estimator="magic")


def test_save_model_creates_folders_and_replaces_without_leftovers(
    model: training.TrainedModel, tmp_path: Path
) -> None:
    path = tmp_path / "models" / "nested" / "bbc.skops"
    training.save_model(model, path)
    first_size = path.stat().st_size
    training.save_model(model, path)
    assert [child.name for child in path.parent.iterdir()] == ["bbc.skops"]
    assert path.stat().st_size == pytest.approx(first_size, rel=0.01)
