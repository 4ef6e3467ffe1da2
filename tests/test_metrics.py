"""GET /metrics on a real broker and database: the API's requests, the workers' figures after
ingestion through a real worker process, queue depths; and /ready turning 503 without Redis."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from docingest.api import create_app
from docingest.connections import Connections
from docingest.db import migrate
from docingest.embedded import EmbeddedRedis, wait_until
from docingest.observe.collector import (
    WORKER_LAST_SEEN,
    WORKER_SEEN_RETENTION_SECONDS,
    DeploymentCollector,
    histogram_family,
)
from docingest.observe.metrics_store import MetricsStore, RedisMetricsStore, SqlMetricsStore
from docingest.observe.worker_metrics import (
    BATCH_SIZE,
    CONFIDENCE,
    LAG_SECONDS,
    PROCESSED,
    WorkerMetrics,
)
from tests.faults import Processes, new_documents, service_env
from tests.helpers import UNAMBIGUOUS, make_settings


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    page: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return page.get((name, frozenset(labels.items())), 0.0)


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


def flushing_often(redis_url: str, model_path: Path, tmp_path: Path) -> dict[str, str]:
    """The service on a SQLite database of the test's, workers flushing metrics every 0.2 s."""
    database_url = f"sqlite:///{tmp_path / 'docingest.db'}"
    migrate(database_url)
    return service_env(
        database_url=database_url,
        broker_url=redis_url,
        model_path=model_path,
        data_dir=tmp_path,
        METRICS_FLUSH_SECONDS="0.2",
    )


def test_worker_metrics_move_after_ingestion_through_a_real_worker(
    redis_url: str, model_path: Path, tmp_path: Path, procs: Processes
) -> None:
    procs.env = flushing_often(redis_url, model_path, tmp_path)
    api = procs.api()
    procs.worker(processes=1, threads=1)
    documents = new_documents(40, "metrics")
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        assert client.post("/documents/bulk", json=documents).status_code == 202

        def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            return samples(client.get("/metrics").text)

        wait_until(lambda: value(scrape(), f"{PROCESSED.name}_total") >= 40, 60, "worker metrics")
        time.sleep(0.5)  # the last flush of the message counter
        page = scrape()

        stats = subprocess.run(
            [sys.executable, "-m", "docingest", "stats", "--url", api.base_url, "--json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    assert value(page, f"{PROCESSED.name}_total") == 40
    assert value(page, "docingest_worker_documents_failed_total") == 0
    assert value(page, "docingest_worker_messages_total", outcome="ok") >= 1
    assert value(page, f"{BATCH_SIZE.name}_sum") == 40
    assert value(page, f"{LAG_SECONDS.name}_count") == 40
    confidences = {
        name: total
        for (name, labels), total in page.items()
        if name.startswith(CONFIDENCE.name) and dict(labels).get("model_version")
    }
    assert confidences[f"{CONFIDENCE.name}_count"] == 40  # one model, its version as label
    assert 0.2 * 40 < confidences[f"{CONFIDENCE.name}_sum"] <= 40
    assert 0 < value(page, f"{LAG_SECONDS.name}_sum") < 40 * 60
    assert value(page, "docingest_worker_classification_seconds_count") >= 1
    assert value(page, "docingest_worker_database_seconds_count") >= 1
    assert value(page, "docingest_queue_depth", queue="documents") == 0
    assert value(page, "docingest_queue_pending_documents") == 0
    assert '"documents_processed": 40' in stats.stdout
    assert '"stored": 40' in stats.stdout


def test_ready_answers_503_while_redis_is_stopped(
    database_url: str, model_path: Path, tmp_path: Path
) -> None:
    own_redis = EmbeddedRedis(tmp_path / "own-redis")
    own_redis.start()
    try:
        settings = make_settings(
            database_url, own_redis.url, model_path, tmp_path, broker_timeout_seconds=1
        )
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            assert client.get("/ready").json()["broker"] == "ok"
            own_redis.stop()
            ready = client.get("/ready")
            assert ready.status_code == 503
            assert ready.json() == {
                "broker": "unreachable",
                "ledger": "unreachable",
                "database": "ok",
            }
            # The API's own metrics are still served; the Redis-held ones are left out.
            scraped = client.get("/metrics")
            assert scraped.status_code == 200
            assert "docingest_http_request_duration_seconds_count" in scraped.text
            assert "docingest_queue_depth" not in scraped.text
            own_redis.start()
            wait_until(lambda: client.get("/ready").status_code == 200, 30, "ready again")
    finally:
        own_redis.stop()


def seen_workers(page: str) -> dict[str, float]:
    return {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == WORKER_LAST_SEEN
    }


def test_each_worker_process_is_seen_until_it_stops_and_a_killed_one_stays_behind(
    redis_url: str, model_path: Path, tmp_path: Path, procs: Processes
) -> None:
    """A worker stopped cleanly leaves /metrics; one killed stays, its time no longer moving,
    which is what the WorkerMissing alert looks for."""
    procs.env = flushing_often(redis_url, model_path, tmp_path)
    api = procs.api()

    def seen() -> dict[str, float]:
        return seen_workers(httpx.get(f"{api.base_url}/metrics", timeout=10).text)

    stopped, killed = procs.worker(processes=2), procs.worker(processes=1)
    wait_until(lambda: len(seen()) == 3, 60, "three worker processes seen")
    assert all(abs(at - time.time()) < 10 for at in seen().values())
    stopped.stop()
    wait_until(lambda: len(seen()) == 1, 30, "the stopped worker's processes gone")
    killed.kill()
    [last] = seen().values()
    time.sleep(1)
    assert list(seen().values()) == [last]


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
