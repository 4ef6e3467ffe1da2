"""The client side: feeding files to a running service (`docingest send`) and reading them.

The Python client itself is `docingest_client` (clients/python); `from docingest.client import
Client` still gives it, and its errors, imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docingest_client import (
        ApiError,
        AsyncClient,
        Client,
        DocingestError,
        NotFoundError,
        UnavailableError,
    )

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "DocingestError",
    "NotFoundError",
    "UnavailableError",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import docingest_client

        return getattr(docingest_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
