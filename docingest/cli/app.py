"""The Typer application every command module registers on, and the console they all print to."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sqlalchemy import Engine

app = typer.Typer(
    help="docingest: accept documents over HTTP, classify them in the background, store them.",
    no_args_is_help=True,
    add_completion=False,
)
# Progress and messages go to stderr, so that stdout carries only data a script may pipe.
console = Console(stderr=True)
# httpx logs every request at INFO; the CLI's user asked for documents sent or figures shown.
_HTTP_LOGGERS = ("httpx", "httpcore")


@app.callback()
def configure() -> None:
    """Every command logs as the service does (LOG_FORMAT, LOG_LEVEL; docs/operations.md)."""
    from docingest.observe.logs import configure_logging
    from docingest.settings import get_settings

    configure_logging(get_settings())


@contextmanager
def database() -> Iterator[Engine]:
    """The database of DATABASE_URL for one command, its connections closed after it."""
    from docingest.db import make_engine
    from docingest.settings import get_settings

    engine = make_engine(get_settings().database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def quiet_http_logs() -> None:
    """Keep the HTTP client's per-request lines out of a command's output; warnings still show.

    Called by the commands that call the API, after the CLI configured logging as the service
    does, so that the service's own processes keep their logging untouched.
    """
    for name in _HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def failed(error: Exception) -> typer.Exit:
    """Say what went wrong in red and exit 1: `raise failed(error) from error`."""
    console.print(f"[red]{error}[/]")
    return typer.Exit(1)
