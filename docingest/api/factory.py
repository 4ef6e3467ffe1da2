"""Application factory: wires the broker, the enqueuer and the database into FastAPI."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio.to_thread
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry.trace import TracerProvider

from docingest.api.auth import install_security
from docingest.api.errors import install_error_handlers
from docingest.api.hotpath import Endpoint, HotRoute, direct_call, find_route
from docingest.api.limits import BodySizeLimit
from docingest.api.openapi import describe_common_answers, extend_openapi
from docingest.api.routes import (
    changes,
    dashboard,
    documents,
    failures,
    health,
    labels,
    models,
    review,
    stats,
    webhooks,
)
from docingest.api.routes import metrics as metrics_api
from docingest.api.routing import RequestCheck
from docingest.connections import Connections, connect
from docingest.observe import tracing
from docingest.observe.http_metrics import RequestMetrics
from docingest.observe.logs import configure_logging
from docingest.queue import BrokerUnavailableError
from docingest.queue.enqueue import Enqueuer, Limits
from docingest.settings import Settings, get_settings

ROUTERS = (
    documents.router,
    labels.router,
    changes.router,
    webhooks.router,
    failures.router,
    models.router,
    health.router,
    metrics_api.router,
    stats.router,
    dashboard.router,
    review.router,
)


def _check_durability(connections: Connections) -> None:
    """At start-up, so that a broker that can lose accepted documents is logged at once (a
    broker not reachable yet is checked at the first publish instead)."""
    with contextlib.suppress(BrokerUnavailableError):
        connections.queue.durability  # noqa: B018 (read for its check)


def _telemetry(provider: TracerProvider | None) -> TelemetryConfig:
    """FastAPI's request spans only when docingest traces (and with its provider, exporters
    and all): otherwise FastAPI's OpenTelemetry hooks ask the OpenTelemetry API, on every
    request, whether a provider is configured, ~5 % of an API process's CPU under single POSTs.
    Its metrics and logs stay off (/metrics and the logs say those things), and so do its spans
    of dependencies and endpoints: the request span is the one messages name."""
    if provider is None:
        return {"tracing": False, "metrics": False, "logs": False}
    return {
        "tracing": True,
        "tracer_provider": provider,
        "operation_spans": False,
        "metrics": False,
        "logs": False,
        "auto_configure": False,
    }


def create_app(settings: Settings | None = None, *, owns_process: bool = False) -> FastAPI:
    """`owns_process`: the app is all its process runs (`docingest.api:app`, which uvicorn
    serves), so what it holds once started can be frozen out of the garbage collector's sight."""
    settings = settings or get_settings()
    configure_logging(settings)
    tracer_provider = tracing.configure("docingest-api", settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connections = connect(settings)
        app.state.settings = settings
        app.state.connections = connections
        app.state.engine = connections.engine
        app.state.metrics_registry = metrics_api.scrape_registry(connections)
        app.state.enqueuer = Enqueuer(
            connections.queue,
            connections.ledger,
            Limits(
                max_batch=settings.enqueue_max_batch,
                max_message_bytes=settings.enqueue_max_message_bytes,
                linger_seconds=settings.enqueue_linger_ms / 1000,
                max_queued=settings.max_queued_documents,
                max_queued_bytes=settings.max_queued_bytes,
                timeout_seconds=settings.broker_timeout_seconds,
            ),
            traced=tracer_provider is not None,
        )
        await anyio.to_thread.run_sync(_check_durability, connections)
        if owns_process:
            # The imported modules and the app live as long as the process: out of the
            # collector's sight, a full collection no longer stops every request for 150-200 ms
            # of CPU (measured: it set the p99). Not done in a process that runs other things
            # (tests), whose garbage alive at that moment would never be collected.
            gc.freeze()
        try:
            yield
        finally:
            await app.state.enqueuer.close()
            connections.close()

    app = FastAPI(
        title="docingest",
        summary="Accepts text documents, classifies them in the background, stores the result.",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=_telemetry(tracer_provider),
    )
    for router in ROUTERS:
        app.include_router(router)
    # Middleware added first runs innermost: the hot route right above the routing layers, then
    # the 405/NUL check before it; the body limit and the security gate run before both.
    # Derived from the route as the app serves it; HotPathError here if it cannot serve it.
    hot_path = documents.router.prefix
    hot_route = find_route(app.routes, hot_path, "POST")
    hot_call: Endpoint = direct_call(hot_route)
    if tracer_provider is not None:
        hot_call = tracing.naming_span(hot_call, "POST", hot_path)
    app.add_middleware(HotRoute, route=hot_route, method="POST", call=hot_call)
    app.add_middleware(RequestCheck, routes=app.routes)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        timeout_seconds=settings.body_timeout_seconds,
        max_buffered_bytes=settings.max_buffered_bytes,
        retry_after_seconds=settings.retry_after_seconds,
    )
    install_error_handlers(app, retry_after_seconds=settings.retry_after_seconds)
    install_security(app, settings, ndjson_paths=documents.NDJSON_PATHS)
    app.add_middleware(RequestMetrics)  # added last: outermost, it sees every answer
    describe_common_answers(app)
    extend_openapi(app, partial(documents.describe_limits, settings=settings))
    return app
