"""What may wait is bounded by documents and by bytes; a message by documents and by bytes; and
ingestion does not share its threads with slow routes."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import orjson
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text

from docingest.api import create_app
from docingest.db import make_engine
from docingest.queue.redis import QueueKeys
from docingest.settings import Settings

KEYS = QueueKeys.of("documents")


def test_reposting_one_id_ends_in_429_once_enough_bytes_wait(settings: Settings) -> None:
    """The pending set counts one id however often it is sent: bytes are counted too."""
    settings.max_queued_bytes = 400_000
    document = {"id": str(uuid.uuid4()), "content": "word " * 4_000}
    statuses: list[int] = []
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 20
        while 429 not in statuses and time.monotonic() < deadline:
            statuses.append(client.post("/documents", json=document).status_code)
            time.sleep(0.02)
        refused = client.post("/documents", json=document) if statuses[-1] == 429 else None
    assert statuses[-1] == 429, f"never refused after {len(statuses)} posts of one id"
    assert set(statuses[:-1]) == {202}
    assert refused is not None
    assert "bytes are waiting" in refused.json()["detail"]


def test_messages_are_bounded_by_bytes_in_bulk_and_in_group_commit(
    settings: Settings, redis_url: str
) -> None:
    settings.enqueue_max_message_bytes = 100_000
    big = "word " * 6_000  # 30,000 bytes
    with TestClient(create_app(settings)) as client:
        assert client.post("/documents/bulk", json=[{"content": big}] * 20).status_code == 202
        with ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(lambda _: client.post("/documents", json={"content": big}), range(32))
            )
    assert {answer.status_code for answer in answers} == {202}
    bodies = redis.Redis.from_url(redis_url).hvals(KEYS.messages)
    sizes = [
        sum(len(doc["content"].encode()) for doc in orjson.loads(body)["args"][0])
        for body in bodies
    ]
    assert sum(len(orjson.loads(body)["args"][0]) for body in bodies) == 52
    assert max(sizes) <= 100_000, sizes


def test_slow_synchronous_routes_do_not_stall_ingestion(
    settings: Settings, postgres_url: str
) -> None:
    """Every thread of the shared pool waits on a locked table (GET /stats): a POST still
    answers at once, because the enqueuer has threads of its own."""
    settings.database_url = postgres_url
    engine = make_engine(postgres_url)
    locker = engine.connect()
    transaction = locker.begin()
    locker.execute(text("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE"))
    stalled: list[int] = []
    try:
        with TestClient(create_app(settings)) as client:

            def slow() -> None:
                stalled.append(client.get("/stats").status_code)

            readers = [threading.Thread(target=slow, daemon=True) for _ in range(60)]
            for reader in readers:
                reader.start()
            time.sleep(1.0)  # all of the pool's 40 threads now wait on the lock
            started = time.perf_counter()
            answer = client.post("/documents", json={"content": "not stalled"})
            seconds = time.perf_counter() - started
            transaction.rollback()
            for reader in readers:
                reader.join(30)
    finally:
        locker.close()
        engine.dispose()
    assert answer.status_code == 202
    assert seconds < 3, f"the POST waited {seconds:.1f} s behind the locked /stats"
    assert len(stalled) == 60
