"""`docingest keys`: make API keys, and show which ones the service is configured with."""

from __future__ import annotations

from typing import Annotated

import typer

from docingest.cli.app import app, console
from docingest.keys import (
    ApiKey,
    Keyring,
    Scope,
    digest,
    generate_key,
    is_loopback,
    open_exposure,
)
from docingest.settings import Settings, get_settings

keys = typer.Typer(help="API keys: create one, list the configured ones.", no_args_is_help=True)
app.add_typer(keys, name="keys")


@keys.command()
def create(
    name: Annotated[str, typer.Argument(help="Who uses the key: shown in logs and metrics")],
    scope: Annotated[
        list[Scope],
        typer.Option(
            help="ingest, read, label or admin (admin implies the others); repeat for several"
        ),
    ],
    rate_limit_per_minute: Annotated[
        int | None, typer.Option(min=0, help="This key's own limit (keys file only)")
    ] = None,
) -> None:
    """Print a new random key once (stdout), and what to configure (stderr).

    The service keeps only the key's SHA-256: store the key itself in the client's secrets now,
    it cannot be shown again.
    """
    secret = generate_key()
    try:
        key = ApiKey(name, frozenset(scope), digest(secret), rate_limit_per_minute)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    print(secret)
    lines = [
        "",
        "The key above is shown once. Clients send it as `Authorization: Bearer <key>`;",
        "the CLI reads it from DOCINGEST_API_KEY. Configure the service with one of:",
        "",
    ]
    if rate_limit_per_minute is None:
        lines += ["an API_KEYS entry (entries are comma-separated):", key.env_entry(), ""]
    lines += ["a table of the API_KEYS_FILE:", key.toml_entry()]
    console.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)


@keys.command("list")
def list_keys() -> None:
    """The keys the service is configured with (names, scopes, limits; never digests)."""
    keyring = _keyring(get_settings())
    if keyring.open:
        console.print("no API key configured: open mode (loopback only)")
        return
    for key in keyring.keys:
        limit = "" if key.rate_limit_per_minute is None else f"  {key.rate_limit_per_minute}/min"
        print(f"{key.name}\t{'+'.join(sorted(key.scopes))}{limit}")


def refuse_open_exposure(settings: Settings, host: str) -> None:
    """Exit unless the keys are valid, and either some are configured or `host` is loopback
    (or ALLOW_OPEN_ACCESS says the operator means it)."""
    keyring = _keyring(settings)
    if problem := open_exposure(keyring, host, allowed=settings.allow_open_access):
        console.print(f"[red]{problem}[/]", highlight=False)
        raise typer.Exit(2)
    if not keyring.open:
        return
    if is_loopback(host):
        console.print(f"[yellow]open mode:[/] no API key configured; serving on {host} only")
    else:
        console.print(f"[red]open mode on {host}:[/] anyone who reaches it may ingest, read and "
                      "administer (ALLOW_OPEN_ACCESS=true)")  # fmt: skip


def _keyring(settings: Settings) -> Keyring:
    try:
        return Keyring.from_settings(settings)
    except (OSError, ValueError) as error:
        console.print(f"[red]invalid API key configuration:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
