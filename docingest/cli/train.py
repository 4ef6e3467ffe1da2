"""`docingest train`: train a classifier on labelled data and register it as a new version."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import OperationalError

from docingest.cli.app import app, console, database
from docingest.settings import get_settings
from docingest.textfiles import RULE

if TYPE_CHECKING:
    from docingest.training import Step, TrainedModel

DATA_HELP = (
    "bbc (built-in), 20newsgroups (downloaded once), a folder with one sub-folder of .txt files "
    "per category, or a .csv/.jsonl file with content and category"
)
# The command's help, built here because it quotes the decoding rule `send` states too.
_HELP = f"""Train a classifier, evaluate it on held-out data and register it in the database.

Your own files (a folder, .csv or .jsonl): {RULE}
"""


@app.command(help=_HELP)
def train(
    data: Annotated[str, typer.Argument(help=DATA_HELP)] = "bbc",
    estimator: Annotated[
        str, typer.Option(help="nb (the article's MultinomialNB), logreg or sgd")
    ] = "logreg",
    test_size: Annotated[
        float, typer.Option(min=0.05, max=0.5, help="held-out fraction for the card's metrics")
    ] = 0.25,
    seed: Annotated[int, typer.Option(help="seed of the stratified split")] = 42,
    output: Annotated[
        Path | None, typer.Option(help="also write the skops artifact to this file")
    ] = None,
    card_dir: Annotated[
        Path | None, typer.Option(help="write card.json and confusion.png to this folder")
    ] = None,
    activate: Annotated[
        bool | None,
        typer.Option(
            "--activate/--no-activate",
            help="make it the model workers use (default: only when no model is active yet)",
        ),
    ] = None,
) -> None:
    from docingest import training
    from docingest.datasets import load_dataset

    with _progress() as step:
        step(f"loading {data}")
        try:
            dataset = load_dataset(data)
            step(f"splitting {len(dataset.texts):,} documents")
            model = training.train(
                dataset.texts,
                dataset.labels,
                estimator=estimator,
                test_size=test_size,
                seed=seed,
                source=dataset.name,
                on_step=step,
            )
        except ValueError as error:  # DatasetError, an unknown estimator, an impossible split
            console.print(f"[red]{error}[/]")
            raise typer.Exit(2) from error
        step("registering")
        try:
            registered_active = _register(model, activate)
        except OperationalError as error:  # the model is trained: say where it could not go
            console.print(f"[red]cannot register the model: database unreachable ({error.orig})[/]")
            raise typer.Exit(1) from error
        written = _write_files(model, output, card_dir)
    _report(model, registered_active, written)


@contextmanager
def _progress() -> Iterator[Step]:
    """One spinner line per step; the previous one is marked done when the next starts."""
    columns = (SpinnerColumn(finished_text="✓"), TextColumn("{task.description}"))
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        tasks: list[TaskID] = []

        def step(name: str) -> None:
            if tasks:
                progress.update(tasks[-1], total=1, completed=1)
            tasks.append(progress.add_task(name, total=None))

        yield step
        if tasks:
            progress.update(tasks[-1], total=1, completed=1)


def _register(model: TrainedModel, activate: bool | None) -> bool:
    """Store the model as a new version; returns whether it is now the active one."""
    from docingest import registry
    from docingest.db import migrate

    migrate(get_settings().database_url)
    with database() as engine:
        if activate is None:
            activate = registry.active_version(engine) is None
        registry.register(engine, model, activate=activate)
    return activate


def _write_files(model: TrainedModel, output: Path | None, card_dir: Path | None) -> list[Path]:
    from docingest.card import confusion_matrix_png
    from docingest.training import save_model

    written = []
    if output is not None:
        save_model(model, output)
        written.append(output)
    if card_dir is not None:
        card_dir.mkdir(parents=True, exist_ok=True)
        card = card_dir / "card.json"
        card.write_bytes(orjson.dumps(model.metadata, option=orjson.OPT_INDENT_2))
        image = card_dir / "confusion.png"
        image.write_bytes(confusion_matrix_png(model.metadata))
        written += [card, image]
    return written


def _report(model: TrainedModel, active: bool, written: list[Path]) -> None:
    card = model.metadata
    metrics, speed = card["metrics"], card["speed"]
    state = "registered and [bold green]active[/]" if active else "registered (not active)"
    console.print(
        f"model [bold]{card['version']}[/] {state}: held-out accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f}, {speed['batched_docs_per_second']:,.0f} docs/s "
        f"batched ({card['test_size']} held-out documents)"
    )
    for path in written:
        console.print(f"wrote {path}")
