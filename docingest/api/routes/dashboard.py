"""`/dashboard`: one static page whose script polls `/stats` and `/failures` (`pages.py`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from docingest.api.auth import Scope, require_scope
from docingest.api.pages import page_file

router = APIRouter(
    prefix="/dashboard",
    tags=["operations"],
    dependencies=[require_scope(Scope.READ, public_if="dashboard")],
)


@router.get("", response_class=Response, responses={200: {"content": {"text/html": {}}}})
def page() -> Response:
    """The dashboard: ingestion rate, lag, queues, categories, drift, latest failures, live."""
    return page_file("dashboard", "dashboard.html")


@router.get("/{name}", response_class=Response, include_in_schema=False)
def asset(name: str) -> Response:
    return page_file("dashboard", name)
