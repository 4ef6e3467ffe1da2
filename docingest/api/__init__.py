"""The web tier: `uvicorn docingest.api:app` serves it.

Importing this package builds nothing: `app` is made on first access (PEP 562), so that a test,
a script or the CLI can import `docingest.api` without configuring logging or reading settings.
`create_app` builds an app for a given `Settings`.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from docingest.api.factory import create_app

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["app", "create_app"]


@cache
def _process_app() -> FastAPI:
    return create_app(owns_process=True)


def __getattr__(name: str) -> Any:
    if name == "app":
        return _process_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
