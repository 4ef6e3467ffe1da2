"""`GET /metrics`: Prometheus text format, the API's own metrics and the workers' and queue's."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from docingest.api.auth import Scope, require_scope
from docingest.metrics import RedisCollector, api_registry

router = APIRouter(tags=["operations"])


def scrape_registry(broker: dramatiq.Broker) -> CollectorRegistry:
    """What is read from Redis at each scrape: worker totals, queue depths, pending documents."""
    registry = CollectorRegistry(auto_describe=False)
    if isinstance(broker, RedisBroker):
        registry.register(RedisCollector(broker.client, broker.namespace))
    return registry


@router.get(
    "/metrics",
    dependencies=[require_scope(Scope.READ, public_if="metrics")],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request) -> Response:
    """Requests and latency of this API (of all API processes in multiprocess mode), the
    workers' documents, batches, timings and lag, and each queue's depth."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    body = generate_latest(api_registry()) + generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
