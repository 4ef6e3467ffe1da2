"""The Typer application every command module registers on, and the console they all print to."""

from __future__ import annotations

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


@app.callback()
def configure() -> None:
    """Every command logs as the service does (LOG_FORMAT, LOG_LEVEL; docs/operations.md)."""
    from docingest.logs import configure_logging
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
