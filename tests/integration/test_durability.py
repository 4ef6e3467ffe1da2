"""What a 202 promises when the broker or the disk misbehaves: a lost reply is not called a
refusal, Redis's fsync is waited for where it is not immediate, SQLite commits are synced."""

from __future__ import annotations

import uuid

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text

from docingest.api import create_app
from docingest.connections import connected
from docingest.model.classifier import Classifier
from docingest.settings import Settings
from docingest.worker.resources import resources
from tests.helpers import UNAMBIGUOUS, drain
from tests.proxy import DelayingProxy


def test_a_lost_reply_is_answered_as_unknown_and_the_documents_are_not_forgotten(
    settings: Settings, redis_server_url: str, redis_url: str, classifier: Classifier
) -> None:
    """EXEC runs, its reply arrives after BROKER_TIMEOUT_SECONDS: the API must not say that
    nothing was accepted, and must give the ids to retry with."""
    proxy = DelayingProxy(redis.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"])
    try:
        settings.broker_url = f"redis://127.0.0.1:{proxy.port}/0"
        settings.ledger_url = redis_url  # only the queue's replies are late
        settings.broker_timeout_seconds = 1
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            assert client.post("/documents", json={"content": "warm-up"}).status_code == 202
            document_id = str(uuid.uuid4())
            proxy.holding.set()
            answer = client.post(
                "/documents", json={"id": document_id, "content": UNAMBIGUOUS["tech"]}
            )
            proxy.holding.clear()
            assert answer.status_code == 503
            assert answer.headers["retry-after"] == str(settings.retry_after_seconds)
            assert "may or may not have been accepted" in answer.json()["detail"]
            assert answer.json()["ids"] == [document_id]
            assert client.get(f"/documents/{document_id}/status").json()["status"] == "queued"
            with connected(settings.model_copy(update={"broker_url": redis_url})) as connections:
                drain(connections, classifier)
            assert client.get(f"/documents/{document_id}/status").json()["status"] == "stored"
    finally:
        proxy.close()


def test_sqlite_commits_that_precede_an_acknowledgement_are_synced(
    sqlite_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's own engine, as `dramatiq docingest.worker.actors` makes it."""
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("BROKER_URL", redis_url)
    from docingest.settings import get_settings

    get_settings.cache_clear()
    resources.cache_clear()
    try:
        with resources().connections.engine.connect() as connection:
            assert connection.execute(text("PRAGMA synchronous")).scalar_one() == 2  # FULL
    finally:
        resources().connections.close()
        resources.cache_clear()
        get_settings.cache_clear()
