"""`/dashboard`: one static page whose script polls `/stats` and `/failures`.

The page and its files carry no data, so they are served like the health checks (public unless
PUBLIC_ENDPOINTS leaves `dashboard` out); the script sends the API key the user types in. A strict
Content-Security-Policy allows only these files: no inline script, no other origin.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from fastapi import APIRouter, HTTPException, Response, status

from docingest.api.auth import Scope, require_scope

router = APIRouter(
    prefix="/dashboard",
    tags=["operations"],
    dependencies=[require_scope(Scope.READ, public_if="dashboard")],
)

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_FILES: Final = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


@router.get("", response_class=Response, responses={200: {"content": {"text/html": {}}}})
def page() -> Response:
    """The dashboard: ingestion rate, lag, queues, categories, latest failures, live."""
    return _static("dashboard.html")


@router.get("/{name}", response_class=Response, include_in_schema=False)
def asset(name: str) -> Response:
    if name not in _FILES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Not found")
    return _static(name)


def _static(name: str) -> Response:
    body = resources.files("docingest").joinpath("static", name).read_bytes()
    return Response(
        body,
        media_type=_FILES[name],
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )
