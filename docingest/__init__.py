"""docingest: web-queue-worker document ingestion (FastAPI, Dramatiq, scikit-learn, SQL).

`from docingest import Client, AsyncClient` gives the Python client (`docingest_client`, a
distribution of its own in clients/python that this one ships too), imported on first use:
every process of the service imports this package, none needs httpx's client classes loaded
for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docingest_client import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import docingest_client

        return getattr(docingest_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
