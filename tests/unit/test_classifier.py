from fractions import Fraction
from pathlib import Path

import pytest
import skops.io as sio

from docingest.model import training
from docingest.model.classifier import TRUSTED_TYPES, Classifier
from docingest.model.datasets import load_bbc
from docingest.model.scoring import ModelLoadError, Prediction

CLEAR_TEXTS = {
    "sports": "The striker scored twice as Liverpool beat Chelsea 2-0 in the Premier League "
    "football match, and the coach praised the players and the team's defence.",
    "entertainment": "The director's new film had its premiere in London: the actress and the "
    "cast walked the red carpet before the box office opening and the Oscars.",
    "politics": "The prime minister called a general election; Labour and the Conservatives "
    "will campaign for votes while MPs debate the government's tax plans.",
    "tech": "The firm launched a new smartphone with a faster chip and a better camera; mobile "
    "phone users can download software and apps over broadband.",
    "business": "The company's annual profits rose 20% and its shares jumped on the stock "
    "market after sales beat analysts' forecasts, the chief executive said.",
}


class Custom:
    """A type no reviewer has approved, so a model file holding one must be refused."""

    def __init__(self) -> None:
        self.payload = "anything"


@pytest.fixture(scope="module")
def trained() -> training.TrainedModel:
    return training.train(*load_bbc())


@pytest.fixture(scope="module")
def model_file(trained: training.TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("classifier") / "model.skops"
    training.save_model(trained, path)
    return path


@pytest.fixture(scope="module")
def loaded(model_file: Path) -> Classifier:
    return Classifier.load(model_file)


def test_round_trip_predicts_like_the_in_memory_pipeline(
    trained: training.TrainedModel, loaded: Classifier
) -> None:
    texts = load_bbc()[0][::10] + list(CLEAR_TEXTS.values())
    predictions = loaded.predict(texts)
    probabilities = trained.pipeline.predict_proba(texts)
    assert [p.category for p in predictions] == list(trained.pipeline.predict(texts))
    assert [p.confidence for p in predictions] == pytest.approx(probabilities.max(axis=1))
    assert loaded.metadata == trained.metadata
    assert loaded.version == trained.metadata["version"]
    assert loaded.labels == ["business", "entertainment", "politics", "sports", "tech"]


def test_clear_texts_get_their_category_in_one_batch(loaded: Classifier) -> None:
    predictions = loaded.predict(list(CLEAR_TEXTS.values()))
    assert [p.category for p in predictions] == list(CLEAR_TEXTS)
    assert all(isinstance(p, Prediction) and 0 < p.confidence <= 1 for p in predictions)
    assert all(isinstance(p.confidence, float) for p in predictions)


def test_empty_batch_gives_no_predictions(loaded: Classifier) -> None:
    assert loaded.predict([]) == []


def test_a_bare_string_is_refused(loaded: Classifier) -> None:
    with pytest.raises(TypeError, match="not a single string"):
        loaded.predict("one document")


@pytest.mark.parametrize("estimator", sorted(training.ESTIMATORS))
def test_every_estimator_needs_only_trusted_types(estimator: str, tmp_path: Path) -> None:
    path = tmp_path / f"{estimator}.skops"
    training.save_model(training.train(*load_bbc(), estimator=estimator), path)
    assert set(sio.get_untrusted_types(file=path)) <= set(TRUSTED_TYPES)
    assert Classifier.load(path).metadata["estimator"] == estimator


@pytest.mark.parametrize(
    ("payload", "type_name"),
    [(Fraction(1, 3), "fractions.Fraction"), (Custom(), "Custom")],
)
def test_untrusted_types_are_refused_and_named(
    payload: object, type_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "untrusted.skops"
    sio.dump({"pipeline": payload, "metadata": {"version": "x", "labels": []}}, path)
    with pytest.raises(ModelLoadError, match=f"untrusted types.*{type_name}"):
        Classifier.load(path)


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.skops"
    path.write_bytes(b"this is not a model")
    with pytest.raises(ModelLoadError, match="not a skops model artifact"):
        Classifier.load(path)


@pytest.mark.parametrize("content", [[1, 2], {"pipeline": 1}, {"metadata": {}}])
def test_skops_file_of_another_shape_is_refused(content: object, tmp_path: Path) -> None:
    path = tmp_path / "other.skops"
    sio.dump(content, path)
    with pytest.raises(ModelLoadError, match="not a docingest model"):
        Classifier.load(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        Classifier.load(tmp_path / "absent.skops")
