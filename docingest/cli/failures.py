"""Commands that show what failed and queue it again once the cause is fixed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from docingest.cli.app import app, console
from docingest.settings import get_settings


@app.command()
def failures(
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many")] = 50,
) -> None:
    """List failed documents (oldest first) and dead-lettered messages."""
    from rich.table import Table
    from sqlmodel import Session

    from docingest.broker import setup_broker
    from docingest.db import list_failures, make_engine
    from docingest.failures import count_dead_letters

    settings = get_settings()
    table = Table("id", "version", "failed at", "attempts", "error")
    with Session(make_engine(settings.database_url)) as session:
        for failure in list_failures(session, limit=limit):
            table.add_row(
                str(failure.id),
                str(failure.version),
                f"{failure.failed_at:%Y-%m-%d %H:%M:%S}",
                str(failure.attempts),
                failure.error,
            )
    Console().print(table)
    dead = count_dead_letters(setup_broker(settings))
    console.print(f"{table.row_count} failed documents shown; {dead} dead-lettered messages")


@app.command()
def replay() -> None:
    """Queue every failed document and dead-lettered message again, once the cause is fixed."""
    from docingest.broker import setup_broker
    from docingest.db import make_engine
    from docingest.enqueue import Enqueuer
    from docingest.failures import replay as replay_failures

    settings = get_settings()
    broker = setup_broker(settings)
    done = replay_failures(make_engine(settings.database_url), Enqueuer(broker), broker)
    console.print(
        f"replayed {done.documents} failed documents and {done.dead_letters} dead-lettered messages"
    )
