"""RabbitMQ as the broker (`BROKER_URL=amqp://…`), on a node the suite starts itself.

The ledger and the workers' metrics are then in the database (docingest/ledger/sql.py,
docingest/observe/metrics_store.py). What the Redis suite proves in-process or with real
processes is proved here again where the broker changes the answer: quorum queues, end-to-end
ingestion across two API processes, a worker killed mid-stream (with RabbitMQ's redelivery time),
the
broker stopped during ingestion, a publish refused midway, dead letters, metrics, stats,
reclassification and the ledger's leaks. Each test with real processes prints its figures.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from docingest.api import create_app
from docingest.connections import Connections, connect
from docingest.embedded import wait_until
from docingest.model.classifier import Classifier
from docingest.queue.messages import reclassify_message
from docingest.queue.names import DOCUMENTS_QUEUE, RECLASSIFY_QUEUE
from docingest.queue.rabbitmq import RabbitmqQueue
from docingest.settings import Settings
from docingest.worker.reconcile import Reconciled, reconcile
from tests.helpers import UNAMBIGUOUS, drain, make_settings, migrated_sqlite, samples, value
from tests.rabbitmq import EmbeddedRabbitMQ

# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def rabbit_settings(database_url: str, amqp_url: str, model_path: Path, tmp_path: Path) -> Settings:
    return make_settings(database_url, amqp_url, model_path, tmp_path)


@pytest.fixture
def rabbit_connections(rabbit_settings: Settings) -> Iterator[Connections]:
    connections = connect(rabbit_settings)
    yield connections
    connections.close()


@pytest.fixture
def rabbit_client(rabbit_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(rabbit_settings), raise_server_exceptions=False) as client:
        yield client


def queue_table(server: EmbeddedRabbitMQ, url: str, *columns: str) -> dict[str, dict[str, object]]:
    """`rabbitmqctl list_queues` of the test's virtual host, by queue name."""
    vhost = urlsplit(url).path.removeprefix("/")
    listed = json.loads(
        server.ctl("list_queues", "-p", vhost, "name", *columns, "--formatter", "json")
    )
    for row in listed:
        if "arguments" in row:  # a list of [name, AMQP type, value]
            row["arguments"] = {name: value for name, _, value in row["arguments"]}
    return {row["name"]: row for row in listed}


# --- the queues --------------------------------------------------------------------------------


def test_queues_are_quorum_queues_with_docingest_arguments(
    amqp_url: str, rabbitmq_server: EmbeddedRabbitMQ, tmp_path: Path, model_path: Path
) -> None:
    settings = make_settings(migrated_sqlite(tmp_path), amqp_url, model_path, tmp_path)
    queue = RabbitmqQueue(settings)
    try:
        queue.ping()
    finally:
        queue.close()
    table = queue_table(rabbitmq_server, amqp_url, "type", "arguments")
    for name in (DOCUMENTS_QUEUE, RECLASSIFY_QUEUE):
        for waiting in (name, f"{name}.DQ"):
            assert table[waiting]["type"] == "quorum", table[waiting]
            assert table[waiting]["arguments"] == {
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{name}.XQ",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-max-length-bytes": settings.max_queued_bytes,
            }
        # Dead letters: quorum too, and without Dramatiq's 7-day x-message-ttl.
        assert table[f"{name}.XQ"]["type"] == "quorum"
        assert table[f"{name}.XQ"]["arguments"] == {"x-queue-type": "quorum"}


# --- accepting: refusals, uncertainty ----------------------------------------------------------


def test_a_bulk_publish_refused_midway_answers_503_may_or_may_not(
    amqp_url: str, model_path: Path, tmp_path: Path
) -> None:
    """A bulk request split into messages of 5 documents, against a documents queue that holds
    ~3 such messages (x-max-length-bytes, x-overflow reject-publish): RabbitMQ confirms the
    first messages and nacks a later one. The API cannot take back what was confirmed, so it
    answers 503 with the "may or may not" wording and every id of the request. A request of
    one message refused outright is a plain 429: nothing was accepted."""
    settings = make_settings(
        migrated_sqlite(tmp_path), amqp_url, model_path, tmp_path,
        enqueue_max_batch=5, max_queued_bytes=6_000,
    )  # fmt: skip
    documents = [{"id": str(uuid.uuid4()), "content": "x" * 300} for _ in range(40)]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post("/documents/bulk", json=documents)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == str(settings.retry_after_seconds)
        body = response.json()
        assert "may or may not have been accepted" in body["detail"]
        assert body["ids"] == [document["id"] for document in documents]
        queued = client.get("/stats").json()["queues"][DOCUMENTS_QUEUE]
        assert 0 < queued < len(documents) / 5, "RabbitMQ took some messages, not all"

        # The refused messages' documents stay pending until retried: no message will settle
        # them, and the reconciler cannot tell (RabbitMQ does not say what its queues carry).
        last = client.get(f"/documents/{documents[-1]['id']}/status").json()
        assert last["status"] == "queued"

        refused = client.post("/documents", json={"content": "one more"})
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == str(settings.retry_after_seconds)
        assert "nothing was accepted" in refused.json()["detail"].lower()
        assert client.get("/stats").json()["queues"][DOCUMENTS_QUEUE] == queued


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_full_ledger_answers_429(
    rabbit_settings: Settings, rabbit_connections: Connections, classifier: Classifier
) -> None:
    """MAX_QUEUED_DOCUMENTS against the SQL ledger's pending count. Unlike Redis's, its
    reservation does not return the count (a count(*) of the pending table per batch would cost
    a scan of what waits): the API reads it at most once a second, so the refusal comes within
    a second, and a second's worth of documents may go over the limit."""
    rabbit_settings.max_queued_documents = 5
    with TestClient(create_app(rabbit_settings)) as client:
        assert client.post("/documents/bulk", json=[{"content": "x"}] * 5).status_code == 202
        time.sleep(1.1)
        refused = client.post("/documents", json={"content": "one too many"})
        assert refused.status_code == 429
        assert "5 documents are waiting" in refused.json()["detail"]
        assert drain(rabbit_connections, classifier) == 1
        time.sleep(1.1)  # the API reads the pending count at most once a second
        assert client.post("/documents", json={"content": "room again"}).status_code == 202


# --- dead letters ------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_dead_letters_stop_at_the_byte_budget(
    rabbit_settings: Settings, rabbit_connections: Connections
) -> None:
    """As on Redis (tests/integration/test_answers.py): MAX_ANSWER_BYTES bounds the listing."""
    rabbit_settings.max_answer_bytes = 100_000
    queue = rabbit_connections.queue
    with TestClient(create_app(rabbit_settings)) as client:
        for n in range(3):
            body = {"content": f"document {n} " + "word " * 8_000}
            assert client.post("/documents", json=body).status_code == 202
        consumer = queue.broker.consume(DOCUMENTS_QUEUE, timeout=2000)
        for message, _ in zip(consumer, range(3), strict=False):
            consumer.nack(message)
        consumer.close()
        wait_until(lambda: queue.count_dead_letters() == 3, 10, "three messages dead-lettered")
        listed = client.get("/failures/dead-letters", params={"limit": 1000}).json()
        assert [letter["bytes"] > 40_000 for letter in listed] == [True, True]
    assert queue.count_dead_letters() == 3  # listed without being taken


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_dead_letters_of_both_queues_are_listed_counted_and_replayed(
    rabbit_client: TestClient, rabbit_connections: Connections, classifier: Classifier
) -> None:
    """As Dramatiq does after the last retry (a nack without requeue), on the documents and the
    reclassify queue: RabbitMQ moves them to `<queue>.XQ` (at-least-once dead lettering)."""
    client, queue = rabbit_client, rabbit_connections.queue
    document_id = client.post("/documents", json={"content": UNAMBIGUOUS["sports"]}).json()["id"]
    queue.publish([reclassify_message([uuid.UUID(document_id)], "some-model")])
    for name in (DOCUMENTS_QUEUE, RECLASSIFY_QUEUE):
        consumer = queue.broker.consume(name, timeout=2000)
        consumer.nack(next(iter(consumer)))
        consumer.close()
    wait_until(lambda: queue.count_dead_letters() == 2, 10, "both messages dead-lettered")
    for _ in range(3):  # listing reads without taking: they stay
        listed = client.get("/failures/dead-letters").json()
        assert [(d["queue"], d["actor"], d["documents"]) for d in listed] == [
            ("documents", "documents.ingest", 1),
            ("reclassify", "documents.reclassify", 1),
        ]  # oldest death first
        assert all(d["dead_since"] for d in listed), listed
    assert queue.count_dead_letters() == 2
    page = samples(client.get("/metrics").text)
    assert value(page, "docingest_queue_depth", queue="documents.XQ") == 1
    assert value(page, "docingest_queue_depth", queue="reclassify.XQ") == 1

    assert client.post("/failures/replay").json() == {"documents": 0, "dead_letters": 2}
    assert queue.count_dead_letters() == 0
    depths = queue.depths()
    assert (depths["documents"], depths["reclassify"]) == (1, 1)
    assert drain(rabbit_connections, classifier) == 1
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "stored"


# --- the SQL ledger's leaks --------------------------------------------------------------------


def reconcile_now(connections: Connections, abandon_after: timedelta = timedelta(0)) -> Reconciled:
    """A reconciler's pass over every entry, however young."""
    return reconcile(
        connections.ledger,
        connections.engine,
        connections.queue,
        older_than=timedelta(0),
        abandon_after=abandon_after,
    )


def test_leaked_pending_entries_status_and_reconcile(
    rabbit_client: TestClient, rabbit_connections: Connections, classifier: Classifier
) -> None:
    """A reservation never published (an API process died in between) reads as queued, and the
    reconciler cannot drop it at once: RabbitMQ cannot say which documents its messages carry
    (`carried` is None); past RECONCILE_ABANDON_SECONDS it does. An entry whose version is
    stored (a worker died before settling) is settled."""
    client, connections = rabbit_client, rabbit_connections
    leaked = uuid.uuid4()
    first, _ = connections.ledger.reserve([leaked])
    assert client.get(f"/documents/{leaked}/status").json() == {
        "id": str(leaked), "status": "queued", "version": first, "error": None,
    }  # fmt: skip

    stored = client.post("/documents", json={"content": UNAMBIGUOUS["tech"]}).json()
    assert drain(connections, classifier) == 1
    stored_id = uuid.UUID(stored["id"])
    connections.ledger.mark([(stored_id, stored["version"])])  # as if never settled
    assert connections.ledger.pending_count() == 2

    assert connections.queue.carried({str(leaked)}) is None
    done = reconcile_now(connections, abandon_after=timedelta(hours=1))
    assert done == Reconciled(settled=1, dropped=0)
    assert connections.ledger.pending_version(stored_id) is None
    assert connections.ledger.pending_version(leaked) == first  # kept: it cannot tell
    assert client.get(f"/documents/{leaked}/status").json()["status"] == "queued"

    # Past RECONCILE_ABANDON_SECONDS it goes: such leaks used to add up to a permanent 429.
    done = reconcile_now(connections)
    assert done == Reconciled(settled=0, dropped=1)
    assert connections.ledger.pending_version(leaked) is None
    assert connections.ledger.pending_count() == 0
    assert client.get(f"/documents/{stored_id}/status").json()["status"] == "stored"


def test_an_accepted_document_waiting_past_the_abandon_age_stays_queued(
    rabbit_client: TestClient, rabbit_connections: Connections, classifier: Classifier
) -> None:
    """A 202's message that waits longer than RECONCILE_ABANDON_SECONDS (a database outage, a
    backlog) is not a leak: the broker confirmed it. Its entry stays, so its status says
    `queued` at the new version, not the older stored one (the campaign's C5), until stored."""
    client, connections = rabbit_client, rabbit_connections
    first = client.post("/documents", json={"content": UNAMBIGUOUS["tech"]}).json()
    assert drain(connections, classifier) == 1
    document_id = first["id"]
    update = {"id": document_id, "content": UNAMBIGUOUS["business"]}
    second = client.post("/documents", json=update).json()
    assert second["version"] > first["version"]

    done = reconcile_now(connections)
    assert done == Reconciled(settled=0, dropped=0)
    assert client.get(f"/documents/{document_id}/status").json() == {
        "id": document_id, "status": "queued", "version": second["version"], "error": None,
    }  # fmt: skip
    assert drain(connections, classifier) == 1
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "stored"
    assert connections.ledger.pending_count() == 0


# --- real processes ----------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_connections_of_ended_threads_are_closed(
    rabbit_connections: Connections, rabbitmq_server: EmbeddedRabbitMQ, amqp_url: str
) -> None:
    """The API reads depths (`/stats`, `/metrics`, `/ready`) and publishes replays from pool
    threads, which the pool retires when idle; each thread's connection used to stay open (a
    CLOSE_WAIT socket once RabbitMQ dropped it for missed heartbeats), one more per burst."""
    vhost = urlsplit(amqp_url).path.removeprefix("/")

    def open_connections() -> int:
        listed = json.loads(rabbitmq_server.ctl("list_connections", "vhost", "--formatter", "json"))
        return sum(1 for row in listed if row["vhost"] == vhost)

    queue = rabbit_connections.queue
    for _ in range(20):
        thread = threading.Thread(target=queue.depths)
        thread.start()
        thread.join()
    time.sleep(1)  # RabbitMQ lists a closed connection for a moment
    assert open_connections() <= 2  # the last thread's, and the main thread's declarations


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_listing_dead_letters_counts_no_delivery(
    rabbit_client: TestClient,
    rabbit_connections: Connections,
    rabbitmq_server: EmbeddedRabbitMQ,
    amqp_url: str,
) -> None:
    """RabbitMQ 4.0 gives quorum queues a delivery limit of 20, and a message returned to its
    queue that often is dropped (the dead-letter queue has no dead-letter target of its own).
    Reading dead letters with `basic_get` and closing the channel returns them: listing them
    20 times lost them. Here 3.10's `delivery-limit` policy of 2 on the dead-letter queues
    plays 4.0's default; the dead letter must outlive many listings and still be replayed."""
    client, queue = rabbit_client, rabbit_connections.queue
    vhost = urlsplit(amqp_url).path.removeprefix("/")
    rabbitmq_server.ctl(
        "set_policy", "-p", vhost, "--apply-to", "queues",
        "dead-letter-delivery-limit", r"\.XQ$", '{"delivery-limit": 2}',
    )  # fmt: skip
    document_id = client.post("/documents", json={"content": UNAMBIGUOUS["sports"]}).json()["id"]
    consumer = queue.broker.consume(DOCUMENTS_QUEUE, timeout=2000)
    consumer.nack(next(iter(consumer)))
    consumer.close()
    wait_until(lambda: queue.count_dead_letters() == 1, 10, "the message dead-lettered")
    for _ in range(6):
        listed = client.get("/failures/dead-letters").json()
        assert [(d["queue"], d["documents"]) for d in listed] == [("documents", 1)], listed
        assert listed[0]["dead_since"]
    assert queue.count_dead_letters() == 1
    assert client.post("/failures/replay").json() == {"documents": 0, "dead_letters": 1}
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "queued"
