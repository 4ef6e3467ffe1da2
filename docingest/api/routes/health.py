"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.to_thread
from fastapi import APIRouter, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from docingest.api.auth import Scope, require_scope
from docingest.api.deps import ConnectionsDep
from docingest.api.openapi import RETRY_AFTER
from docingest.connections import Connections

router = APIRouter(tags=["health"])


@router.get("/health", dependencies=[require_scope(Scope.READ, public_if="health")])
def health() -> dict[str, str]:
    """The process is alive; says nothing of its dependencies."""
    return {"status": "ok"}


_NOT_READY = {
    "description": "Not ready: says which of broker, ledger and database is `unreachable`",
    "headers": RETRY_AFTER,
    "content": {
        "application/json": {
            "schema": {"type": "object", "additionalProperties": {"type": "string"}}
        }
    },
}


@router.get(
    "/ready",
    dependencies=[require_scope(Scope.READ, public_if="ready")],
    responses={503: _NOT_READY},
)
async def ready(connections: ConnectionsDep, response: Response) -> dict[str, str]:
    """Broker, ledger and database reachable: `200`, else `503` naming the one that failed
    (with `Retry-After`, as every 503). `broker_durability` says what a crash of the broker
    does to accepted documents."""
    checks = {
        "broker": connections.queue.ping,
        "ledger": connections.ledger.ping,
        "database": lambda: _select_one(connections),
    }
    timeout = connections.settings.broker_timeout_seconds
    results = {
        name: "ok" if await _answers_within(check, timeout) else "unreachable"
        for name, check in checks.items()
    }
    if "unreachable" in results.values():
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        response.headers["Retry-After"] = str(connections.settings.retry_after_seconds)
    else:
        results["broker_durability"] = await run_in_threadpool(lambda: connections.queue.durability)
    return results


async def _answers_within(check: Callable[[], object], seconds: float) -> bool:
    """A server behind a cut link answers nothing, not even an error: not waited for longer."""
    with anyio.move_on_after(seconds):
        return await anyio.to_thread.run_sync(_answers, check, abandon_on_cancel=True)
    return False


def _answers(check: Callable[[], object]) -> bool:
    try:
        check()
    except Exception:
        return False
    return True


def _select_one(connections: Connections) -> None:
    with connections.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
