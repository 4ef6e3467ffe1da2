"""Every failure stays visible and replayable.

Two kinds: a document the classifier raised on (a row in `failures`, written by the worker beside
the rest of its batch), and a message Dramatiq gave up on after its retries (dead-lettered in
Redis, e.g. after a database outage longer than the retry window). Replay puts both back on the
queue; versions are kept, so a replay never overwrites a newer version stored meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine
from sqlmodel import Session

from docingest.db import get_document, get_failure, take_failures
from docingest.enqueue import Enqueuer, push_message, queue_key
from docingest.ledger import Ledger
from docingest.schemas import DocumentStatus, QueuedDocument
from docingest.tables import Failure


@dataclass(frozen=True)
class Replayed:
    documents: int
    dead_letters: int


def replay(engine: Engine, enqueuer: Enqueuer, broker: dramatiq.Broker) -> Replayed:
    def requeue(failures: Sequence[Failure]) -> None:
        queued = [
            QueuedDocument(id=f.id, content=f.content, version=f.version, accepted_at=f.accepted_at)
            for f in failures
        ]
        enqueuer.ledger.mark([(document.id, document.version) for document in queued])
        enqueuer.requeue(queued)

    documents = take_failures(engine, requeue)
    return Replayed(documents=documents, dead_letters=requeue_dead_letters(broker))


def _dead_letter_keys(broker: RedisBroker) -> tuple[str, str]:
    dead = f"{queue_key(broker)}.XQ"
    return dead, f"{dead}.msgs"


def count_dead_letters(broker: dramatiq.Broker) -> int:
    if not isinstance(broker, RedisBroker):
        return 0
    dead, _ = _dead_letter_keys(broker)
    return int(broker.client.zcard(dead))


def requeue_dead_letters(broker: dramatiq.Broker) -> int:
    """Move dead-lettered messages back onto the queue, with their retry count reset."""
    if not isinstance(broker, RedisBroker):
        return 0
    dead, dead_messages = _dead_letter_keys(broker)
    moved = 0
    message_ids = cast(list[bytes], broker.client.zrange(dead, 0, -1))
    for message_id in message_ids:
        data = cast(bytes | None, broker.client.hget(dead_messages, message_id))
        if data is None:
            continue
        message = dramatiq.Message.decode(data)
        fresh = message.copy(options={**message.options, "retries": 0})
        with broker.client.pipeline(transaction=True) as pipeline:
            push_message(pipeline, broker, message_id, fresh.encode())
            pipeline.zrem(dead, message_id)
            pipeline.hdel(dead_messages, message_id)
            pipeline.execute()
        moved += 1
    return moved


def document_status(
    session: Session, ledger: Ledger, document_id: uuid.UUID
) -> DocumentStatus | None:
    """The newest known version decides; at equal versions stored beats failed beats queued."""
    candidates: list[tuple[int, int, DocumentStatus]] = []
    if document := get_document(session, document_id):
        candidates.append((document.version, 2, _status(document_id, "stored", document.version)))
    if failure := get_failure(session, document_id):
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
