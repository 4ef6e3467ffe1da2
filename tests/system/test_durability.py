"""What a 202 promises when the broker or the disk misbehaves: a lost reply is not called a
refusal, Redis's fsync is waited for where it is not immediate, SQLite commits are synced."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from docingest.api import create_app
from docingest.embedded import EmbeddedRedis, wait_until
from docingest.queue import redis as queue_redis
from docingest.queue.base import PublishUncertainError
from docingest.queue.messages import ingest_message
from docingest.queue.names import DOCUMENTS_QUEUE
from docingest.queue.redis import RedisQueue
from tests.helpers import UNAMBIGUOUS, make_settings


@pytest.fixture
def everysec_redis(tmp_path: Path) -> EmbeddedRedis:
    server = EmbeddedRedis(tmp_path / "everysec", appendfsync="everysec")
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


def test_with_appendfsync_everysec_each_202_waits_for_the_fsync(
    sqlite_url: str, everysec_redis: EmbeddedRedis, model_path: Path, tmp_path: Path
) -> None:
    settings = make_settings(sqlite_url, everysec_redis.url, model_path, tmp_path)
    with TestClient(create_app(settings)) as client:
        durability = client.get("/ready").json()["broker_durability"]
        assert "WAITAOF" in durability
        started = time.perf_counter()
        for n in range(10):
            assert (
                client.post(
                    "/documents", json={"content": f"{UNAMBIGUOUS['tech']} {n}"}
                ).status_code
                == 202
            )
        seconds = (time.perf_counter() - started) / 10
    calls = redis.Redis.from_url(everysec_redis.url).info("commandstats")["cmdstat_waitaof"][
        "calls"
    ]
    assert calls >= 10
    print(f"appendfsync everysec: {seconds * 1000:.0f} ms per single POST, WAITAOF included")


def test_a_redis_without_persistence_is_reported(
    sqlite_url: str, everysec_redis: EmbeddedRedis, model_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    redis.Redis.from_url(everysec_redis.url).config_set("appendonly", "no")
    settings = make_settings(sqlite_url, everysec_redis.url, model_path, tmp_path)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["broker_durability"].startswith("none: appendonly is off")
    assert "the broker's Redis can lose accepted documents" in capsys.readouterr().err


def _queue_on(server: EmbeddedRedis, tmp_path: Path) -> RedisQueue:
    return RedisQueue(make_settings("sqlite://", server.url, tmp_path / "m.skops", tmp_path))


def _one_message() -> list[Any]:
    document = {"id": str(uuid.uuid4()), "content": "x", "version": 1}
    return [ingest_message([document])]


def test_a_redis_hiding_config_without_an_append_only_file_is_not_called_a_refusal(
    tmp_path: Path,
) -> None:
    """Managed Redis: CONFIG renamed away, no append-only file. WAITAOF would be refused after
    EXEC ran; the queue must find out before (its probe) and must never answer "nothing was
    accepted" for messages it queued."""
    options = ("--appendonly", "no", "--rename-command", "CONFIG", "")
    with EmbeddedRedis(tmp_path / "managed", options=options) as server:
        queue = _queue_on(server, tmp_path)
        assert queue.durability.startswith("none: appendonly is off")
        queue.publish(_one_message())
        assert redis.Redis.from_url(server.url).llen(f"dramatiq:{DOCUMENTS_QUEUE}") == 1


def test_an_append_only_file_turned_off_between_checks_still_gives_a_202(
    everysec_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """WAITAOF chosen, then the server's AOF turned off: the messages were queued by EXEC, so the
    publish succeeds, and the durability is read again at once."""
    queue = _queue_on(everysec_redis, tmp_path)
    assert "WAITAOF" in queue.durability
    redis.Redis.from_url(everysec_redis.url).config_set("appendonly", "no")
    queue.publish(_one_message())
    assert queue.durability.startswith("none: appendonly is off")
    assert redis.Redis.from_url(everysec_redis.url).llen(f"dramatiq:{DOCUMENTS_QUEUE}") == 1


def test_publishing_keeps_its_connection_until_waitaof_answered(
    everysec_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """WAITAOF runs on the connection that wrote, which no other thread may be handed before
    WAITAOF's reply is read: otherwise two threads' replies cross. Threads publishing while
    others read depths from the same queue see only their own replies."""
    queue = _queue_on(everysec_redis, tmp_path)
    errors: list[BaseException] = []
    deadline = time.monotonic() + 3

    def publish() -> None:
        while time.monotonic() < deadline:
            queue.publish(_one_message())

    def read() -> None:
        while time.monotonic() < deadline:
            assert set(queue.depths()) >= {DOCUMENTS_QUEUE}

    def run(work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(w,)) for w in [publish, read] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    pool = queue._client.connection_pool
    assert len(pool._in_use_connections) == 0


def test_the_durability_is_read_again_after_its_interval(
    everysec_redis: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = _queue_on(everysec_redis, tmp_path)
    assert "WAITAOF" in queue.durability
    redis.Redis.from_url(everysec_redis.url).config_set("appendfsync", "always")
    assert "WAITAOF" in queue.durability  # within the interval: the reading is kept
    monkeypatch.setattr(queue_redis, "DURABILITY_CHECK_SECONDS", 0.0)
    assert queue.durability == "append-only file, fsync always"


def test_redis_min_replicas_waits_for_the_replica_and_says_when_it_did_not_confirm(
    tmp_path: Path,
) -> None:
    """REDIS_MIN_REPLICAS=1: a 202 means the replica's append-only file holds the messages, so
    a failover to it loses none; a replica that does not confirm in time is "may or may not"
    (queued on the primary), never "nothing was accepted" and never a silent 202."""
    with (
        EmbeddedRedis(tmp_path / "primary") as primary,
        EmbeddedRedis(tmp_path / "replica") as replica,
    ):
        replica_client = redis.Redis.from_url(replica.url)
        replica_client.replicaof("127.0.0.1", primary.port)
        primary_client = redis.Redis.from_url(primary.url)

        def replica_confirms() -> bool:
            """In sync and confirming: a replica that has just synced rewrites its append-only
            file first, and confirmed nothing for over a second on a busy CI machine."""
            primary_client.set("probe", "1")
            return int(primary_client.execute_command("WAITAOF", 0, 1, 200)[1]) >= 1

        wait_until(replica_confirms, 30, "the replica in sync and confirming writes")
        # The replica fsyncs each write before it confirms: beside the slow tier's other tests
        # (PostgreSQL, Redis and RabbitMQ fsyncing too) that took over 800 ms in two CI runs.
        settings = make_settings(
            "sqlite://", primary.url, tmp_path / "m.skops", tmp_path,
            redis_min_replicas=1, broker_timeout_seconds=5.0,
        )  # fmt: skip
        queue = RedisQueue(settings)
        assert queue.durability.endswith("1 replica(s) hold each message before its 202")
        queue.publish(_one_message())
        assert replica_client.llen(f"dramatiq:{DOCUMENTS_QUEUE}") == 1  # already, not eventually
        replica_client.replicaof("NO", "ONE")  # a replica gone: nobody confirms
        with pytest.raises(PublishUncertainError, match="0 of the 1 replicas"):
            queue.publish(_one_message())
        assert redis.Redis.from_url(primary.url).llen(f"dramatiq:{DOCUMENTS_QUEUE}") == 2
