"""Every failure stays visible and replayable.

Two kinds: a document the classifier raised on or the database refused (a row in `failures`,
written by the worker beside the rest of its batch), and a message Dramatiq gave up on after its
retries (a dead letter of its queue, e.g. after a database outage longer than the retry window;
`MessageQueue.dead_letters` lists them for every queue). Replay puts both back on the
queue; versions are kept, so a replay never overwrites a newer version stored meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from docingest.documents import store
from docingest.ledger import Ledger
from docingest.queue.enqueue import Enqueuer
from docingest.schemas import DocumentStatus, QueuedDocument
from docingest.tables import Failure


@dataclass(frozen=True)
class Replayed:
    documents: int
    dead_letters: int


def replay(engine: Engine, enqueuer: Enqueuer) -> Replayed:
    """Failed documents found now, then the dead letters of every queue, back on their queues."""

    def requeue(failures: Sequence[Failure]) -> None:
        queued = [
            QueuedDocument(id=f.id, content=f.content, version=f.version, accepted_at=f.accepted_at)
            for f in failures
        ]
        enqueuer.ledger.mark([(document.id, document.version) for document in queued])
        enqueuer.requeue(queued)

    documents = store.take_failures(engine, requeue)
    return Replayed(documents=documents, dead_letters=enqueuer.queue.requeue_dead_letters())


def document_status(
    engine: Engine, ledger: Ledger, document_id: uuid.UUID
) -> DocumentStatus | None:
    """The newest known version decides; at equal versions stored (or deleted: a tombstone is a
    stored version) beats failed beats queued."""
    candidates: list[tuple[int, int, DocumentStatus]] = []
    if document := store.get_document(engine, document_id):
        stored = "stored" if document.deleted_at is None else "deleted"
        candidates.append((document.version, 2, _status(document_id, stored, document.version)))
    if failure := store.get_failure(engine, document_id):
        status = _status(document_id, "failed", failure.version, failure.error)
        candidates.append((failure.version, 1, status))
    if (pending := ledger.pending_version(document_id)) is not None:
        candidates.append((pending, 0, _status(document_id, "queued", pending)))
    return max(candidates, key=lambda c: c[:2])[2] if candidates else None


def _status(
    document_id: uuid.UUID, status: str, version: int, error: str | None = None
) -> DocumentStatus:
    return DocumentStatus.model_validate(
        {"id": document_id, "status": status, "version": version, "error": error}
    )
