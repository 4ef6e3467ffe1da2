"""GET /stats and `docingest stats` on real Redis and SQL (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from docingest.cli import app
from docingest.connections import Connections
from docingest.documents.store import store_batch
from docingest.model.classifier import Classifier
from docingest.observe.stats import THROUGHPUT_MINUTES, quantile_bound
from docingest.observe.worker_metrics import LAG_SECONDS
from docingest.schemas import utcnow
from docingest.settings import get_settings
from tests.helpers import POISON, UNAMBIGUOUS, PoisonedClassifier, drain


def tombstone(category: str) -> dict[str, object]:
    """A deleted document's row: it keeps its category, and must not be counted."""
    now = utcnow()
    return {
        "id": uuid.uuid4(),
        "content": "",
        "category": category,
        "confidence": None,
        "alternatives": None,
        "model_version": None,
        "version": 1,
        "created_at": now,
        "updated_at": now,
        "deleted_at": now,
    }


def test_stats_follow_documents_from_queued_to_stored_or_failed(
    client: TestClient, connections: Connections, poisoned_classifier: PoisonedClassifier
) -> None:
    store_batch(connections.engine, [tombstone("tech")])
    texts = [UNAMBIGUOUS["tech"], UNAMBIGUOUS["tech"], UNAMBIGUOUS["sports"], POISON]
    assert client.post("/documents/bulk", json=[{"content": t} for t in texts]).status_code == 202

    waiting = client.get("/stats").json()
    assert waiting["statuses"] == {"stored": 0, "queued": 4, "failed": 0}
    assert waiting["queues"]["documents"] == 1
    assert set(waiting["queues"]) >= {"documents", "documents.DQ", "documents.XQ"}
    assert waiting["categories"] == {}

    drain(connections, poisoned_classifier)
    done = client.get("/stats").json()
    assert done["statuses"] == {"stored": 3, "queued": 0, "failed": 1}
    assert done["categories"] == {"sports": 1, "tech": 2}
    assert done["queues"]["documents"] == 0
    minutes = done["throughput_per_minute"]
    assert len(minutes) == THROUGHPUT_MINUTES
    assert sum(minute["documents"] for minute in minutes) == 3
    assert minutes == sorted(minutes, key=lambda minute: minute["minute"])
    # No worker process flushed figures to this Redis: the totals are there, at zero.
    assert done["workers"] == {"documents_processed": 0, "documents_failed": 0}
    assert done["lag"]["mean_seconds"] is None


def test_the_cli_prints_the_same_figures(
    monkeypatch: pytest.MonkeyPatch,
    client: TestClient,
    connections: Connections,
    engine: Engine,
    classifier: Classifier,
    database_url: str,
    redis_url: str,
) -> None:
    client.post("/documents", json={"content": UNAMBIGUOUS["politics"]})
    drain(connections, classifier)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BROKER_URL", redis_url)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        table = runner.invoke(app, ["stats"])
        as_json = runner.invoke(app, ["stats", "--json"])
    finally:
        get_settings.cache_clear()
    assert table.exit_code == 0, table.output
    assert "Documents per category" in table.output
    assert "politics" in table.output
    assert as_json.exit_code == 0, as_json.output
    figures = orjson.loads(as_json.stdout)
    assert figures["categories"] == client.get("/stats").json()["categories"] == {"politics": 1}


def test_the_cli_explains_an_unreachable_api() -> None:
    result = CliRunner().invoke(app, ["stats", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in result.output


def test_lag_quantiles_are_bucket_bounds() -> None:
    name = LAG_SECONDS.name
    values = {f"{name}|0.1": 50.0, f"{name}|1": 45.0, f"{name}|+Inf": 5.0, f"{name}|count": 100.0}
    assert quantile_bound(LAG_SECONDS, values, 0.5) == 0.1
    assert quantile_bound(LAG_SECONDS, values, 0.9) == 1.0
    assert quantile_bound(LAG_SECONDS, values, 0.99) is None
    assert quantile_bound(LAG_SECONDS, {}, 0.5) is None
