"""GET /metrics on a real broker and database: the API's requests, the workers' figures after
ingestion through a real worker process, queue depths; and /ready turning 503 without Redis."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from fastapi.testclient import TestClient

from docingest.connections import Connections
from docingest.observe.collector import (
    WORKER_LAST_SEEN,
    WORKER_SEEN_RETENTION_SECONDS,
    DeploymentCollector,
    histogram_family,
)
from docingest.observe.metrics_store import MetricsStore, RedisMetricsStore, SqlMetricsStore
from docingest.observe.worker_metrics import BATCH_SIZE, PROCESSED, WorkerMetrics
from tests.helpers import UNAMBIGUOUS, samples, value


def test_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    before = samples(client.get("/metrics").text)
    document_id = client.post("/documents", json={"content": UNAMBIGUOUS["tech"]}).json()["id"]
    client.get(f"/documents/{document_id}")  # 404: not stored yet
    client.post("/documents", json={"content": ""})  # 422
    client.get(f"/no/such/path/{uuid.uuid4()}")
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "docingest_http_request_duration_seconds_count"
    assert grew(requests, method="POST", route="/documents", status="202") == 1
    assert grew(requests, method="POST", route="/documents", status="422") == 1
    assert grew(requests, method="GET", route="/documents/{document_id}", status="404") == 1
    assert grew(requests, method="GET", route="<unmatched>", status="404") == 1
    latency = "docingest_http_request_duration_seconds_bucket"
    assert grew(latency, method="POST", route="/documents", status="202", le="+Inf") == 1
    # Scraped with no worker having run: the families exist, at zero.
    assert value(after, "docingest_worker_documents_processed_total") == 0
    assert value(after, "docingest_queue_depth", queue="documents") == 1
    assert value(after, "docingest_queue_pending_documents") == 1


def test_worker_histograms_cumulate_bucket_counts(redis_url: str) -> None:
    """Observed in a worker, added up in the store, read back as Prometheus buckets."""
    recorded = WorkerMetrics()
    recorded.observe(BATCH_SIZE, [1, 3, 3, 500, 10_000])
    store = RedisMetricsStore(redis.Redis.from_url(redis_url))
    recorded.flush(store)
    family = histogram_family(BATCH_SIZE, store.read())
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets["1.0"] == 1
    assert buckets["2.0"] == 1
    assert buckets["5.0"] == 3
    assert buckets["500.0"] == 4
    assert buckets["+Inf"] == 5
    total = next(s.value for s in family.samples if s.name.endswith("_sum"))
    assert total == 1 + 3 + 3 + 500 + 10_000


@pytest.fixture(params=["redis", "sql"])
def metrics_store(request: pytest.FixtureRequest, connections: Connections) -> MetricsStore:
    if request.param == "redis":
        return connections.metrics
    return SqlMetricsStore(connections.engine)


def test_workers_seen_long_ago_are_forgotten_at_the_scrape(
    connections: Connections, metrics_store: MetricsStore
) -> None:
    now = time.time()
    long_ago = now - WORKER_SEEN_RETENTION_SECONDS - 1
    metrics_store.add({PROCESSED.name: 3})
    metrics_store.mark_seen("host:1", now - 5)
    metrics_store.mark_seen("host:1", now)  # set, not added
    metrics_store.mark_seen("host:2", long_ago)
    assert metrics_store.seen() == {"host:1": now, "host:2": long_ago}
    assert metrics_store.read() == {PROCESSED.name: 3}

    collector = DeploymentCollector(
        connections.queue, connections.ledger, metrics_store, connections.engine, 100
    )
    [family] = [f for f in collector.collect() if f.name == WORKER_LAST_SEEN]

    assert [(s.labels, s.value) for s in family.samples] == [({"worker": "host:1"}, now)]
    assert metrics_store.seen() == {"host:1": now}
    metrics_store.forget(["host:1"])
    assert metrics_store.seen() == {}
