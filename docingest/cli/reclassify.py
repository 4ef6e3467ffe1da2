"""`docingest reclassify`: bring stored documents up to date with the active model, paced behind
new documents, with a progress bar.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from docingest.cli.app import app, console, deployment, failed

if TYPE_CHECKING:
    from docingest.connections import Connections
    from docingest.model.reclassify import Outcome
    from docingest.model.selection import Selection


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
    from docingest.model import registry
    from docingest.model.selection import Selection
    from docingest.schemas import as_utc

    with deployment() as connections:
        engine = connections.engine
        try:
            version = model or registry.active_version(engine)
            if version is None:
                raise registry.RegistryError("no model is active yet")
            registry.load_scorer(engine, version)  # refuse at once what no worker could load
        except registry.RegistryError as error:
            raise failed(error) from error
        selection = Selection(version, category, as_utc(before) if before else None)
        outcome = _run_with_progress(connections, selection, batch_size)
    if outcome.superseded_by is not None:
        console.print(
            f"[yellow]model {outcome.superseded_by} was activated meanwhile: stopped[/] with "
            f"{outcome.remaining} of {outcome.total} documents still on older models; run "
            "`docingest reclassify` again to bring them to the active model"
        )
        return
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
