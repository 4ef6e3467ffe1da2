"""The Typer application every command module registers on, and the console they all print to."""

from __future__ import annotations

import typer
from rich.console import Console

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
