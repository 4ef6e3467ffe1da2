"""Commands that show what failed and queue it again once the cause is fixed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from docingest.cli.app import app, console, deployment


@app.command()
def failures(
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many")] = 50,
) -> None:
    """List failed documents and dead-lettered messages of every queue, oldest first."""
    from rich.table import Table

    from docingest.failures.repository import list_failures

    table = Table("id", "version", "failed at", "attempts", "error")
    letters = Table("queue", "message", "actor", "documents", "retries", "dead since")
    with deployment() as connections:
        for failure in list_failures(connections.engine, limit=limit):
            table.add_row(
                str(failure.id),
                str(failure.version),
                f"{failure.failed_at:%Y-%m-%d %H:%M:%S}",
                str(failure.attempts),
                failure.error,
            )
        shown = connections.queue.dead_letters(
            limit, max_bytes=connections.settings.max_answer_bytes
        )
        for letter in shown:
            since = f"{letter.dead_since:%Y-%m-%d %H:%M:%S}" if letter.dead_since else "?"
            letters.add_row(
                letter.queue,
                letter.message_id,
                letter.actor,
                str(letter.documents),
                str(letter.retries),
                since,
            )
        dead = connections.queue.count_dead_letters()
    Console().print(table)
    if letters.row_count:
        Console().print(letters)
    console.print(f"{table.row_count} failed documents shown; {dead} dead-lettered messages")


@app.command()
def replay() -> None:
    """Queue every failed document and dead-lettered message again, once the cause is fixed."""
    from docingest.failures.replay import replay as replay_failures
    from docingest.queue.enqueue import Enqueuer

    with deployment() as connections:
        enqueuer = Enqueuer(connections.queue, connections.ledger)
        done = replay_failures(connections.engine, enqueuer)
    console.print(
        f"replayed {done.documents} failed documents and {done.dead_letters} dead-lettered messages"
    )
