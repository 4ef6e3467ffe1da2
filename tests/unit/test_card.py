import io
import time
from typing import Any

import pytest
from matplotlib.image import imread
from rich.console import Console

from docingest.model import training
from docingest.model.card import MAX_INCHES, confusion_matrix_png, render_card
from docingest.model.datasets import load_dataset


@pytest.fixture(scope="module")
def card() -> dict[str, Any]:
    bbc = load_dataset("bbc")
    return training.train(bbc.texts, bbc.labels, estimator="nb", source="bbc").metadata


def rendered(card: dict[str, Any]) -> str:
    console = Console(record=True, width=120)
    console.print(render_card(card))
    return console.export_text()


def test_confusion_matrix_is_a_png_sized_to_the_labels(card: dict[str, Any]) -> None:
    png = confusion_matrix_png(card)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    height, width, _ = imread(io.BytesIO(png), format="png").shape
    assert 400 <= height < width <= 1000
    three_labels = {
        **card,
        "labels": ["a", "b", "c"],
        "metrics": {**card["metrics"], "confusion_matrix": [[3, 0, 0], [1, 2, 0], [0, 0, 3]]},
    }
    small_height, _, _ = imread(io.BytesIO(confusion_matrix_png(three_labels))).shape
    assert small_height < height


def test_render_shows_the_summary_scores_and_matrix(card: dict[str, Any]) -> None:
    text = rendered(card)
    metrics = card["metrics"]
    assert card["version"] in text
    assert f"held-out accuracy      {metrics['accuracy']:.4f}" in text
    assert f"macro-F1               {metrics['macro_f1']:.4f}" in text
    assert f"{card['speed']['batched_docs_per_second']:,.0f} docs/s" in text
    assert "1668 to train, 557 held out (0.25, seed 42)" in text
    politics = metrics["per_class"]["politics"]
    assert f"│ politics      │       417 │     {politics['precision']:.3f} │" in text
    sports_row = next(
        line for line in text.splitlines() if line.startswith("│ sports") and "·" in line
    )
    assert str(metrics["confusion_matrix"][3][3]) in sports_row


def test_render_escapes_markup_in_labels(card: dict[str, Any]) -> None:
    labels = ["[bold]a[/bold]", "b"]
    scores = {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    odd = {
        **card,
        "labels": labels,
        "label_counts": dict.fromkeys(labels, 2),
        "metrics": {
            **card["metrics"],
            "per_class": dict.fromkeys(labels, scores),
            "confusion_matrix": [[1, 0], [0, 1]],
        },
    }
    assert "[bold]a[/bold]" in rendered(odd)


def test_render_copes_with_a_card_from_an_older_model(card: dict[str, Any]) -> None:
    """Cards written before training recorded F1, speed and the matrix still render."""
    per_class = {
        label: {key: scores[key] for key in ("precision", "recall", "support")}
        for label, scores in card["metrics"]["per_class"].items()
    }
    metrics = {"accuracy": 0.975, "macro_f1": 0.974, "per_class": per_class}
    text = rendered({"version": "old-1", "labels": card["labels"], "metrics": metrics})
    assert "old-1" in text
    assert "0.9750" in text
    assert "│ tech          │         ? │" in text
    assert "confusion matrix" not in text


def test_a_card_of_many_categories_draws_in_bounded_time_and_size(card: dict[str, Any]) -> None:
    """120 categories took 38 s and 2.2 GB before the drawing was bounded."""
    labels = [f"category-{n:03d}" for n in range(120)]
    many = {
        **card,
        "labels": labels,
        "metrics": {**card["metrics"], "confusion_matrix": [[n % 7] * 120 for n in range(120)]},
    }
    started = time.process_time()  # this process's CPU: a busy machine's wall clock is not it
    png = confusion_matrix_png(many)
    took = time.process_time() - started
    height, width, _ = imread(io.BytesIO(png), format="png").shape
    assert max(height, width) <= (MAX_INCHES + 1.5) * 100
    assert took < 10
