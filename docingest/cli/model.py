"""`docingest model …`: list, show, import and activate the models of the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from docingest.cli.app import app, console, database, database_errors, failed
from docingest.settings import get_settings

model_app = typer.Typer(help="List, show, import and activate models.", no_args_is_help=True)
app.add_typer(model_app, name="model")

Version = Annotated[str | None, typer.Argument(help="A model version; default: the active one")]


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
        raise failed(error) from error
    Console().print(render_card(card))
    if png is not None:
        png.write_bytes(confusion_matrix_png(card))
        console.print(f"confusion matrix written to {png}")


Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="activate without the workers' proof that they can load it (a worker that cannot "
        "keeps serving the model it has)",
    ),
]


@model_app.command()
def activate(
    version: Annotated[str, typer.Argument(help="The version to activate")],
    force: Force = False,
) -> None:
    """Make a model the active one (a rollback: an earlier version); workers switch within
    MODEL_REFRESH_SECONDS, no restart. Refused if workers of another environment cannot load
    it (docs/models.md, Activation)."""
    from docingest.model import registry

    wait = get_settings().model_check_wait_seconds
    try:
        with database() as engine:
            registry.activate(engine, version, force=force, wait_seconds=wait)
    except registry.RegistryError as error:
        raise failed(error) from error
    seconds = get_settings().model_refresh_seconds
    console.print(f"model [bold]{version}[/] is active; workers switch within {seconds:g} s")


@model_app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A skops artifact")],
    activate: Annotated[bool, typer.Option(help="Also make it the active model")] = False,
    force: Force = False,
) -> None:
    """Register a model file trained elsewhere (`docingest train --output`); checked first."""
    from docingest.db import migrate
    from docingest.model import registry

    settings = get_settings()
    with database_errors():
        migrate(settings.database_url)
    try:
        with database() as engine:
            model = registry.add(
                engine,
                path.read_bytes(),
                activate=activate,
                source=str(path),
                force=force,
                wait_seconds=settings.model_check_wait_seconds,
            )
    except registry.WorkersCannotLoadError as error:
        console.print(f"[red]{error}[/]")
        console.print("it is registered: activate it once the workers can load it")
        raise typer.Exit(1) from error
    except registry.RegistryError as error:
        raise failed(error) from error
    state = "registered and active" if activate else "registered"
    console.print(f"model [bold]{model.version}[/] {state} (sha256 {model.sha256[:12]}…)")
