"""Commands on the model registry (`docingest model …`) and `docingest reclassify`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from docingest.cli.app import app, console, database
from docingest.settings import get_settings

if TYPE_CHECKING:
    from docingest.connections import Connections
    from docingest.documents.store import Selection
    from docingest.model.reclassify import Outcome

model_app = typer.Typer(help="List, show, import and activate models.", no_args_is_help=True)
app.add_typer(model_app, name="model")

Version = Annotated[str | None, typer.Argument(help="A model version; default: the active one")]


def _fail(error: Exception) -> typer.Exit:
    console.print(f"[red]{error}[/]")
    return typer.Exit(1)


@model_app.command("list")
def list_() -> None:
    """Registered models, newest first; the active one is marked."""
    from docingest.model import registry

    with database() as engine:
        active = registry.active_version(engine)
        models = registry.list_models(engine)
    table = Table("", "estimator", "source", "accuracy", "macro-F1", "registered")
    table.add_column("version", no_wrap=True)  # copied into `model activate`: never cut
    for model in models:
        metrics = model.card.get("metrics", {})
        table.add_row(
            "*" if model.version == active else "",
            str(model.card.get("estimator", "")),
            str(model.card.get("source", "")),
            f"{metrics.get('accuracy', float('nan')):.4f}",
            f"{metrics.get('macro_f1', float('nan')):.4f}",
            f"{model.created_at:%Y-%m-%d %H:%M:%S}",
            model.version,
        )
    Console().print(table)
    console.print(f"active: {active or 'none'}")


@model_app.command()
def show(
    version: Version = None,
    png: Annotated[Path | None, typer.Option(help="Also write the confusion matrix here")] = None,
) -> None:
    """Print a model's card: data, held-out metrics per class, speed."""
    from docingest.model import registry
    from docingest.model.card import confusion_matrix_png, render_card

    try:
        with database() as engine:
            card = registry.card(engine, version)
    except registry.RegistryError as error:
        raise _fail(error) from error
    Console().print(render_card(card))
    if png is not None:
        png.write_bytes(confusion_matrix_png(card))
        console.print(f"confusion matrix written to {png}")


@model_app.command()
def activate(version: Annotated[str, typer.Argument(help="The version to activate")]) -> None:
    """Make a model the active one; workers switch within MODEL_REFRESH_SECONDS, no restart."""
    from docingest.model import registry

    try:
        with database() as engine:
            registry.activate(engine, version)
    except registry.RegistryError as error:
        raise _fail(error) from error
    seconds = get_settings().model_refresh_seconds
    console.print(f"model [bold]{version}[/] is active; workers switch within {seconds:g} s")


@model_app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A skops artifact")],
    activate: Annotated[bool, typer.Option(help="Also make it the active model")] = False,
) -> None:
    """Register a model file trained elsewhere (`docingest train --output`); checked first."""
    from docingest.db import migrate
    from docingest.model import registry

    settings = get_settings()
    migrate(settings.database_url)
    try:
        with database() as engine:
            model = registry.add(engine, path.read_bytes(), activate=activate, source=str(path))
    except registry.RegistryError as error:
        raise _fail(error) from error
    state = "registered and active" if activate else "registered"
    console.print(f"model [bold]{model.version}[/] {state} (sha256 {model.sha256[:12]}…)")


@app.command()
def reclassify(
    model: Annotated[
        str | None, typer.Option(help="Model version; default: the active one")
    ] = None,
    category: Annotated[str | None, typer.Option(help="Only documents in this category")] = None,
    before: Annotated[
        datetime | None, typer.Option(help="Only documents classified before this time (UTC)")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 500,
) -> None:
    """Classify stored documents again through the queue, behind new documents.

    Interrupt it at any time: running it again continues with what is left.
    """
    from docingest.connections import connected
    from docingest.documents.store import Selection
    from docingest.model import registry
    from docingest.schemas import as_utc

    with connected() as connections:
        engine = connections.engine
        try:
            version = model or registry.active_version(engine)
            if version is None:
                raise registry.RegistryError("no model is active yet")
            registry.load(engine, version)  # refuse at once what no worker could load
        except registry.RegistryError as error:
            raise _fail(error) from error
        selection = Selection(version, category, as_utc(before) if before else None)
        outcome = _run_with_progress(connections, selection, batch_size)
    if outcome.remaining:
        console.print(
            f"[red]{outcome.remaining} documents were not reclassified[/] (see the workers' "
            "logs); run the command again to retry them"
        )
        raise typer.Exit(1)
    console.print(f"{outcome.total} documents reclassified with model [bold]{version}[/]")


def _run_with_progress(connections: Connections, selection: Selection, batch_size: int) -> Outcome:
    from docingest.model.reclassify import Pacing, run

    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task(f"reclassifying with {selection.model_version}", total=None)
        return run(
            connections.engine,
            connections.queue,
            connections.ledger,
            selection,
            pacing=Pacing(batch_size=batch_size),
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
