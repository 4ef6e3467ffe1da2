"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from docingest.api.auth import Scope, require_scope
from docingest.api.deps import ConnectionsDep
from docingest.connections import Connections

router = APIRouter(tags=["health"])


@router.get("/health", dependencies=[require_scope(Scope.READ, public_if="health")])
def health() -> dict[str, str]:
    """The process is alive; says nothing of its dependencies."""
    return {"status": "ok"}


@router.get("/ready", dependencies=[require_scope(Scope.READ, public_if="ready")])
async def ready(connections: ConnectionsDep, response: Response) -> dict[str, str]:
    """Broker, ledger and database reachable: `200`, else `503` naming the one that failed.
    `broker_durability` says what a crash of the broker does to accepted documents."""
    checks = {
        "broker": connections.queue.ping,
        "ledger": connections.ledger.ping,
        "database": lambda: _select_one(connections),
    }
    results = {
        name: "ok" if await run_in_threadpool(_answers, check) else "unreachable"
        for name, check in checks.items()
    }
    if "unreachable" in results.values():
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    else:
        results["broker_durability"] = await run_in_threadpool(lambda: connections.queue.durability)
    return results


def _answers(check: Callable[[], object]) -> bool:
    try:
        check()
    except Exception:
        return False
    return True


def _select_one(connections: Connections) -> None:
    with connections.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
