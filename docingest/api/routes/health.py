"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from docingest.api.auth import Scope, require_scope
from docingest.api.deps import ConnectionsDep
from docingest.api.errors import schema_missing
from docingest.api.openapi import RETRY_AFTER
from docingest.connections import Connections
from docingest.db import schema_revisions
from docingest.model.registry import active_version
from docingest.observe.metrics_store import MetricsStoreUnavailableError
from docingest.observe.worker_metrics import MODEL_REFUSED

router = APIRouter(tags=["health"])

# Alembic's record of the schema's revision: no table, or no row (downgraded to the base).
_VERSION = text("SELECT version_num FROM alembic_version")


@router.get("/health", dependencies=[require_scope(Scope.READ, public_if="health")])
def health() -> dict[str, str]:
    """The process is alive; says nothing of its dependencies."""
    return {"status": "ok"}


_NOT_READY = {
    "description": "Not ready: says which of broker, ledger and database is `unreachable`, or "
    "that the database is `not migrated`",
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
async def ready(
    request: Request, connections: ConnectionsDep, response: Response
) -> dict[str, str]:
    """Broker, ledger and database reachable, and the database migrated: `200`, else `503`
    naming the one that failed (with `Retry-After`, as every 503). `broker_durability` says
    what a crash of the broker does to accepted documents."""
    probes: Probes = getattr(request.app.state, "readiness_probes", None) or Probes()
    request.app.state.readiness_probes = probes
    checks = {
        "broker": connections.queue.ping,
        "ledger": connections.ledger.ping,
        "database": lambda: _migrated(connections),
    }
    timeout = connections.settings.broker_timeout_seconds
    answers = await asyncio.gather(
        *(probes.answers_within(name, check, timeout) for name, check in checks.items())
    )
    results = dict(zip(checks, answers, strict=True))
    if any(answer != "ok" for answer in answers):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        response.headers["Retry-After"] = str(connections.settings.retry_after_seconds)
    else:
        results["broker_durability"] = await run_in_threadpool(lambda: connections.queue.durability)
        results["model"] = await run_in_threadpool(_model_state, connections)
    return results


def _model_state(connections: Connections) -> str:
    """Whether workers could load the active model (they count each refusal): a refused model
    does not stop ingestion, the workers serve an earlier one, but someone must know."""
    try:
        version = active_version(connections.engine)
        refused = connections.metrics.read().get(f"{MODEL_REFUSED.name}|{version}", 0)
    except (SQLAlchemyError, MetricsStoreUnavailableError):
        return "unknown"
    if version is None:
        return "none active yet"
    if refused:
        return f"{version} refused by workers ({refused:g} times): they serve an earlier model"
    return f"{version} active"


class Probes:
    """One thread per check at most, whatever the number of calls: a server behind a cut link
    answers nothing, not even an error, and its check blocks until the socket times out. A call
    that finds the check still running waits for that one instead of starting another, so a
    stall costs one thread and one connection per check, not one per call (`/ready` is public)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="ready")
        self._running: dict[str, Future[str]] = {}

    async def answers_within(self, name: str, check: Callable[[], object], seconds: float) -> str:
        running = self._running.get(name)
        if running is None or running.done():
            running = self._running[name] = self._executor.submit(_answers, check)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)), seconds)
        except TimeoutError:
            return "unreachable"


def _answers(check: Callable[[], object]) -> str:
    """`ok`, `unreachable` when the check raised, or what it says is wrong."""
    try:
        problem = check()
    except Exception:
        return "unreachable"
    return "ok" if problem is None else str(problem)


def _migrated(connections: Connections) -> str | None:
    """None when the database holds docingest's schema at this code's revision or a newer one
    (Alembic's version table), else why not: never migrated, or behind the code, requests
    would fail on what is missing."""
    try:
        with connections.engine.connect() as connection:
            version = connection.execute(_VERSION).scalar()
    except DBAPIError as error:
        if not schema_missing(error):
            raise
        version = None
    if version is None:
        return "not migrated: run `docingest migrate`"
    head, known = schema_revisions()
    if version != head and version in known:
        return f"not migrated: at {version}, this code needs {head}: run `docingest migrate`"
    return None
