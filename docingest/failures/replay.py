"""Every failure stays visible and replayable.

Two kinds: a document the classifier raised on or the database refused (a row in `failures`,
written by the worker beside the rest of its batch), and a message Dramatiq gave up on after its
retries (a dead letter of its queue, e.g. after a database outage longer than the retry window;
`MessageQueue.dead_letters` lists them for every queue). Replay puts both back on the
queue; versions are kept, so a replay never overwrites a newer version stored meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from docingest.failures.repository import take_failures
from docingest.queue.enqueue import Enqueuer
from docingest.schemas import QueuedDocument
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

    documents = take_failures(engine, requeue)
    return Replayed(documents=documents, dead_letters=enqueuer.queue.requeue_dead_letters())
