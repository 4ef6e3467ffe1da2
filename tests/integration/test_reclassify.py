"""Reclassification through the queue with a real worker process, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine

from docingest.connections import Connections
from docingest.model import registry
from docingest.model.classifier import Classifier
from docingest.model.reclassify import Pacing, run
from docingest.model.selection import Selection
from docingest.schemas import utcnow
from docingest.worker.ingest import ingest
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
