"""The Typer application every command module registers on, and the console they all print to."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from docingest.connections import Connections

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
    """Every command logs as the service does (LOG_FORMAT, LOG_LEVEL; docs/operations.md),
    once its settings are read; a setting that is not valid is a message and exit 2."""
    from pydantic import ValidationError

    from docingest.observe.logs import configure_logging
    from docingest.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as error:
        for problem in error.errors():
            name = str(problem["loc"][0]).upper() if problem["loc"] else "settings"
            console.print(
                f"[red]{escape(name)}={escape(repr(problem.get('input')))}: "
                f"{escape(problem['msg'])}[/]"
            )
        console.print("Settings come from the environment (docs/reference/configuration.md).")
        raise typer.Exit(2) from None
    configure_logging(settings)


@contextmanager
def database() -> Iterator[Engine]:
    """The database of DATABASE_URL for one command, its connections closed after it."""
    from docingest.db import make_engine
    from docingest.settings import get_settings

    engine = make_engine(get_settings().database_url)
    try:
        with database_errors():
            yield engine
    finally:
        engine.dispose()


@contextmanager
def deployment() -> Iterator[Connections]:
    """The environment's deployment (database, queue, ledger, metrics) for one command."""
    from docingest.connections import connected

    with database_errors(), connected() as connections:
        yield connections


@contextmanager
def database_errors() -> Iterator[None]:
    """A database that is unreachable, or has no docingest tables, is a message and exit 1,
    not a traceback: the usual cause is a command run with another DATABASE_URL than the
    service's, the embedded default (`var/docingest.db`) being relative to the folder."""
    from sqlalchemy.exc import DBAPIError

    from docingest.settings import get_settings

    try:
        yield
    except DBAPIError as error:
        lines = str(error.orig).strip().splitlines()
        reason = lines[0] if lines else str(error)
        console.print(
            f"[red]database {get_settings().masked_database_url()}: {escape(reason)}[/]\n"
            "Is DATABASE_URL the service's database, reachable and migrated (`docingest "
            "migrate`)? The default, sqlite:///var/docingest.db, is relative to the folder "
            "the command runs in."
        )
        raise typer.Exit(1) from error


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
