"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from docingest.api.auth import Scope, require_scope

router = APIRouter(tags=["health"])


@router.get("/health", dependencies=[require_scope(Scope.READ, public_if="health")])
def health() -> dict[str, str]:
    """The process is alive; says nothing of its dependencies."""
    return {"status": "ok"}


@router.get("/ready", dependencies=[require_scope(Scope.READ, public_if="ready")])
async def ready(request: Request, response: Response) -> dict[str, str]:
    """Broker and database reachable: `200`, else `503` naming the one that failed."""
    checks = {
        "broker": _broker_reachable,
        "database": _database_reachable,
    }
    results = {
        name: "ok" if await run_in_threadpool(check, request) else "unreachable"
        for name, check in checks.items()
    }
    if "unreachable" in results.values():
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return results


def _broker_reachable(request: Request) -> bool:
    client = getattr(request.app.state.broker, "client", None)
    try:
        return bool(client.ping()) if client is not None else True
    except Exception:
        return False


def _database_reachable(request: Request) -> bool:
    try:
        with request.app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
