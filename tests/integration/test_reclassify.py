"""Reclassification through the queue with a real worker process, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from docingest.connections import Connections
from docingest.model import registry
from docingest.model.classifier import Classifier
from docingest.model.reclassify import Pacing, run
from docingest.model.selection import Selection, count_selected
from docingest.queue.names import RECLASSIFY_QUEUE
from docingest.schemas import utcnow
from docingest.worker.ingest import ingest, reclassify
from tests.faults import content_for

DOCUMENTS = 300


@pytest.fixture
def stored(
    engine: Engine, connections: Connections, classifier: Classifier, model_path: Path
) -> list[uuid.UUID]:
    """DOCUMENTS documents classified by the default model, which is active."""
    registry.add(engine, model_path.read_bytes(), activate=True)
    now = utcnow()
    documents = [
        {"id": str(uuid.uuid4()), "content": content_for(n), "version": 1, "accepted_at": now}
        for n in range(DOCUMENTS)
    ]
    ingest(documents, engine=engine, classifier=classifier, ledger=connections.ledger)
    return [uuid.UUID(document["id"]) for document in documents]


def test_reclassify_waits_behind_new_documents_and_keeps_few_messages_queued(
    engine: Engine,
    connections: Connections,
    nb_model_path: Path,
    stored: list[uuid.UUID],
) -> None:
    """No worker runs: what the run queues stays visible. While more new documents wait than
    `live_backlog`, it queues nothing; then never more than `in_flight` messages at a time."""
    from docingest.queue.enqueue import Enqueuer
    from docingest.schemas import DocumentIn

    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    pacing = Pacing(batch_size=10, in_flight=2, live_backlog=5, poll_seconds=0.01)
    services = (engine, connections.queue, connections.ledger)
    queued: list[int] = []

    def watch(done: int, total: int) -> None:
        queued.append(connections.queue.depths()["reclassify"])
        if len(queued) >= 50:
            raise KeyboardInterrupt

    new = [DocumentIn(content=content_for(n)) for n in range(6)]
    sent = Enqueuer(connections.queue, connections.ledger).send(new)
    with pytest.raises(KeyboardInterrupt):
        run(
            *services,
            Selection(nb),
            pacing=pacing,
            on_progress=watch,
        )
    assert set(queued) == {0}

    # The new documents were taken: nothing waits any more.
    connections.ledger.settle([(document.id, document.version) for document in sent])
    queued.clear()
    with pytest.raises(KeyboardInterrupt):
        run(
            *services,
            Selection(nb),
            pacing=pacing,
            on_progress=watch,
        )
    assert max(queued) == pacing.in_flight


def _stored_with(engine: Engine) -> dict[str, int]:
    query = text("SELECT model_version, count(*) FROM documents GROUP BY model_version")
    with engine.connect() as connection:
        return {str(version): count for version, count in connection.execute(query).all()}


def test_a_run_for_an_older_model_never_rewrites_what_a_newer_one_classified(
    engine: Engine,
    connections: Connections,
    classifier: Classifier,
    nb_model_path: Path,
    stored: list[uuid.UUID],
) -> None:
    """The default model is activated, then nb: a run (or a message still queued) for the
    default finds nothing to do, and its worker leaves nb's classifications alone."""
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=True).version
    reclassify([str(i) for i in stored], engine=engine, classifier=registry.load(engine, nb))
    assert _stored_with(engine) == {nb: DOCUMENTS}
    assert count_selected(engine, Selection(classifier.version)) == 0
    updated = reclassify([str(i) for i in stored], engine=engine, classifier=classifier)
    assert updated == 0
    assert _stored_with(engine) == {nb: DOCUMENTS}


class InProcessWorker:
    """A worker's two jobs in threads of the test: new documents at `per_second`, classified by
    the active model, and the reclassify messages the run queues."""

    def __init__(self, connections: Connections, per_second: float) -> None:
        self.connections = connections
        self.per_second = per_second
        self.stop = threading.Event()
        self.arrived = 0
        self.models: dict[str, Classifier] = {}
        self.threads = [threading.Thread(target=job) for job in (self._arrive, self._reclassify)]

    def __enter__(self) -> InProcessWorker:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def _model(self, version: str) -> Classifier:
        if version not in self.models:
            self.models[version] = registry.load(self.connections.engine, version)
        return self.models[version]

    def _arrive(self) -> None:
        engine = self.connections.engine
        while not self.stop.wait(1 / self.per_second):
            active = self._model(registry.active_version(engine) or "")
            document = {"id": str(uuid.uuid4()), "content": content_for(self.arrived),
                        "version": 1, "accepted_at": utcnow()}  # fmt: skip
            ingest([document], engine=engine, classifier=active, ledger=self.connections.ledger)
            self.arrived += 1

    def _reclassify(self) -> None:
        consumer = self.connections.queue.broker.consume(RECLASSIFY_QUEUE, timeout=100)
        try:
            while not self.stop.is_set():
                message = next(consumer)
                if message is None:
                    continue
                ids, version = message.args
                model = self._model(version)
                reclassify(ids, engine=self.connections.engine, classifier=model)
                consumer.ack(message)
        finally:
            consumer.close()


@pytest.mark.parametrize("target_active", [True, False], ids=["active", "not active"])
def test_a_run_ends_while_documents_keep_arriving(
    engine: Engine,
    connections: Connections,
    nb_model_path: Path,
    stored: list[uuid.UUID],
    target_active: bool,
) -> None:
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=target_active).version
    pacing = Pacing(batch_size=50, poll_seconds=0.05, settle_seconds=0.5)
    services = (engine, connections.queue, connections.ledger)
    with InProcessWorker(connections, per_second=50) as worker:
        started = time.monotonic()
        outcome = run(*services, Selection(nb), pacing=pacing)
        took = time.monotonic() - started
    assert (outcome.total, outcome.remaining, outcome.superseded_by) == (DOCUMENTS, 0, None)
    assert worker.arrived > 0
    assert took < 60  # without passes and a bounded selection it never ended


def test_a_run_stops_when_another_model_is_activated(
    engine: Engine,
    connections: Connections,
    classifier: Classifier,
    nb_model_path: Path,
    stored: list[uuid.UUID],
) -> None:
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=True).version
    pacing = Pacing(batch_size=10, in_flight=1, poll_seconds=0.01, settle_seconds=0.5)

    def activate_the_default_midway(done: int, total: int) -> None:
        if done or connections.queue.depths()["reclassify"]:
            registry.activate(engine, classifier.version)

    with InProcessWorker(connections, per_second=1):
        outcome = run(
            engine,
            connections.queue,
            connections.ledger,
            Selection(nb),
            pacing=pacing,
            on_progress=activate_the_default_midway,
        )
    assert outcome.superseded_by == classifier.version
    # The default, activated after nb, is the newer model: nothing is left to bring to nb.
    assert outcome.remaining == count_selected(engine, Selection(nb)) == 0
    assert _stored_with(engine)[classifier.version] > 0
