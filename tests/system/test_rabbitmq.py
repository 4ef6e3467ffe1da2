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

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from docingest.api import create_app
from docingest.db import make_engine
from docingest.embedded import wait_until
from docingest.model import registry
from docingest.observe.worker_metrics import PROCESSED
from docingest.queue.names import DOCUMENTS_QUEUE
from tests.faults import (
    Feeder,
    Processes,
    Sent,
    assert_nothing_lost,
    count_rows,
    new_documents,
    post_bulk,
    rows,
    service_env,
    wait_for_figures,
)
from tests.helpers import UNAMBIGUOUS, make_settings, migrated_sqlite, samples, value
from tests.integration.test_rabbitmq import queue_table
from tests.rabbitmq import EmbeddedRabbitMQ

# --- fixtures and helpers ----------------------------------------------------------------------


def unacknowledged(server: EmbeddedRabbitMQ, url: str) -> int:
    row = queue_table(server, url, "messages_unacknowledged").get(DOCUMENTS_QUEUE, {})
    return int(str(row.get("messages_unacknowledged", 0)))


def pending_rows(database_url: str) -> int:
    """The SQL ledger's pending entries: accepted documents not yet stored or failed."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            query = text("SELECT count(*) FROM pending_documents")
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()


def rabbit_env(
    database_url: str, amqp_url: str, model_path: Path, tmp_path: Path, **extra: str
) -> dict[str, str]:
    return service_env(
        database_url=database_url,
        broker_url=amqp_url,
        model_path=model_path,
        data_dir=tmp_path,
        **extra,
    )


# --- the queues --------------------------------------------------------------------------------


# --- accepting: refusals, uncertainty ----------------------------------------------------------


def test_an_idle_api_publishes_and_answers_ready_truthfully(
    amqp_url: str, rabbitmq_server: EmbeddedRabbitMQ, model_path: Path, tmp_path: Path
) -> None:
    """An idle thread's connection sends no heartbeats, so RabbitMQ drops it (after 2 missed
    heartbeats of BROKER_TIMEOUT_SECONDS): the next request must still get a 202, not a
    "may or may not" 503. And /ready must ask the broker, not trust a connection that merely
    looks open: with the node stopped it answers 503 at once."""
    settings = make_settings(
        migrated_sqlite(tmp_path), amqp_url, model_path, tmp_path, broker_timeout_seconds=1
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.post("/documents", json={"content": "first"}).status_code == 202
        assert client.get("/ready").status_code == 200
        time.sleep(4)
        for n in range(3):
            response = client.post("/documents", json={"content": f"after idling {n}"})
            assert response.status_code == 202, response.text
        rabbitmq_server.stop()
        try:
            ready = client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["broker"] == "unreachable"
        finally:
            rabbitmq_server.start()


# --- dead letters ------------------------------------------------------------------------------


# --- the SQL ledger's leaks --------------------------------------------------------------------


# --- real processes ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_single_and_bulk_end_to_end_across_two_api_processes(
    database_url: str, amqp_url: str, model_path: Path, tmp_path: Path, procs: Processes
) -> None:
    """202s from two API processes, `queued` until a worker runs, then `stored`; versions from
    the database's counter increase with arrival whichever process took the request."""
    procs.env = rabbit_env(database_url, amqp_url, model_path, tmp_path)
    apis = [procs.api(), procs.api()]
    versions: list[int] = []
    ids: list[str] = []
    clients = [httpx.Client(base_url=api.base_url, timeout=10) for api in apis]
    try:
        for n in range(10):
            client = clients[n % 2]
            if n % 3 == 0:
                response = client.post("/documents", json={"content": UNAMBIGUOUS["tech"]})
                assert response.status_code == 202, response.text
                assert response.headers["location"] == f"/documents/{response.json()['id']}/status"
                items = [response.json()]
            else:
                documents = new_documents(25, f"bulk{n}-")
                response = client.post("/documents/bulk", json=documents)
                assert response.status_code == 202, response.text
                items = response.json()["items"]
                assert [item["status"] for item in items] == [202] * 25
            versions += [item["version"] for item in items]
            ids += [item["id"] for item in items]
        assert versions == sorted(set(versions)), "versions increase with arrival"
        status = clients[0].get(f"/documents/{ids[-1]}/status").json()
        assert status == {"id": ids[-1], "status": "queued", "version": versions[-1], "error": None}

        procs.worker()
        wait_until(lambda: count_rows(database_url) == len(ids), 60, "all stored")
        for document_id, version in list(zip(ids, versions, strict=True))[::20]:
            status = clients[1].get(f"/documents/{document_id}/status").json()
            assert (status["status"], status["version"]) == ("stored", version)
        assert clients[0].get(f"/documents/{ids[0]}").json()["category"] == "tech"
    finally:
        for client in clients:
            client.close()
    wait_until(lambda: pending_rows(database_url) == 0, 10, "ledger settled")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("restart", ["after-requeue", "immediately"])
def test_a_worker_killed_mid_stream_loses_nothing(
    restart: str,
    postgres_url: str,
    amqp_url: str,
    rabbitmq_server: EmbeddedRabbitMQ,
    model_path: Path,
    tmp_path: Path,
    procs: Processes,
) -> None:
    """SIGKILL the worker's process group with messages unacknowledged while a client feeds;
    RabbitMQ requeues them when the dead worker's connections drop, a new worker stores them.
    Measured: kill → RabbitMQ shows nothing unacknowledged (its redelivery), and kill → every
    document accepted before the kill stored (the new worker started after the requeue, or
    at once)."""
    database_url = postgres_url
    procs.env = rabbit_env(database_url, amqp_url, model_path, tmp_path)
    api = procs.api()
    sent = Sent()
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        for n in range(60):  # 6,000 documents waiting, 60 messages of 100
            assert post_bulk(client, new_documents(100, f"before{n}-"), sent, retry=False)
    feeder = Feeder(api.base_url, sent, size=20, label="during", pause=0.05)
    feeder.start()
    try:
        worker = procs.worker()
        # Polled in SQL (milliseconds a call) so that the kill lands while most of the
        # backlog still waits: rabbitmqctl takes ~0.7 s a call, time enough to drain it.
        wait_until(lambda: count_rows(database_url) >= 300, 60, "rows arriving", interval=0.01)
        worker.kill()
        killed_at = time.monotonic()
        accepted_before_kill = dict(sent.newest())
        stored_at_kill = count_rows(database_url)
        if restart == "immediately":
            procs.worker()
        requeued = "-"
        if restart == "after-requeue":
            wait_until(lambda: unacknowledged(rabbitmq_server, amqp_url) == 0, 20, "requeued")
            requeued = f"{time.monotonic() - killed_at:.2f} s"
            procs.worker()

        def all_before_kill_stored() -> bool:
            stored = {row_id for row_id, _, _ in rows(database_url)}
            return accepted_before_kill.keys() <= stored

        wait_until(all_before_kill_stored, 90, "documents accepted before the kill stored")
        caught_up = time.monotonic() - killed_at
    finally:
        feeder.finish()
    result = wait_for_figures(sent, database_url, timeout=60)
    print(
        f"FIGURES rabbitmq kill -9 worker (restart {restart}): killed with "
        f"{stored_at_kill} of {len(accepted_before_kill)} documents "
        f"stored; requeued by RabbitMQ {requeued} after the kill (rabbitmqctl polled, ~0.7 s "
        f"a call); all accepted before the kill stored {caught_up:.1f} s after the kill"
    )
    print(result.line(f"rabbitmq kill -9 worker mid-stream, restart {restart}"))
    assert stored_at_kill < len(accepted_before_kill), "the kill did not land mid-ingestion"
    assert_nothing_lost(result)
    wait_until(lambda: pending_rows(database_url) == 0, 20, "ledger settled")
    table = queue_table(rabbitmq_server, amqp_url, "messages")
    assert table[f"{DOCUMENTS_QUEUE}.XQ"]["messages"] == 0


@pytest.mark.timeout(180)
def test_the_broker_stopped_during_ingestion(
    amqp_url: str,
    rabbitmq_server: EmbeddedRabbitMQ,
    model_path: Path,
    tmp_path: Path,
    procs: Processes,
) -> None:
    """The node stops while a client feeds: 503 + Retry-After (never a 500, never a hang past
    the timeout), /ready 503 naming the broker; once it is back, the API and the worker
    reconnect by themselves and every accepted document is stored."""
    database_url = migrated_sqlite(tmp_path)
    procs.env = rabbit_env(
        database_url, amqp_url, model_path, tmp_path,
        RETRY_AFTER_SECONDS="1", BROKER_TIMEOUT_SECONDS="2",
    )  # fmt: skip
    api = procs.api()
    procs.worker()
    sent = Sent()
    with httpx.Client(base_url=api.base_url, timeout=15) as client:
        assert post_bulk(client, new_documents(50, "before"), sent, retry=False)
        wait_until(lambda: count_rows(database_url) == 50, 60, "worker up")
        feeder = Feeder(api.base_url, sent, size=50, label="outage", pause=0.05)
        feeder.start()
        try:
            time.sleep(1)
            rabbitmq_server.stop()
            try:
                probes = []
                for _ in range(3):
                    probe = {"id": str(uuid.uuid4()), "content": "sent while the broker is down"}
                    started = time.monotonic()
                    refused = client.post("/documents", json=probe)
                    probes.append((time.monotonic() - started, refused.status_code))
                    assert refused.status_code == 503, refused.text
                    assert refused.headers["retry-after"] == "1"
                    assert "nothing was accepted" in refused.json()["detail"], refused.text
                    assert client.get(f"/documents/{probe['id']}/status").status_code == 404
                ready = client.get("/ready")
                assert ready.status_code == 503
                assert ready.json() == {"broker": "unreachable", "ledger": "ok",
                                        "database": "ok"}  # fmt: skip
                time.sleep(3)
            finally:
                rabbitmq_server.start()
            back_at = time.monotonic()
            wait_until(lambda: client.get("/ready").status_code == 200, 30, "ready again")
            accepted_then = sent.accepted
            wait_until(lambda: sent.accepted > accepted_then + 200, 60, "accepting again")
        finally:
            feeder.finish()
    result = wait_for_figures(sent, database_url, timeout=90)
    print(
        f"answers during the outage: {dict(sorted(sent.statuses.items()))}, probes "
        f"(seconds, status) {[(round(s, 2), c) for s, c in probes]}, transport errors "
        f"{len(sent.errors)}; all stored {time.monotonic() - back_at:.1f} s after the restart"
    )
    print(result.line("rabbitmq node stopped during ingestion, restarted"))
    assert sent.statuses.get(500, 0) == 0
    assert sent.statuses.get(503, 0) > 0, "the client never met the outage"
    assert sent.errors == [], "a request hung past the client's timeout"
    assert all(seconds < 5 for seconds, _ in probes), probes
    assert_nothing_lost(result)
    wait_until(lambda: pending_rows(database_url) == 0, 20, "ledger settled")


@pytest.mark.timeout(120)
def test_retries_wait_in_the_delay_queue_until_the_database_takes_the_rows(
    postgres_url: str,
    amqp_url: str,
    rabbitmq_server: EmbeddedRabbitMQ,
    model_path: Path,
    tmp_path: Path,
    procs: Processes,
) -> None:
    """The worker's store fails for ~8 s (the documents table renamed away): Dramatiq retries
    each message through `documents.DQ` (a quorum queue too) with backoff; once the table is
    back, everything is stored, nothing dead-lettered."""
    procs.env = rabbit_env(postgres_url, amqp_url, model_path, tmp_path)
    api = procs.api()
    sent = Sent()
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        for n in range(5):
            assert post_bulk(client, new_documents(40, f"retry{n}-"), sent, retry=False)
    engine = make_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE documents RENAME TO documents_away"))
        worker = procs.worker()
        wait_until(
            lambda: "Dramatiq retries it" in worker.log_path.read_text(errors="replace"),
            60,
            "a failed batch",
        )
        time.sleep(8)
        delayed = queue_table(rabbitmq_server, amqp_url, "messages")[f"{DOCUMENTS_QUEUE}.DQ"][
            "messages"
        ]
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE documents_away RENAME TO documents"))
        back_at = time.monotonic()
    finally:
        engine.dispose()
    result = wait_for_figures(sent, postgres_url, timeout=60)
    print(
        f"database refusing writes ~8 s: {delayed} messages in documents.DQ meanwhile; all "
        f"stored {time.monotonic() - back_at:.1f} s after it took them again"
    )
    print(result.line("rabbitmq retries through the delay queue"))
    assert int(str(delayed)) > 0, "the retries did not go through documents.DQ"
    assert_nothing_lost(result)
    wait_until(lambda: pending_rows(postgres_url) == 0, 20, "ledger settled")
    assert (
        queue_table(rabbitmq_server, amqp_url, "messages")[f"{DOCUMENTS_QUEUE}.XQ"]["messages"] == 0
    )


@pytest.mark.timeout(180)
def test_worker_metrics_stats_and_reclassify_with_a_real_worker(
    amqp_url: str, model_path: Path, nb_model_path: Path, tmp_path: Path, procs: Processes
) -> None:
    """The workers' figures reach /metrics through the worker_metrics table; /stats shows the
    queue depths; `docingest reclassify` runs on its own queue and a real worker empties it."""
    database_url = migrated_sqlite(tmp_path)
    procs.env = rabbit_env(
        database_url, amqp_url, model_path, tmp_path, METRICS_FLUSH_SECONDS="0.2"
    )
    api = procs.api()
    documents = new_documents(40, "metrics")
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        assert client.post("/documents/bulk", json=documents).status_code == 202
        stats = client.get("/stats").json()
        assert stats["queues"][DOCUMENTS_QUEUE] == 1
        assert stats["statuses"]["queued"] == 40
        procs.worker(processes=1, threads=1)

        def processed() -> float:
            return value(samples(client.get("/metrics").text), f"{PROCESSED.name}_total")

        wait_until(lambda: processed() >= 40, 60, "worker metrics")
        time.sleep(0.5)  # the last flush of the message counter
        page = samples(client.get("/metrics").text)
        assert value(page, f"{PROCESSED.name}_total") == 40
        assert value(page, "docingest_worker_messages_total", outcome="ok") >= 1
        assert value(page, "docingest_queue_depth", queue=DOCUMENTS_QUEUE) == 0
        stats = client.get("/stats").json()
        assert stats["statuses"] == {"stored": 40, "queued": 0, "failed": 0}
        assert set(stats["queues"]) >= {"documents", "documents.DQ", "reclassify.XQ"}

        engine = make_engine(database_url)
        try:
            nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
        finally:
            engine.dispose()
        reclassified = subprocess.run(
            [sys.executable, "-m", "docingest", "reclassify", "--model", nb],
            env=procs.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert reclassified.returncode == 0, reclassified.stdout + reclassified.stderr
        said = reclassified.stdout + reclassified.stderr
        assert f"40 documents reclassified with model {nb}" in said
        versions = {client.get(f"/documents/{d['id']}").json()["model_version"] for d in documents}
        assert versions == {nb}
