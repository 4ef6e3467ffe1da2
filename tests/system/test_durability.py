"""What a 202 promises when the broker or the disk misbehaves: a lost reply is not called a
refusal, Redis's fsync is waited for where it is not immediate, SQLite commits are synced."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from docingest.api import create_app
from docingest.embedded import EmbeddedRedis
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
