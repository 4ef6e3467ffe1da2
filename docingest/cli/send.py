"""`docingest send`: feed files to a running service, with a progress bar and a rejects file."""

from __future__ import annotations

import asyncio
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

from docingest.cli.app import app, console, quiet_http_logs
from docingest.client.send import (
    MAX_FILE_BYTES,
    STDIN,
    Options,
    SendError,
    Tally,
    check_paths,
    send,
)
from docingest.client.textfiles import RULE

EXIT_REJECTED = 1
EXIT_FAILED = 2


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} docs/s", style="progress.data.speed")


# The command's help, built here because it quotes the decoding rule `train` states too.
_HELP = f"""Send documents in bulk: `{{"id"?, "content"}}` per JSONL line, or a CSV with `content`.

A document without an id gets one derived from its file, its line and its content, so sending
the same files again gives the same ids: a resend after a crash or an error updates the
documents already sent instead of storing copies.

In folders, only regular .txt files are read; symlinks (unless --follow-symlinks), FIFOs,
sockets and devices are skipped and counted in the summary.

{RULE} A line or file that cannot be read goes to the rejects file; the rest is still sent.

The API key comes from DOCINGEST_API_KEY. Exit code 0 when every document was accepted,
1 when some were rejected (see the rejects file), 2 on usage or connection errors.
"""


@app.command(name="send", help=_HELP)
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
    max_file_bytes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Largest input read for one document (a .txt file, a JSONL line, a CSV field); "
            "a larger one is rejected unread",
        ),
    ] = MAX_FILE_BYTES,
    follow_symlinks: Annotated[
        bool,
        typer.Option(
            "--follow-symlinks", help="Read symlinks found in folders (skipped and counted if not)"
        ),
    ] = False,
) -> None:
    quiet_http_logs()
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

        options = Options(
            batch_size,
            concurrency,
            max_wait,
            rejects,
            on_progress=show,
            max_file_bytes=max_file_bytes,
            follow_symlinks=follow_symlinks,
        )
        try:
            tally = asyncio.run(send(paths, sys.stdin.buffer, url=url, options=options))
        except SendError as error:
            console.print(f"[red]error:[/] {error}")
            raise typer.Exit(EXIT_FAILED) from None
    seconds = time.monotonic() - started
    console.print(
        f"{tally.done:,} documents in {seconds:.1f} s ({tally.done / max(seconds, 1e-9):,.0f}/s): "
        f"[green]{tally.accepted:,} accepted[/], [red]{tally.rejected:,} rejected[/]"
        + (f", {tally.retries} requests retried" if tally.retries else "")
    )
    if tally.skipped:
        reasons = ", ".join(f"{count:,} {reason}" for reason, count in tally.skipped.items())
        console.print(f"{tally.skipped.total():,} files skipped, not read: {reasons}")
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
