"""`docingest changes`: the change feed as JSON lines, one change a line, on stdout.

By default it reads the database named by the settings (no API needed); with `--url` it follows
a running API's `GET /changes` instead (with the key in DOCINGEST_API_KEY). With `--follow` it
waits for new changes until interrupted; a line's `position` is where to start again
(`--after`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

import typer

from docingest.cli.app import app, console, database, quiet_http_logs

# How often the database is read again while following.
POLL_SECONDS = 0.2


@app.command()
def changes(
    after: Annotated[
        str | None,
        typer.Option(help="Start after this position (a line's `position`); default: the oldest"),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep waiting for new changes")
    ] = False,
    kind: Annotated[
        list[str] | None, typer.Option(help="Only this kind (repeatable): stored, deleted, …")
    ] = None,
    category: Annotated[list[str] | None, typer.Option(help="Only this category (repeatable)")] = (
        None
    ),
    url: Annotated[
        str | None,
        typer.Option(help="Follow this running API (e.g. http://host:8000) instead"),
    ] = None,
) -> None:
    """Print the change feed as JSON lines, oldest first (docs/changes.md)."""
    if after is not None and not after.isdigit():
        console.print(f"[red]not a position: {after!r}[/]")
        raise typer.Exit(2)
    found = (
        _from_api(url, after, follow, kind or [], category or [])
        if url
        else _from_database(after, follow, kind or [], category or [])
    )
    try:
        for line in found:
            typer.echo(line)
    except KeyboardInterrupt:
        return


def _from_database(
    after: str | None, follow: bool, kinds: list[str], categories: list[str]
) -> Iterator[str]:
    from docingest.changes.feed import ChangesGoneError, dump, read_changes
    from docingest.changes.relay import relay

    position = int(after) if after is not None else None
    with database() as engine:
        while True:
            try:
                page = read_changes(
                    engine, after=position, limit=1000, kinds=kinds, categories=categories
                )
            except ChangesGoneError as error:
                console.print(f"[red]{error}: see docs/changes.md to catch up[/]")
                raise typer.Exit(1) from error
            yield from (dump(change).decode() for change in page.items)
            position = page.next
            if not page.items:
                if not follow:
                    return
                relay(engine)  # none when a worker's relay holds the lock
                time.sleep(POLL_SECONDS)


def _from_api(
    url: str, after: str | None, follow: bool, kinds: list[str], categories: list[str]
) -> Iterator[str]:
    from docingest_client import Client, DocingestError

    quiet_http_logs()
    try:
        with Client(url) as client:
            changes = client.changes(after, kinds=kinds, categories=categories, follow=follow)
            yield from (change.model_dump_json() for change in changes)
    except DocingestError as error:
        console.print(f"[red]GET /changes: {error}[/]")
        raise typer.Exit(1) from error
