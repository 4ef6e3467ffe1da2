"""`docingest stats`: the figures of GET /stats as terminal tables.

By default it reads the database and Redis named by the settings, as the other operator
commands do (no API needed, works while the API is down); with `--url` it asks a running API
instead (with the key in DOCINGEST_API_KEY), for hosts that reach only the API.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from docingest.cli.app import app, console, deployment, quiet_http_logs
from docingest.schemas import Drift, Stats


@app.command()
def stats(
    url: Annotated[
        str | None,
        typer.Option(help="Ask this running API (e.g. http://host:8000) instead of the database"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON of GET /stats")] = False,
) -> None:
    """Documents per category and status, queue depths, throughput, end-to-end lag."""
    figures = _from_api(url) if url else _from_servers()
    if as_json:
        typer.echo(figures.model_dump_json(indent=2))
    else:
        render(figures, Console())


def _from_servers() -> Stats:
    from docingest.observe.stats import collect_stats

    with deployment() as connections:
        return collect_stats(connections)


def _from_api(url: str) -> Stats:
    """One try: an operator asking for figures wants an answer or an error now, not retries."""
    from docingest_client import Client, DocingestError

    quiet_http_logs()
    try:
        with Client(url, timeout=30, max_wait=0) as client:
            return client.stats()
    except DocingestError as error:
        console.print(f"[red]GET /stats: {error}[/]")
        raise typer.Exit(1) from error


def render(figures: Stats, out: Console) -> None:
    statuses = figures.statuses
    overview = Table("stored", "queued", "failed", "processed by workers", "mean lag", "p95 lag")
    overview.add_row(
        f"{statuses.stored:,}",
        "-" if statuses.queued is None else f"{statuses.queued:,}",
        f"{statuses.failed:,}",
        "-" if figures.workers is None else f"{figures.workers.documents_processed:,}",
        _seconds(figures.lag.mean_seconds if figures.lag else None),
        _seconds(figures.lag.p95_seconds if figures.lag else None, bound=True),
    )
    out.print(overview)
    categories = Table("category", "documents", title="Documents per category")
    for category, count in figures.categories.items():
        categories.add_row(category, f"{count:,}")
    queues = Table("queue", "messages", title="Queues")
    for queue, depth in figures.queues.items():
        queues.add_row(queue, f"{depth:,}")
    throughput = Table("minute (UTC)", "documents stored", title="Throughput")
    for entry in figures.throughput_per_minute:
        throughput.add_row(f"{entry.minute:%H:%M}", f"{entry.documents:,}")
    for table in (categories, queues, throughput, _drift(figures.drift)):
        out.print(table)


def _drift(drift: Drift) -> Table:
    table = Table(
        "model",
        "classified",
        "mean confidence",
        f"< {drift.low_confidence_threshold:g}",
        "labels",
        "agreeing",
        title=f"Drift (labels: each model's newest {drift.agreement_window})",
    )
    for model in drift.models:
        table.add_row(
            model.model_version,
            f"{model.documents:,}",
            _share(model.mean_confidence),
            _share(model.low_confidence_share),
            f"{model.labels:,}",
            _share(model.agreement),
        )
    return table


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _seconds(value: float | None, *, bound: bool = False) -> str:
    if value is None:
        return "-"
    return f"{'≤ ' if bound else ''}{value:.3f} s"
