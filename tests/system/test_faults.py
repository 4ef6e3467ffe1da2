"""Fault injection with real processes: kill -9 a worker, restart Redis, stop PostgreSQL, race
updates, take the broker away. Each test prints a FIGURES line (sent, accepted, stored,
duplicated, lost) and asserts it; see docs/reliability.md for what each one proves.

The API and the workers run as the Procfile runs them (`python -m docingest api|worker`), each in
its own process group; the `procs` fixture stops every one of them, even when a test fails, and
prints their logs (visible on failure, or with `pytest -s`).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from docingest.db import migrate
from docingest.embedded import EmbeddedPostgres, EmbeddedRedis, wait_until
from docingest.settings import Settings
from tests.faults import (
    Feeder,
    Processes,
    Sent,
    assert_nothing_lost,
    broker_state,
    count_rows,
    dead_letters,
    drop_ballast,
    new_documents,
    pending_documents,
    post_bulk,
    post_during_background_fsync,
    post_one,
    queued_messages,
    service_env,
    unacked_messages,
    wait_for_figures,
)
from tests.helpers import migrated_sqlite


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test alone (the session's is shared): it gets stopped and killed."""
    configured = Settings(_env_file=None).redis_appendfsync  # what `docingest up` would use
    server = EmbeddedRedis(tmp_path / "own-redis", appendfsync=configured)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test alone; outside pytest's tmp_path, which is private to root."""
    data_dir = Path(tempfile.mkdtemp(prefix="docingest-faults-pg-"))
    server = EmbeddedPostgres(data_dir)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except Exception as error:  # already stopped by the test
            print(f"PostgreSQL stop at teardown: {error!r}")
        shutil.rmtree(data_dir, ignore_errors=True)


# A worker's start-up (imports, the model) took 20-30 s of a loaded 2-core CI machine: the waits
# for progress are generous, what is asserted is what the kill lost.
@pytest.mark.timeout(300)
def test_a_worker_killed_mid_batch_loses_nothing(
    postgres_url: str, redis_url: str, model_path: Path, tmp_path: Path, procs: Processes
) -> None:
    """SIGKILL the worker's process group while rows arrive; a new worker finishes the job."""
    procs.env = service_env(
        database_url=postgres_url, broker_url=redis_url, model_path=model_path, data_dir=tmp_path
    )
    api = procs.api()
    sent = Sent()
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        for n in range(100):  # 10,000 documents waiting, 100 messages of 100
            assert post_bulk(client, new_documents(100, f"before{n}-"), sent, retry=False)
    feeder = Feeder(api.base_url, sent, size=20, label="during", pause=0.02)
    feeder.start()
    try:
        for _attempt in range(3):
            worker = procs.worker()
            threshold = count_rows(postgres_url) + 500

            def arriving(threshold: int = threshold) -> bool:
                return count_rows(postgres_url) >= threshold and unacked_messages(redis_url) > 0

            wait_until(arriving, 90, "rows arriving with messages in flight")
            worker.kill()
            assert worker.group() == [], "a process of the killed worker survived"
            # Messages the dead worker had fetched and not acknowledged: Dramatiq must redeliver.
            in_flight, stored_at_kill = unacked_messages(redis_url), count_rows(postgres_url)
            print(
                f"killed the worker with {in_flight} messages unacknowledged, "
                f"{stored_at_kill} of {sent.accepted} documents stored"
            )
            if in_flight > 0:
                break  # else it was between two fetches: kill the next one
        assert in_flight > 0, "three kills, never one with a message in flight"
        assert stored_at_kill < sent.accepted, "the kill did not land mid-ingestion"

        procs.worker()  # keep posting while the new worker starts and takes over
        wait_until(lambda: count_rows(postgres_url) > stored_at_kill + 1000, 90, "new worker")
    finally:
        feeder.finish()
    result = wait_for_figures(sent, postgres_url, timeout=50, broker_url=redis_url)
    print(result.line("kill -9 worker mid-batch"))
    assert_nothing_lost(result)
    wait_until(lambda: pending_documents(redis_url) == 0, 10, "ledger settled")
    assert dead_letters(redis_url) == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["stop", "sigkill"])
def test_queued_documents_survive_a_redis_restart(
    how: str, own_redis: EmbeddedRedis, model_path: Path, tmp_path: Path, procs: Processes
) -> None:
    """Documents waiting in Redis (no worker running) survive a clean restart and a SIGKILL of
    the Redis process, under the append-only policy the service is configured with
    (REDIS_APPENDFSYNC, default everysec): every message a 202 promised is still there.

    The restart comes right after a 202 given while Redis runs its once-a-second background
    fsync: the moment when, under everysec, Redis acknowledges writes it has not yet written.
    """
    database_url = migrated_sqlite(tmp_path)
    procs.env = service_env(
        database_url=database_url, broker_url=own_redis.url, model_path=model_path,
        data_dir=tmp_path,
    )  # fmt: skip
    api = procs.api()
    sent = Sent()
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        for n in range(30):
            assert post_bulk(client, new_documents(100, f"before{n}-"), sent, retry=False)
        in_fsync, posts = post_during_background_fsync(
            own_redis.url,
            lambda: post_bulk(client, new_documents(100, "last-"), sent, retry=False),
        )
        if how == "stop":
            own_redis.stop()
        else:
            own_redis.kill()
        own_redis.start()  # same port, same data directory
        print(
            f"{how} right after a 202 (background fsync running: {in_fsync}): "
            f"{queued_messages(own_redis.url)} of {30 + posts} messages queued after the restart"
        )
        drop_ballast(own_redis.url)

        # The API reconnects by itself; documents accepted after the restart are kept too.
        for n in range(10):
            assert post_bulk(client, new_documents(100, f"after{n}-"), sent, patience=20)
    procs.worker()
    result = wait_for_figures(sent, database_url, timeout=30, broker_url=own_redis.url)
    print(result.line(f"redis {how} with 3000+ documents queued (appendfsync "
                      f"{own_redis.appendfsync})"))  # fmt: skip
    assert_nothing_lost(result)
    assert result.accepted == 4000 + 100 * posts
    wait_until(lambda: pending_documents(own_redis.url) == 0, 10, "ledger settled")


@pytest.mark.timeout(120)
def test_a_postgresql_outage_delays_but_loses_nothing(
    own_postgres: EmbeddedPostgres, redis_url: str, model_path: Path, tmp_path: Path,
    procs: Processes,
) -> None:  # fmt: skip
    """PostgreSQL stops for 20 s during ingestion; the API keeps accepting, the worker's retries
    (backoff 1 s doubling, 20 retries) store everything once it is back, with no manual action."""
    database_url = own_postgres.create_database("faults")
    migrate(database_url)
    procs.env = service_env(
        database_url=database_url, broker_url=redis_url, model_path=model_path, data_dir=tmp_path
    )
    api = procs.api()
    procs.worker()
    sent = Sent()
    feeder = Feeder(api.base_url, sent, size=20, label="feed", pause=0.1)
    feeder.start()
    try:
        wait_until(lambda: count_rows(database_url) > 0, 40, "first rows stored")
        own_postgres.stop()
        down_at, accepted_at_stop = time.monotonic(), sent.accepted
        time.sleep(2)
        ready = httpx.get(f"{api.base_url}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json() == {"broker": "ok", "ledger": "ok", "database": "unreachable"}
        time.sleep(max(0.0, 20 - (time.monotonic() - down_at)))
        accepted_while_down = sent.accepted - accepted_at_stop
        own_postgres.start()
        up_at = time.monotonic()
        time.sleep(2)
    finally:
        feeder.finish()
    assert accepted_while_down > 0, "the API stopped accepting while only the database was down"
    result = wait_for_figures(sent, database_url, timeout=60, broker_url=redis_url)
    caught_up = time.monotonic() - up_at
    print(
        f"PostgreSQL down {up_at - down_at:.1f} s, {accepted_while_down} documents accepted "
        f"meanwhile; all stored {caught_up:.1f} s after it came back"
    )
    print(result.line("PostgreSQL stopped 20 s during ingestion"))
    assert_nothing_lost(result)
    wait_until(lambda: pending_documents(redis_url) == 0, 10, "ledger settled")
    assert dead_letters(redis_url) == 0


@pytest.mark.timeout(90)
def test_concurrent_updates_end_with_the_highest_accepted_version(
    postgres_url: str, redis_url: str, model_path: Path, tmp_path: Path, procs: Processes
) -> None:
    """50 ids x 20 versions posted in random order by 8 concurrent clients, two worker
    processes: each id ends with the content of the highest version any 202 returned for it."""
    procs.env = service_env(
        database_url=postgres_url, broker_url=redis_url, model_path=model_path, data_dir=tmp_path
    )
    api = procs.api()
    procs.worker()
    procs.worker()
    sent = Sent()
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        warm_up = new_documents(1, "warm-up")
        post_bulk(client, warm_up, sent, retry=False)
        wait_until(lambda: count_rows(postgres_url) > 0, 40, "workers up")

        ids = [str(uuid.uuid4()) for _ in range(50)]
        updates = [{"id": i, "content": f"update {v} of {i}"} for i in ids for v in range(20)]
        random.Random(7).shuffle(updates)
        local = threading.local()
        clients: list[httpx.Client] = []

        def post(document: dict[str, str]) -> None:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=api.base_url, timeout=10)
                clients.append(local.client)
            post_one(local.client, document, sent)

        try:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(post, updates))
        finally:
            for each in clients:
                each.close()

        result = wait_for_figures(sent, postgres_url, timeout=40, broker_url=redis_url)
        print(result.line("50 ids x 20 versions, 8 clients, 2 workers"))
        assert_nothing_lost(result)
        assert result.ids == 51

        newest = sent.newest()
        for document_id in ids:
            version, content = newest[document_id]
            document = client.get(f"/documents/{document_id}").json()
            assert (document["version"], document["content"]) == (version, content)
            status = client.get(f"/documents/{document_id}/status").json()
            assert status == {"id": document_id, "status": "stored", "version": version,
                              "error": None}  # fmt: skip
    wait_until(lambda: pending_documents(redis_url) == 0, 10, "ledger settled")


@pytest.mark.timeout(90)
def test_a_client_retrying_through_a_broker_outage_loses_nothing(
    own_redis: EmbeddedRedis, model_path: Path, tmp_path: Path, procs: Processes
) -> None:
    """Redis stops: the API answers 503 + Retry-After and accepts nothing; a client that waits
    as told and retries gets every document accepted once Redis is back, and all are stored."""
    database_url = migrated_sqlite(tmp_path)
    procs.env = service_env(
        database_url=database_url, broker_url=own_redis.url, model_path=model_path,
        data_dir=tmp_path, RETRY_AFTER_SECONDS="1", BROKER_TIMEOUT_SECONDS="1",
    )  # fmt: skip
    api = procs.api()
    procs.worker()
    sent = Sent()
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        assert post_bulk(client, new_documents(50, "before"), sent, retry=False)

        own_redis.stop()
        probe = {"id": str(uuid.uuid4()), "content": "sent while the broker is down"}
        refused = client.post("/documents", json=probe)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "nothing was accepted" in refused.json()["detail"]
        assert client.get("/ready").status_code == 503

        feeder = Feeder(api.base_url, sent, size=50, label="outage")
        feeder.start()
        try:
            time.sleep(5)
            own_redis.start()  # same port, same append-only file
            wait_until(lambda: feeder.requests >= 10, 30, "the client got through")
        finally:
            feeder.finish()

        result = wait_for_figures(sent, database_url, timeout=40, broker_url=own_redis.url)
        print(
            f"answers seen by the retrying client: {dict(sorted(sent.statuses.items()))}, "
            f"Retry-After values {sorted(sent.retry_after)}, transport errors {len(sent.errors)}"
        )
        print(result.line("Redis stopped, back after 5 s; client retrying per Retry-After"))
        assert sent.statuses.get(503, 0) > 0, "the client never met the outage"
        assert sent.retry_after == {"1"}
        assert_nothing_lost(result)
        # The refused probe was not accepted: it is neither stored nor waiting.
        assert client.get(f"/documents/{probe['id']}/status").status_code == 404
    wait_until(lambda: pending_documents(own_redis.url) == 0, 10, "ledger settled")


@pytest.mark.timeout(150)
def test_messages_waiting_for_a_retry_survive_a_lost_broker_connection(
    own_postgres: EmbeddedPostgres, own_redis: EmbeddedRedis, model_path: Path, tmp_path: Path,
    procs: Processes,
) -> None:  # fmt: skip
    """The database is down, so every message waits for a retry; Redis then goes away for a
    few seconds, longer than redis-py's own retries (Dramatiq empties a consumer's in-memory
    delay queue when its connection fails); the database comes back: every document is stored,
    without restarting the worker."""
    database_url = own_postgres.create_database("retries")
    migrate(database_url)
    procs.env = service_env(
        database_url=database_url, broker_url=own_redis.url, model_path=model_path,
        data_dir=tmp_path,
    )  # fmt: skip
    api = procs.api()
    worker = procs.worker()
    sent = Sent()
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        post_bulk(client, new_documents(20, "before"), sent)  # the version counter exists
        wait_until(lambda: count_rows(database_url) == 20, 60, "first documents stored")
        own_postgres.stop()
        for _ in range(10):
            post_bulk(client, new_documents(20, "retry"), sent)

    def retrying() -> bool:
        return queued_messages(own_redis.url) == 0 and unacked_messages(own_redis.url) > 0

    wait_until(retrying, 60, "every message fetched, retrying")
    time.sleep(3)  # some retries now wait in the worker's memory
    held = unacked_messages(own_redis.url)
    own_redis.stop()
    time.sleep(5)
    own_redis.start()
    own_postgres.start()
    result = wait_for_figures(sent, database_url, timeout=90, broker_url=own_redis.url)
    print(result.line(f"Redis away 5 s while {held} messages waited for a retry"))
    assert held > 0
    assert worker.alive()
    if result.lost:
        worker.dump_stacks()  # into its log, printed at teardown
    assert result.lost == 0, f"{result}; {broker_state(own_redis.url)}"
    assert_nothing_lost(result)
