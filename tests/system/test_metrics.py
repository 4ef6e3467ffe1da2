"""GET /metrics on a real broker and database: the API's requests, the workers' figures after
ingestion through a real worker process, queue depths; and /ready turning 503 without Redis."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from docingest.api import create_app
from docingest.db import migrate
from docingest.embedded import EmbeddedRedis, wait_until
from docingest.observe.collector import (
    WORKER_LAST_SEEN,
)
from docingest.observe.worker_metrics import (
    BATCH_SIZE,
    CONFIDENCE,
    LAG_SECONDS,
    PROCESSED,
)
from tests.faults import Processes, new_documents, service_env
from tests.helpers import make_settings, samples, value


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
    # An operator's look at a worker that seems stuck: its threads' stacks, the process alive.
    killed.dump_stacks()
    assert "most recent call first" in killed.log_path.read_text()
    assert killed.alive()
    assert len(seen()) == 1
    killed.kill()
    [last] = seen().values()
    time.sleep(1)
    assert list(seen().values()) == [last]
