"""`GET /metrics`: Prometheus text format, the API's own metrics and the workers' and queue's."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from docingest.api.auth import Scope, require_scope
from docingest.api.deps import MetricsRegistryDep
from docingest.connections import Connections
from docingest.observe.collector import DeploymentCollector
from docingest.observe.http_metrics import api_collector_registry

router = APIRouter(tags=["operations"])


def scrape_registry(connections: Connections) -> CollectorRegistry:
    """What is read at each scrape: worker totals, queue depths, pending documents, labels'
    agreement."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        DeploymentCollector(
            connections.queue,
            connections.ledger,
            connections.metrics,
            connections.engine,
            connections.settings.agreement_window,
        )
    )
    return registry


@router.get(
    "/metrics",
    dependencies=[require_scope(Scope.READ, public_if="metrics")],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(registry: MetricsRegistryDep) -> Response:
    """Requests and latency of this API (of all API processes in multiprocess mode), the
    workers' documents, batches, timings and lag, and each queue's depth."""
    body = generate_latest(api_collector_registry()) + generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
