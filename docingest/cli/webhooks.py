"""`docingest webhooks`: the delivering process (`deliver`, the Procfile's `webhooks`), and the
endpoints read or resumed from the database, for when the API is away (`list`, `resume`)."""

from __future__ import annotations

import gc
import signal
import uuid
from typing import Annotated

import typer

from docingest.cli.app import app, console, database, failed

webhooks = typer.Typer(
    help="Webhooks: deliver the change feed to its endpoints; list and resume them.",
    no_args_is_help=True,
)
app.add_typer(webhooks, name="webhooks")


@webhooks.command()
def deliver() -> None:
    """Deliver the change feed to every webhook endpoint until stopped (the Procfile's
    `webhooks`). Run one or more, on any hosts: each endpoint is leased to one process at a
    time. SIGTERM or Ctrl-C: the tries under way finish, the leases are given back."""
    from docingest.changes.webhooks.deliverer import Deliverer
    from docingest.settings import get_settings

    with database() as engine:
        deliverer = Deliverer(engine, get_settings())

        def stop(signum: int, frame: object) -> None:
            deliverer.stop.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        # What was imported lives as long as the process: out of the collector's sight, the
        # collections a batch's thousand changes set off no longer walk it (as in the API).
        gc.freeze()
        deliverer.run()


@webhooks.command("list")
def list_webhooks() -> None:
    """Every endpoint as a JSON line (as `GET /webhooks` shows it), oldest first."""
    from docingest.changes.webhooks import endpoints

    with database() as engine:
        for found in endpoints.list_endpoints(engine):
            typer.echo(endpoints.describe(found).model_dump_json())


@webhooks.command()
def resume(
    webhook_id: Annotated[uuid.UUID, typer.Argument(help="The endpoint's id")],
    from_head: Annotated[
        bool,
        typer.Option("--from-head", help="Skip what it missed: deliver from the newest change"),
    ] = False,
) -> None:
    """Deliver again to a paused endpoint (or try a failing one now), as `POST
    /webhooks/{id}/resume` does."""
    from docingest.changes.webhooks import endpoints

    with database() as engine:
        try:
            resumed = endpoints.resume(engine, webhook_id, from_head=from_head)
        except endpoints.EndpointNotFoundError as error:
            raise failed(LookupError(f"no webhook {webhook_id}")) from error
        except endpoints.PositionPrunedError as error:
            raise failed(error) from error
    console.print(f"webhook {webhook_id} is active, from position {resumed.endpoint.position}")
