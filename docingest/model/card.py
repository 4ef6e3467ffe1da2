"""A model card for people: a confusion-matrix image and a terminal rendering.

Both take the card as stored (`TrainedModel.metadata`, a registry row's JSON), so any registered
model can be shown, including ones trained elsewhere.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table

# The drawing's cost grows with categories² (a text per cell) and with the figure's area: 120
# categories took 38 s and 2.2 GB. Past ANNOTATED_CATEGORIES the cells carry colour only, and the
# figure stops growing at MAX_INCHES (at 100 dpi), so any card draws in bounded time and memory.
ANNOTATED_CATEGORIES = 30
MAX_INCHES = 16.0


def confusion_matrix_png(card: dict[str, Any]) -> bytes:
    """Rows are true labels, columns predicted ones; the diagonal is what the model got right.

    A `Figure` without pyplot keeps no global state, so threads may draw at the same time.
    """
    from matplotlib.figure import Figure

    labels: list[str] = card["labels"]
    matrix: list[list[int]] = card["metrics"]["confusion_matrix"]
    size = min(1.6 + 0.7 * len(labels), MAX_INCHES)
    figure = Figure(figsize=(size + 1.5, size), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    tick_size = "medium" if len(labels) <= ANNOTATED_CATEGORIES else "xx-small"
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=tick_size)
    axes.set_yticks(range(len(labels)), labels, fontsize=tick_size)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    accuracy = card["metrics"]["accuracy"]
    axes.set_title(f"{card['version']}\nheld-out accuracy {accuracy:.3f}", fontsize="medium")
    if len(labels) <= ANNOTATED_CATEGORIES:
        brightest = max((max(row) for row in matrix), default=0)
        for true, row in enumerate(matrix):
            for predicted, count in enumerate(row):
                color = "white" if count > brightest / 2 else "black"
                axes.text(predicted, true, str(count), ha="center", va="center", color=color)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def render_card(card: dict[str, Any]) -> RenderableType:
    """Summary, per-class scores and confusion matrix, for `docingest model show`.

    Cards written before training recorded F1, speed and the matrix show what they have.
    """
    parts: list[RenderableType] = [_summary(card), _per_class(card)]
    if "confusion_matrix" in card["metrics"]:
        parts.append(_confusion(card))
    parts.append(comparison_table(card))
    return Group(*parts)


def _summary(card: dict[str, Any]) -> Table:
    metrics = card["metrics"]
    speed = card.get("speed", {})
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows = {
        "version": card["version"],
        "estimator": card.get("estimator", "?"),
        "features": card.get("vectorizer", "?"),
        "trained on": f"{card.get('source', '?')}, {card.get('trained_at', '?')}",
        "documents": f"{card.get('train_size', '?')} to train, {card.get('test_size', '?')} "
        f"held out ({card.get('test_fraction', '?')}, seed {card.get('seed', '?')})",
        "training time": f"{card.get('train_seconds', '?')} s",
        "held-out accuracy": f"{metrics['accuracy']:.4f}",
        "macro-F1": f"{metrics['macro_f1']:.4f}",
        "batched prediction": f"{speed.get('batched_docs_per_second', 0):,.0f} docs/s",
        "one document per call": f"{speed.get('single_docs_per_second', 0):,.0f} docs/s",
    }
    for name, value in rows.items():
        table.add_row(name, escape(str(value)))
    return table


def _per_class(card: dict[str, Any]) -> Table:
    counts = card.get("label_counts", {})
    table = Table(title="per category (held-out)")
    for heading in ("category", "documents", "precision", "recall", "F1", "held out"):
        table.add_column(heading, justify="left" if heading == "category" else "right")
    for label, scores in card["metrics"]["per_class"].items():
        table.add_row(
            escape(label),
            str(counts.get(label, "?")),
            f"{scores['precision']:.3f}",
            f"{scores['recall']:.3f}",
            f"{scores['f1']:.3f}" if "f1" in scores else "-",
            str(scores["support"]),
        )
    return table


def _confusion(card: dict[str, Any]) -> Table:
    labels = card["labels"]
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for label in labels:
        table.add_column(escape(label), justify="right")
    rows = zip(labels, card["metrics"]["confusion_matrix"], strict=True)
    for true, (label, row) in enumerate(rows):
        cells = [
            f"[bold green]{count}[/]" if predicted == true else str(count or "·")
            for predicted, count in enumerate(row)
        ]
        table.add_row(escape(label), *cells)
    return table


def comparison_table(card: dict[str, Any]) -> RenderableType:
    """The new model against the model active when it was trained, on the same held-out
    documents (`docingest.model.learning.compare`); cards without a comparison say so."""
    comparison = card.get("comparison")
    if comparison is None:
        return "no comparison with an active model recorded"
    active = comparison["active_version"]
    if active is None:
        return "no model was active to compare with"
    verdict = {
        "better": "[green]not worse on any[/]",
        "worse": "[red]worse on some[/]",
        "inconclusive": "[yellow]cannot tell[/]",
    }[comparison.get("verdict", "better" if comparison["better"] else "worse")]
    table = Table(
        title=f"compared with {escape(active)} (then active): {verdict}",
        caption="\n".join(escape(line) for line in _comparison_notes(comparison)) or None,
    )
    for heading in ("held out", "documents", "compared", "macro-F1 new", "macro-F1 active",
                    "accuracy new", "accuracy active"):  # fmt: skip
        table.add_column(heading, justify="left" if heading == "held out" else "right")
    for part in comparison["held_out"]:
        documents = str(part["documents"])
        compared = str(part.get("compared", part["documents"]))
        if "active" not in part:
            table.add_row(escape(part["name"]), documents, compared, *["-"] * 4)
            continue
        new, old = part["new"], part["active"]
        table.add_row(
            escape(part["name"]),
            documents,
            compared,
            f"{new['macro_f1']:.4f}",
            f"{old['macro_f1']:.4f}",
            f"{new['accuracy']:.4f}",
            f"{old['accuracy']:.4f}",
        )
    return table


def _comparison_notes(comparison: dict[str, Any]) -> list[str]:
    """Why the gate could not tell, and how the new model does on categories it added."""
    notes = list(comparison.get("reasons", []))
    for part in comparison["held_out"]:
        learned = part.get("learned")
        if learned is not None:
            notes.append(
                f"{part['name']}: {learned['documents']} held-out documents of categories new to "
                f"the active model: macro-F1 new {learned['macro_f1']:.4f} (not compared)"
            )
    return notes
