"""The ledger on a real Redis and real databases: versions never go back, whatever happened to
Redis; pending entries are removed only at their own version; leaks are reconciled."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from docingest.api import create_app
from docingest.connections import Connections
from docingest.documents.store import store_batch
from docingest.embedded import EmbeddedRedis, wait_until
from docingest.ledger import open_ledger
from docingest.ledger.floor import prune_floors, version_floor
from docingest.ledger.redis import EPOCH, PENDING_KEY, VERSION_KEY
from docingest.ledger.sql import SqlLedger
from docingest.model.classifier import Classifier
from docingest.queue.messages import ingest_message
from docingest.queue.names import DOCUMENTS_QUEUE
from docingest.queue.redis import QueueKeys
from docingest.schemas import utcnow
from docingest.settings import Settings
from docingest.tables import VERSION_FLOORS
from docingest.worker.reconcile import Reconciled, reconcile
from tests.helpers import UNAMBIGUOUS, drain

# Never reached here: the Redis queue says what its messages carry.
ABANDON = timedelta(days=1)


def store_at_version_five(
    client: TestClient, connections: Connections, classifier: Classifier
) -> str:
    """An id stored at version >= 5, as a client and a worker would leave it."""
    document_id = str(uuid.uuid4())
    for text in ("business", "politics", "tech", "sports", "entertainment"):
        answer = client.post("/documents", json={"id": document_id, "content": UNAMBIGUOUS[text]})
        assert answer.status_code == 202
    drain(connections, classifier)
    stored = client.get(f"/documents/{document_id}").json()
    assert stored["version"] >= 5
    assert stored["category"] == "entertainment"
    return document_id


def update_and_delete_take_effect(
    client: TestClient, connections: Connections, classifier: Classifier, document_id: str
) -> None:
    before = client.get(f"/documents/{document_id}").json()["version"]
    update = client.post("/documents", json={"id": document_id, "content": UNAMBIGUOUS["tech"]})
    assert update.json()["version"] > before
    drain(connections, classifier)
    stored = client.get(f"/documents/{document_id}").json()
    assert (stored["category"], stored["version"]) == ("tech", update.json()["version"])
    assert client.delete(f"/documents/{document_id}").status_code == 204
    assert client.get(f"/documents/{document_id}").status_code == 404
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "deleted"


def test_versions_go_on_after_redis_lost_everything(
    client: TestClient, connections: Connections, classifier: Classifier, redis_url: str
) -> None:
    document_id = store_at_version_five(client, connections, classifier)
    redis.Redis.from_url(redis_url).flushall()
    update_and_delete_take_effect(client, connections, classifier, document_id)


@pytest.mark.parametrize("api", ["same", "restarted"])
def test_versions_go_on_after_the_counter_went_back(
    client: TestClient,
    connections: Connections,
    classifier: Classifier,
    redis_url: str,
    settings: Settings,
    api: str,
) -> None:
    """What an older append-only file or a lagging replica does to the counter, here by hand;
    `restarted`: an API process that never issued a version, so only the database can tell."""
    document_id = store_at_version_five(client, connections, classifier)
    redis.Redis.from_url(redis_url).set(VERSION_KEY, 1)
    if api == "same":
        update_and_delete_take_effect(client, connections, classifier, document_id)
        return
    with TestClient(create_app(settings)) as restarted:
        update_and_delete_take_effect(restarted, connections, classifier, document_id)


def test_a_counter_that_went_back_jumps_to_the_next_epoch(
    client: TestClient, connections: Connections, classifier: Classifier, redis_url: str
) -> None:
    """Above the epoch of everything issued before: queued versions too, not only stored ones."""
    document_id = store_at_version_five(client, connections, classifier)
    redis.Redis.from_url(redis_url).set(VERSION_KEY, 2)
    answer = client.post("/documents", json={"id": document_id, "content": UNAMBIGUOUS["tech"]})
    assert answer.json()["version"] == EPOCH + 1


def test_a_missing_counter_and_an_unreachable_database_accept_nothing(
    settings: Settings, redis_url: str
) -> None:
    """Without the counter, only the database knows how high versions went: no guessing."""
    settings.database_url = "postgresql+psycopg://nobody@127.0.0.1:9/none"
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        redis.Redis.from_url(redis_url).delete(VERSION_KEY)
        refused = client.post("/documents", json={"content": UNAMBIGUOUS["tech"]})
    assert refused.status_code == 503
    assert "nothing was accepted" in refused.json()["detail"]
    assert redis.Redis.from_url(redis_url).hlen(PENDING_KEY) == 0


def test_pending_entries_are_removed_only_at_their_own_version(connections: Connections) -> None:
    ledger = connections.ledger
    document_id = uuid.uuid4()
    first, _ = ledger.reserve([document_id])
    second, _ = ledger.reserve([document_id])
    ledger.forget([(document_id, first)])  # the older publish failed: the newer still waits
    assert ledger.pending_version(document_id) == second
    ledger.mark([(document_id, first)])  # a replay of the older never lowers the entry
    assert ledger.pending_version(document_id) == second
    ledger.settle([(document_id, first)])
    assert ledger.pending_version(document_id) == second
    ledger.settle([(document_id, second)])
    assert ledger.pending_version(document_id) is None


@pytest.mark.parametrize("ledger_kind", ["redis", "sql"])
def test_a_refused_version_leaves_the_one_accepted_before_it_pending(
    connections: Connections, ledger_kind: str
) -> None:
    """202 for v1, then a request for the same id refused (429, 503 "nothing was accepted")
    after its reservation: v1 is still queued, and its status must say so (chaos C1)."""
    ledger = SqlLedger(connections.engine) if ledger_kind == "sql" else connections.ledger
    document_id, other = uuid.uuid4(), uuid.uuid4()
    accepted, _ = ledger.reserve([document_id])
    refused, _ = ledger.reserve([document_id, other, document_id])
    ledger.forget([(document_id, refused), (other, refused + 1), (document_id, refused + 2)])
    assert ledger.pending_version(document_id) == accepted
    assert ledger.pending_version(other) is None
    assert [(e.id, e.version) for e in ledger.older_than(utcnow(), 10)] == [(document_id, accepted)]
    ledger.settle([(document_id, accepted)])
    assert ledger.pending_version(document_id) is None
    assert ledger.pending_count() == 0


# --- leaks: entries no worker will settle -----------------------------------------------------


def leak(connections: Connections) -> tuple[uuid.UUID, int]:
    """Versions reserved and never published: a crash between the two, or a publish that
    failed and a `forget` that failed with it."""
    document_id = uuid.uuid4()
    version, _ = connections.ledger.reserve([document_id])
    return document_id, version


def test_reconcile_drops_entries_no_message_carries(connections: Connections) -> None:
    document_id, _ = leak(connections)
    assert (
        reconcile(
            connections.ledger,
            connections.engine,
            connections.queue,
            older_than=timedelta(hours=1),
            abandon_after=ABANDON,
        ).dropped
        == 0
    )
    done = reconcile(
        connections.ledger,
        connections.engine,
        connections.queue,
        older_than=timedelta(0),
        abandon_after=ABANDON,
    )
    assert (done.settled, done.dropped) == (0, 1)
    assert connections.ledger.pending_version(document_id) is None


def test_reconcile_settles_entries_already_stored(connections: Connections) -> None:
    """A worker that died between its commit and its settle."""
    document_id, version = leak(connections)
    now = utcnow()
    row = {
        "id": document_id,
        "content": "x",
        "version": version,
        "created_at": now,
        "updated_at": now,
    }
    store_batch(connections.engine, [row])
    done = reconcile(
        connections.ledger,
        connections.engine,
        connections.queue,
        older_than=timedelta(0),
        abandon_after=ABANDON,
    )
    assert (done.settled, done.dropped) == (1, 0)
    assert connections.ledger.pending_version(document_id) is None


def test_reconcile_keeps_what_a_message_still_carries(
    client: TestClient, connections: Connections
) -> None:
    """One document waiting, one dead-lettered: both still on their way, neither dropped."""
    ids = [
        uuid.UUID(client.post("/documents", json={"content": UNAMBIGUOUS[t]}).json()["id"])
        for t in ("tech", "sports")
    ]
    consumer = connections.queue.broker.consume(DOCUMENTS_QUEUE, timeout=200)
    consumer.nack(next(iter(consumer)))
    consumer.close()
    assert (connections.queue.depths()["documents"], connections.queue.count_dead_letters()) == (
        1,
        1,
    )
    done = reconcile(
        connections.ledger,
        connections.engine,
        connections.queue,
        older_than=timedelta(0),
        abandon_after=ABANDON,
    )
    assert done.dropped == 0
    assert all(connections.ledger.pending_version(i) is not None for i in ids)


def test_dead_letters_outlive_dramatiq_s_seven_days(
    client: TestClient, connections: Connections, redis_url: str
) -> None:
    """Dramatiq drops dead letters older than its TTL during maintenance: not ours."""
    client.post("/documents", json={"content": UNAMBIGUOUS["tech"]})
    consumer = connections.queue.broker.consume(DOCUMENTS_QUEUE, timeout=200)
    consumer.nack(next(iter(consumer)))
    consumer.close()
    dead = QueueKeys.of(DOCUMENTS_QUEUE).dead
    server = redis.Redis.from_url(redis_url)
    (message_id,) = server.zrange(dead, 0, -1)
    eight_days_ago = (time.time() - 8 * 24 * 3600) * 1000
    server.zadd(dead, {message_id: eight_days_ago})
    consumer = connections.queue.broker.consume(DOCUMENTS_QUEUE, timeout=200)
    assert next(iter(consumer)) is None  # a fetch, which runs Dramatiq's maintenance
    consumer.close()
    assert connections.queue.count_dead_letters() == 1


def test_the_sql_ledger_continues_above_the_versions_stored_through_redis(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    """A deployment moves from Redis to RabbitMQ on the same database: its SQL counter row, seeded
    at migration, must start above every version stored, or updates are answered and dropped."""
    document_id = store_at_version_five(client, connections, classifier)
    stored = client.get(f"/documents/{document_id}").json()["version"]
    first, _ = SqlLedger(connections.engine).reserve([uuid.UUID(document_id)])
    assert first > stored


def test_idle_version_floor_rows_are_pruned_all_but_the_highest(connections: Connections) -> None:
    old, now = utcnow() - timedelta(hours=2), utcnow()
    rows = [("gone:1", 10, old), ("gone:2", 20, old), ("live:3", 5, now)]
    with connections.engine.begin() as connection:
        connection.execute(
            VERSION_FLOORS.insert(),
            [{"writer": w, "version": v, "updated_at": at} for w, v, at in rows],
        )
    assert prune_floors(connections.engine, idle=timedelta(hours=1)) == 1
    with connections.engine.connect() as connection:
        left = set(connection.execute(select(VERSION_FLOORS.c.writer)).scalars())
    assert left - {"migration"} == {"gone:2", "live:3"}  # the row migrations seed is recent
    assert version_floor(connections.engine) == 20


def _replicate(replica: redis.Redis, primary: EmbeddedRedis) -> None:
    """`replica` takes `primary`'s data, then is promoted: what a failover does."""
    # Redis waits 5 s (repl-diskless-sync-delay) for more replicas before a full sync.
    redis.Redis(port=primary.port).config_set("repl-diskless-sync-delay", 0)
    replica.replicaof("127.0.0.1", primary.port)
    wait_until(
        lambda: (
            replica.info("replication").get("master_link_status") == "up"
            and replica.get(VERSION_KEY) == redis.Redis(port=primary.port).get(VERSION_KEY)
        ),
        10,
        "the replica in sync",
    )
    replica.replicaof("NO", "ONE")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_failover_to_a_lagging_replica_jumps_above_versions_other_processes_issued(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """Two API processes share a Redis; a replica stops receiving after the first one's
    reservation, the second reserves more (queued, or held by a worker: stored nowhere), then
    the replica is promoted in its place. The first process's floor (what it issued, what the
    database stored) is below those versions, and so is the promoted counter: only knowing
    that the counter's history changed says that its next versions must jump."""
    with (
        EmbeddedRedis(tmp_path / "primary") as primary,
        EmbeddedRedis(tmp_path / "replica") as standby,
    ):
        on_primary = settings.model_copy(update={"broker_url": primary.url})
        ledgers = [open_ledger(on_primary, engine) for _ in range(2)]
        try:
            first, _ = ledgers[0].reserve([uuid.uuid4()])
            _replicate(redis.Redis(port=standby.port), primary)  # the replica lags from here
            held, _ = ledgers[1].reserve([uuid.uuid4() for _ in range(3)])
            assert held + 2 > first
            _replicate(redis.Redis(port=primary.port), standby)  # failed over, same address
            assert int(redis.Redis(port=primary.port).get(VERSION_KEY) or 0) == first
            after, _ = ledgers[0].reserve([uuid.uuid4()])
        finally:
            for ledger in ledgers:
                ledger.close()
    assert after > held + 2, "a new version at or below one still in flight"
    assert after % EPOCH == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_message_moving_between_queues_is_always_found_carried(
    connections: Connections, redis_url: str
) -> None:
    """Dramatiq moves a message between the documents queue's hashes (a retry into the delay
    queue, back when its delay ends, a dead letter replayed), each move atomic: the message is
    always somewhere. Scanning the hashes one after another missed it when it moved back
    between two scans, and the reconciler dropped the entry of a document still on its way."""
    queue = connections.queue
    document_id = str(uuid.uuid4())
    document = {"id": document_id, "content": "x", "version": 1, "accepted_at": utcnow()}
    queue.publish([ingest_message([document])])
    keys = QueueKeys.of(DOCUMENTS_QUEUE)
    mover = redis.Redis.from_url(redis_url)
    (message_id,) = mover.hkeys(keys.messages)
    body = mover.hget(keys.messages, message_id)
    stop = threading.Event()

    def move_back_and_forth() -> None:
        places = [keys.messages, keys.delayed_messages]
        while not stop.is_set():
            with mover.pipeline(transaction=True) as pipeline:
                pipeline.hdel(places[0], message_id)
                pipeline.hset(places[1], message_id, body)
                pipeline.execute()
            places.reverse()

    thread = threading.Thread(target=move_back_and_forth)
    thread.start()
    try:
        missed = sum(not queue.carried({document_id}) for _ in range(300))
    finally:
        stop.set()
        thread.join()
    assert missed == 0, f"{missed} of 300 scans did not see the message"


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("ledger_kind", ["redis", "sql"])
def test_one_process_reconciles_per_interval(connections: Connections, ledger_kind: str) -> None:
    """Every worker process tries each RECONCILE_SECONDS; one of them scans the queue."""
    ledger = SqlLedger(connections.engine) if ledger_kind == "sql" else connections.ledger
    leak(connections)
    every = timedelta(seconds=0.5)

    def run() -> Reconciled | None:
        return reconcile(
            ledger,
            connections.engine,
            connections.queue,
            older_than=timedelta(0),
            abandon_after=ABANDON,
            every=every,
        )

    assert run() is not None
    assert [run() for _ in range(3)] == [None, None, None]  # the other processes, same interval
    time.sleep(every.total_seconds() + 0.1)
    assert run() is not None
