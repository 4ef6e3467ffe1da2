"""The numpy scorer workers classify with (docingest/model/scoring.py), held to the scikit-learn
pipeline its scoring form is made from, and the forms it refuses to load."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

from docingest.model import training
from docingest.model.classifier import Classifier
from docingest.model.datasets import load_bbc
from docingest.model.scoring import FORMAT, ModelLoadError, Scorer

# A two-category model has one row of weights (a sigmoid) for the linear estimators.
TWO = ("business", "tech")


@pytest.fixture(scope="module")
def split() -> training.Split:
    return training.split_corpus(*load_bbc())


def _fitted(split: training.Split, estimator: str, categories: tuple[str, ...] | None) -> Any:
    kept = [
        (text, label)
        for text, label in zip(split.train_texts, split.train_labels, strict=True)
        if categories is None or label in categories
    ]
    pipeline = training.build_pipeline(estimator)
    return pipeline.fit([text for text, _ in kept], [label for _, label in kept])


def _classifier(pipeline: Any) -> Classifier:
    labels = [str(label) for label in pipeline.classes_]
    return Classifier(pipeline, {"version": "v", "labels": labels})


@pytest.mark.parametrize("categories", [None, TWO], ids=["five categories", "two"])
@pytest.mark.parametrize("estimator", sorted(training.ESTIMATORS))
def test_the_scorer_predicts_as_the_pipeline_on_the_held_out_bbc_set(
    split: training.Split, estimator: str, categories: tuple[str, ...] | None
) -> None:
    """Every estimator, multiclass and binary: the same category for every held-out document,
    and every probability within 1e-9 of scikit-learn's."""
    pipeline = _fitted(split, estimator, categories)
    held_out = [
        text
        for text, label in zip(split.test_texts, split.test_labels, strict=True)
        if categories is None or label in categories
    ]
    scorer = Scorer.from_bytes(_classifier(pipeline).scoring_form(), source="test")
    predictions = scorer.predict(held_out)
    assert [p.category for p in predictions] == list(pipeline.predict(held_out))
    expected = pipeline.predict_proba(held_out)
    assert expected.dtype == np.float64
    assert np.abs(scorer.probabilities(held_out) - expected).max() <= 1e-9
    top = np.sort(expected, axis=1)[:, ::-1]
    assert [p.confidence for p in predictions] == pytest.approx(top[:, 0].tolist(), abs=1e-9)


def test_the_scorer_takes_batches_as_the_classifier_does(split: training.Split) -> None:
    """Documents without a word it knows (the class priors decide) anywhere in a batch."""
    pipeline = _fitted(split, "nb", None)
    scorer = Scorer.from_bytes(_classifier(pipeline).scoring_form(), source="t")
    assert scorer.predict([]) == []
    with pytest.raises(TypeError, match="not a single string"):
        scorer.predict("a text")
    texts = ["", split.test_texts[0], "zzyzx qwv 12", "", split.test_texts[1], ""]
    expected = pipeline.predict_proba(texts)
    assert np.abs(scorer.probabilities(texts) - expected).max() <= 1e-9
    assert [len(p.alternatives) for p in scorer.predict(texts)] == [3] * len(texts)


def test_a_pipeline_the_scorer_cannot_reproduce_has_no_scoring_form(
    split: training.Split,
) -> None:
    pipeline = training.build_pipeline("sgd")
    pipeline.set_params(classifier=SGDClassifier(loss="modified_huber", random_state=1))
    pipeline.fit(split.train_texts[:300], split.train_labels[:300])
    with pytest.raises(ModelLoadError, match="its SGDClassifier is not one docingest scores"):
        _classifier(pipeline).scoring_form()


@pytest.fixture(scope="module")
def fields(split: training.Split) -> dict[str, Any]:
    """The arrays of a valid scoring form, to spoil one at a time."""
    form = _classifier(_fitted(split, "nb", TWO)).scoring_form()
    with np.load(io.BytesIO(form), allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def _saved(fields: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **fields)
    return buffer.getvalue()


SPOILED: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "pickled": (
        lambda f: f | {"labels": np.array(["business", "tech"], dtype=object)},
        "cannot be read: ValueError('Object arrays cannot be loaded when allow_pickle=False')",
    ),
    "missing": (
        lambda f: {name: array for name, array in f.items() if name != "idf"},
        "lacks: idf",
    ),
    "newer": (lambda f: f | {"format": np.int64(FORMAT + 1)}, f"has format {FORMAT + 1}"),
    "shapes": (lambda f: f | {"idf": f["idf"][:-1]}, "do not fit weights of shape"),
    "dtype": (lambda f: f | {"idf": f["idf"].astype(np.float64)}, "idf holds float64"),
    "labels": (
        lambda f: f | {"labels": np.array(["sport", "tech"])},
        "metadata labels do not match",
    ),
    "link": (lambda f: f | {"link": np.str_("magic")}, "'magic' is not a valid Link"),
}


@pytest.mark.parametrize("spoil", sorted(SPOILED))
def test_a_spoiled_scoring_form_is_refused_when_loaded(fields: dict[str, Any], spoil: str) -> None:
    change, message = SPOILED[spoil]
    with pytest.raises(ModelLoadError, match=r"^model v scoring form ") as refused:
        Scorer.from_bytes(_saved(change(dict(fields))), source="model v")
    assert message in str(refused.value)


def test_bytes_that_are_no_scoring_form_are_refused() -> None:
    with pytest.raises(ModelLoadError, match=r"^model v scoring form cannot be read"):
        Scorer.from_bytes(b"PK\x03\x04 not a zip", source="model v")
