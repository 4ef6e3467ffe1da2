"""`docingest train`: train a classifier on labelled data and register it as a new version."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import orjson
import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from docingest.cli.app import app, console, database, database_errors
from docingest.client.textfiles import RULE
from docingest.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from docingest.model.classifier import Classifier
    from docingest.model.learning import Part
    from docingest.model.training import Step, TrainedModel

DATA_HELP = (
    "bbc (built-in), 20newsgroups (downloaded once), a folder with one sub-folder of .txt files "
    "per category, a .csv/.jsonl file with content and category, or db: the documents people "
    "labelled"
)
DB = "db"
# The command's help, built here because it quotes the decoding rule `send` states too.
_HELP = f"""Train a classifier, evaluate it on held-out data and register it in the database.

Your own files (a folder, .csv or .jsonl): {RULE}
"""


@app.command(help=_HELP)
def train(
    data: Annotated[str, typer.Argument(help=DATA_HELP)] = "bbc",
    mix: Annotated[
        str | None,
        typer.Option("--with", help="with db: a data set to mix in (same choices as DATA)"),
    ] = None,
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
    activate_if_better: Annotated[
        bool,
        typer.Option(
            "--activate-if-better",
            help="activate it only if its macro-F1 is not lower than the active model's on any "
            "held-out part (the labels, the data set mixed in)",
        ),
    ] = False,
) -> None:
    from docingest.db import migrate
    from docingest.model import learning, registry
    from docingest.model.classifier import Classifier

    if mix is not None and data != DB:
        _refuse("--with mixes a data set into db (the labelled documents)")
    if activate_if_better and activate is not None:
        _refuse("--activate-if-better decides activation: leave out --activate/--no-activate")
    try:
        with database_errors():
            migrate(get_settings().database_url)
        with database() as engine, _progress() as step:
            step(f"loading {data}" + (f" with {mix}" if mix else ""))
            parts = _parts(engine, data, mix, test_size=test_size, seed=seed)
            model = learning.train_parts(
                parts, estimator=estimator, test_size=test_size, seed=seed, on_step=step
            )
            step("comparing with the active model")
            new = Classifier(model.pipeline, model.metadata)
            comparison = learning.compare(new, _active(engine), parts)
            model.metadata["comparison"] = comparison
            step("registering")
            registered_active, refusal = _register(
                engine, model, activate, comparison if activate_if_better else None
            )
            written = _write_files(model, output, card_dir)
    except ValueError as error:  # DatasetError, an unknown estimator, an impossible split
        _refuse(str(error))
    except registry.RegistryError as error:  # the active model cannot be loaded to compare
        console.print(f"[red]{escape(str(error))}[/]")
        raise typer.Exit(1) from error
    _report(model, registered_active, written)
    if refusal is not None:
        console.print(f"[red]{escape(refusal)}[/]")
        raise typer.Exit(1)


def _refuse(message: str) -> NoReturn:
    console.print(f"[red]{escape(message)}[/]")
    raise typer.Exit(2)


def _parts(
    engine: Engine, data: str, mix: str | None, *, test_size: float, seed: int
) -> list[Part]:
    """What to train on, each source split on its own (`docingest.model.learning`)."""
    from docingest.model.datasets import load_dataset
    from docingest.model.learning import dataset_part, labelled_part

    if data != DB:
        return [dataset_part(load_dataset(data), test_size=test_size, seed=seed)]
    parts = [labelled_part(engine, test_size=test_size, seed=seed)]
    if mix is not None:
        parts.append(dataset_part(load_dataset(mix), test_size=test_size, seed=seed))
    return parts


def _active(engine: Engine) -> Classifier | None:
    from docingest.model import registry

    version = registry.active_version(engine)
    return registry.load(engine, version) if version is not None else None


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


def _register(
    engine: Engine, model: TrainedModel, activate: bool | None, gate: dict[str, Any] | None
) -> tuple[bool, str | None]:
    """Store the model as a new version; returns whether it is now the active one, and why
    activation was refused (the command then exits 1).

    Activation is a compare-and-set: after the gate (`--activate-if-better`) it replaces only
    the model it was compared with, and by default only when no model is active; a model
    activated meanwhile stays. `--activate` replaces whatever is active. Either is refused when
    workers of another environment cannot load the model (docs/models.md, Activation).
    """
    from docingest.model import registry

    registry.register(engine, model, activate=False)
    replacing: str | registry.Anything | None = registry.ANY
    if gate is not None:
        activate, replacing = gate["better"], gate["active_version"]
    elif activate is None:
        activate, replacing = True, None
    if not activate:
        return False, None
    try:
        registry.activate(
            engine,
            model.metadata["version"],
            replacing=replacing,
            wait_seconds=get_settings().model_check_wait_seconds,
        )
    except registry.ActivationConflictError as error:
        console.print(f"[yellow]{escape(str(error))}[/]")
        return False, None
    except (registry.WorkersCannotLoadError, registry.ArtifactRefusedError) as error:
        return False, str(error)
    return True, None


def _write_files(model: TrainedModel, output: Path | None, card_dir: Path | None) -> list[Path]:
    from docingest.model.card import confusion_matrix_png
    from docingest.model.training import save_model

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
    from docingest.model.card import comparison_table

    card = model.metadata
    metrics, speed = card["metrics"], card["speed"]
    state = "registered and [bold green]active[/]" if active else "registered (not active)"
    console.print(
        f"model [bold]{card['version']}[/] {state}: held-out accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f}, {speed['batched_docs_per_second']:,.0f} docs/s "
        f"batched ({card['test_size']} held-out documents)"
    )
    console.print(comparison_table(card))
    for path in written:
        console.print(f"wrote {path}")
