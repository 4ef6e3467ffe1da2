"""A worker's batch logic: bisecting to the items that fail, and storing the rest of a batch
when the database refuses one row, on SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import ConnectionClosed
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, IntegrityError

from docingest.connections import Connections
from docingest.db import make_engine
from docingest.documents.store import get_document
from docingest.embedded import wait_until
from docingest.failures.repository import get_failure
from docingest.model import environment, registry
from docingest.model.classifier import Classifier
from docingest.model.registry import ModelCache
from docingest.model.scoring import Prediction
from docingest.queue import open_queue
from docingest.queue.messages import ingest_message
from docingest.queue.names import DOCUMENTS_QUEUE, INGEST_ACTOR
from docingest.schemas import QueuedDocument, utcnow
from docingest.settings import Settings
from docingest.worker.ingest import failure_row, ingest, isolate, store_isolating
from docingest.worker.middleware import WorkerMiddleware, use_durable_retries
from docingest.worker.resources import Resources
from tests.faults import service_env
from tests.helpers import UNAMBIGUOUS, make_settings


class RowError(Exception):
    pass


def test_isolate_bisects_to_the_failing_items_and_keeps_the_rest_whole() -> None:
    attempts: list[Sequence[int]] = []

    def attempt(part: Sequence[int]) -> int:
        attempts.append(part)
        if any(item % 10 == 7 for item in part):
            raise RowError(part)
        return sum(part)

    results = isolate(list(range(16)), attempt, (RowError,))
    failed = [item for part, result in results if isinstance(result, RowError) for item in part]
    assert failed == [7]
    assert sum(r for _, r in results if not isinstance(r, Exception)) == sum(range(16)) - 7
    assert [item for part, _ in results for item in part] == list(range(16))  # in order, once
    assert len(attempts) == 1 + 2 * 4  # the whole, then both halves at each of 4 levels


def test_isolate_lets_other_errors_through_and_costs_one_attempt_when_all_is_well() -> None:
    calls = 0

    def attempt(part: Sequence[int]) -> None:
        nonlocal calls
        calls += 1

    assert isolate([1, 2, 3], attempt, (RowError,)) == [([1, 2, 3], None)]
    assert calls == 1

    def broken(part: Sequence[int]) -> None:
        raise ConnectionError("database gone")

    with pytest.raises(ConnectionError):
        isolate([1, 2, 3], broken, (RowError,))


def document_row(content: str | None) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": uuid.uuid4(),
        "content": content,
        "category": "tech",
        "confidence": 0.9,
        "alternatives": None,
        "model_version": "m1",
        "version": 1,
        "created_at": now,
        "updated_at": now,
        "deleted_at": None,
    }


def test_a_row_the_database_refuses_is_returned_and_the_rest_of_the_batch_stored(
    engine: Engine,
) -> None:
    rows = [document_row(f"document {n}") for n in range(9)]
    rows[5]["content"] = None  # NOT NULL: refused by both databases
    failed = QueuedDocument(id=uuid.uuid4(), content="x", version=2, accepted_at=utcnow())
    failure = failure_row(failed, "ValueError: classifier bug", utcnow())

    refused = store_isolating(engine, rows, [failure])

    assert [(row["id"], type(error)) for row, error in refused] == [(rows[5]["id"], IntegrityError)]
    assert [get_document(engine, row["id"]) is not None for row in rows] == [
        n != 5 for n in range(9)
    ]
    stored_failure = get_failure(engine, failed.id)
    assert stored_failure is not None
    assert stored_failure.attempts == 1  # written with the first batch that went through, once


class NulLabelClassifier(Classifier):
    """A model with a broken label: "tech\x00" for texts about technology, which PostgreSQL
    cannot store in a text column (SQLite can)."""

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        return [
            replace(prediction, category=prediction.category + "\x00")
            if prediction.category == "tech"
            else prediction
            for prediction in super().predict(texts)
        ]


def queued(texts: Sequence[str]) -> list[QueuedDocument]:
    return [
        QueuedDocument(id=uuid.uuid4(), content=text, version=n + 1, accepted_at=utcnow())
        for n, text in enumerate(texts)
    ]


def ingest_all(
    connections: Connections, documents: Sequence[QueuedDocument], classifier: Classifier
) -> None:
    connections.ledger.mark([(document.id, document.version) for document in documents])
    ingest(
        [document.to_message() for document in documents],
        engine=connections.engine,
        classifier=classifier,
        ledger=connections.ledger,
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_ingest_records_a_row_postgresql_refuses_as_failed_and_stores_the_others(
    connections: Connections, model_path: Path
) -> None:
    documents = queued([UNAMBIGUOUS["sports"], UNAMBIGUOUS["tech"], UNAMBIGUOUS["politics"]])

    ingest_all(connections, documents, NulLabelClassifier.load(model_path))

    engine = connections.engine
    stored = [get_document(engine, document.id) for document in documents]
    assert [document is not None for document in stored] == [True, False, True]
    failure = get_failure(engine, documents[1].id)
    assert failure is not None
    assert failure.error.startswith(DataError.__name__)
    assert (failure.version, failure.content) == (2, UNAMBIGUOUS["tech"])
    assert connections.ledger.pending_count() == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_content_postgresql_refuses_is_recorded_as_failed(
    connections: Connections, classifier: Classifier
) -> None:
    """NUL in content: the API refuses it, a message built elsewhere may still carry it."""
    documents = queued([UNAMBIGUOUS["tech"], "NUL \x00 inside"])
    ingest_all(connections, documents, classifier)
    failure = get_failure(connections.engine, documents[1].id)
    assert failure is not None
    assert failure.content == "NUL \ufffd inside"
    assert failure.error.startswith("DataError: ")
    assert "replaced by U+FFFD" in failure.error
    assert "INSERT" not in failure.error  # no statement, no other document's parameters
    assert get_document(connections.engine, documents[0].id) is not None


def test_a_booted_worker_process_freezes_what_it_imported(
    settings: Settings, connections: Connections
) -> None:
    """Full collections over SQLAlchemy's, pydantic's and numpy's objects cost a worker tens of
    milliseconds of CPU each; once booted, the process keeps them out of the collector's
    sight."""
    models = ModelCache(connections.engine, seed=settings.model_path, refresh_seconds=60)
    middleware = WorkerMiddleware(settings, lambda: Resources(connections, models))
    broker = StubBroker()
    worker = dramatiq.Worker(broker)
    assert gc.get_freeze_count() == 0
    try:
        middleware.after_worker_boot(broker, worker)
        assert gc.get_freeze_count() > 0
    finally:
        middleware.before_worker_shutdown(broker, worker)
        gc.unfreeze()


# Run by a fresh interpreter: the worker's actor module configures the process it is imported
# in, scores and stores a batch, answers an activation's check as each worker process does every
# MODEL_REFRESH_SECONDS, then says which of the scientific libraries it imported.
WORKER_WITHOUT_SCIKIT_LEARN = """
import json, sys, uuid
from docingest.model import environment, registry
from docingest.schemas import QueuedDocument, utcnow
from docingest.worker import actors

documents = [
    QueuedDocument(id=uuid.UUID(id), content=text, version=1, accepted_at=utcnow()).to_message()
    for id, text in json.loads(sys.argv[1]).items()
]
actors.ingest_batch(documents, 1, [])
engine = actors.resources().connections.engine
checked = registry.check_requested(engine, environment.fingerprint())
loaded = sorted(name for name in sys.modules if name.split(".")[0] in {"sklearn", "scipy", "skops"})
print(json.dumps({"checked": checked, "loaded": loaded}))
"""


def test_a_worker_process_scores_without_scikit_learn_scipy_or_skops(
    sqlite_url: str, redis_url: str, model_path: Path, nb_model_path: Path, tmp_path: Path
) -> None:
    """Issue 23: importing them made each worker process hold 270-330 MB. A batch is classified
    and stored, and the model an activation asked about is checked, by the scoring form alone."""
    engine = make_engine(sqlite_url)
    registry.add(engine, model_path.read_bytes(), activate=True)
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    environment.answers(engine, nb, [environment.fingerprint()])  # an activation asks
    texts = {str(uuid.uuid4()): text for text in UNAMBIGUOUS.values()}
    env = service_env(
        database_url=sqlite_url, broker_url=redis_url, model_path=model_path, data_dir=tmp_path
    )
    run = subprocess.run(
        [sys.executable, "-c", WORKER_WITHOUT_SCIKIT_LEARN, json.dumps(texts)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == {"checked": {nb: None}, "loaded": []}
    stored = [get_document(engine, uuid.UUID(id)) for id in texts]
    assert [document.category if document else None for document in stored] == list(UNAMBIGUOUS)
    assert environment.answers(engine, nb, [environment.fingerprint()]) == {
        environment.fingerprint(): (True, None)
    }
    engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broker_kind", ["redis", "amqp"])
def test_a_retry_that_cannot_be_published_is_dead_lettered_not_lost(
    request: pytest.FixtureRequest,
    broker_kind: str,
    database_url: str,
    model_path: Path,
    tmp_path: Path,
) -> None:
    """A batch fails (a database outage) and Dramatiq's retry cannot be published: the real
    broker, wrapped so that its delayed enqueue raises as a full delay queue or a lost
    connection does. Dramatiq alone logged that and acknowledged the original: no copy left.
    The message must stay on the broker, dead-lettered and listed as a failure."""
    url = request.getfixturevalue("redis_url" if broker_kind == "redis" else "amqp_url")
    queue = open_queue(make_settings(database_url, url, model_path, tmp_path))
    broker = queue.broker
    use_durable_retries(broker)
    publish_now = broker.enqueue

    def enqueue(message: dramatiq.Message[Any], *, delay: int | None = None) -> Any:
        if delay is not None:
            raise ConnectionClosed(OSError("the delay queue refused the retry"))
        return publish_now(message)

    broker.enqueue = enqueue  # type: ignore[method-assign]
    attempts: list[int] = []

    def failing_ingest(documents: list[dict[str, Any]]) -> None:
        attempts.append(len(documents))
        raise RuntimeError("the database is down")

    dramatiq.actor(
        failing_ingest, broker=broker, actor_name=INGEST_ACTOR, queue_name=DOCUMENTS_QUEUE
    )
    document = queued([UNAMBIGUOUS["sports"]])[0]
    queue.publish([ingest_message([document.to_message()])])
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        wait_until(lambda: bool(attempts), 20, "the message processed")
        wait_until(lambda: queue.count_dead_letters() == 1, 10, "the message dead-lettered")
    finally:
        worker.stop()
        dead = queue.dead_letters(10, max_bytes=1 << 20)
        queue.close()
    assert attempts == [1]
    assert [(letter.actor, letter.documents) for letter in dead] == [(INGEST_ACTOR, 1)]
