"""`docingest send`: feed files to a running service, with a progress bar and a rejects file."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from docingest.cli.app import app, console
from docingest.sender import STDIN, Options, SendError, Tally, check_paths, send

EXIT_REJECTED = 1
EXIT_FAILED = 2


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} docs/s", style="progress.data.speed")


@app.command(name="send")
def send_command(
    paths: Annotated[
        list[str],
        typer.Argument(help="JSONL files, CSV files (.csv), folders of .txt files, or - (stdin)"),
    ],
    url: Annotated[
        str, typer.Option(envvar="DOCINGEST_URL", help="The service's base URL")
    ] = "http://127.0.0.1:8000",
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Documents per bulk request")
    ] = 500,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Requests in flight")] = 4,
    rejects: Annotated[
        Path, typer.Option(help="Where rejected items go (JSONL), created only if any")
    ] = Path("rejects.jsonl"),
    max_wait: Annotated[
        float, typer.Option(min=0, help="Seconds one request may wait on 429/503 answers")
    ] = 300.0,
) -> None:
    """Send documents in bulk: `{"id"?, "content"}` per JSONL line, or a CSV with `content`.

    The API key comes from DOCINGEST_API_KEY. Exit code 0 when every document was accepted,
    1 when some were rejected (see the rejects file), 2 on usage or connection errors.
    """
    try:
        check_paths(paths)
    except ValueError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(EXIT_FAILED) from None
    if any(p != STDIN and Path(p).resolve() == rejects.resolve() for p in paths):
        console.print(f"[red]error:[/] {rejects} is an input; pass another --rejects file")
        raise typer.Exit(EXIT_FAILED)
    started = time.monotonic()
    with _progress() as progress:
        task = progress.add_task("sending", total=None, accepted=0, rejected=0)

        def show(tally: Tally) -> None:
            progress.update(
                task, completed=tally.done, accepted=tally.accepted, rejected=tally.rejected
            )

        options = Options(batch_size, concurrency, max_wait, rejects, on_progress=show)
        try:
            tally = asyncio.run(
                send(
                    paths,
                    sys.stdin.buffer,
                    url=url.rstrip("/"),
                    api_key=os.environ.get("DOCINGEST_API_KEY") or None,
                    options=options,
                )
            )
        except SendError as error:
            console.print(f"[red]error:[/] {error}")
            raise typer.Exit(EXIT_FAILED) from None
    seconds = time.monotonic() - started
    console.print(
        f"{tally.done:,} documents in {seconds:.1f} s ({tally.done / max(seconds, 1e-9):,.0f}/s): "
        f"[green]{tally.accepted:,} accepted[/], [red]{tally.rejected:,} rejected[/]"
        + (f", {tally.retries} requests retried" if tally.retries else "")
    )
    if tally.rejected:
        console.print(f"rejected items are in {rejects}: fix them and send that file again")
        raise typer.Exit(EXIT_REJECTED)


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} docs"),
        _Rate(),
        TextColumn("[green]{task.fields[accepted]:,} accepted"),
        TextColumn("[red]{task.fields[rejected]:,} rejected"),
        TimeElapsedColumn(),
        console=console,
    )
