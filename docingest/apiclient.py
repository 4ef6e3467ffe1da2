"""What the CLI commands that call the API share: the key they send, and quiet HTTP logs."""

from __future__ import annotations

import logging
import os

API_KEY_VARIABLE = "DOCINGEST_API_KEY"
# httpx logs every request at INFO; the CLI's user asked for documents sent or figures shown.
_HTTP_LOGGERS = ("httpx", "httpcore")


def api_key_from_env() -> str | None:
    return os.environ.get(API_KEY_VARIABLE) or None


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The service's API keys are Bearer tokens; without one the request goes unauthenticated."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def quiet_http_logs() -> None:
    """Keep the HTTP client's per-request lines out of a command's output; warnings still show.

    Called by the commands themselves, after the CLI configured logging as the service does,
    so that the service's own processes keep their logging untouched.
    """
    for name in _HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
