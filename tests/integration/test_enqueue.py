"""From accepted documents to queue messages, on a real Redis: group commit, message limits,
refusal when the queue is full."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from docingest.connections import Connections
from docingest.queue import QueueFullError
from docingest.queue.enqueue import Enqueuer, Limits
from docingest.queue.names import DOCUMENTS_QUEUE
from docingest.schemas import DocumentIn

# The queue and the ledger are Redis's: one database kind is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def documents(count: int, length: int = 10) -> list[DocumentIn]:
    return [DocumentIn(content=f"{n:0{length}d}") for n in range(count)]


def queued_messages(connections: Connections) -> list[list[dict[str, Any]]]:
    """The documents of each message waiting on the documents queue, consumed."""
    consumer = connections.queue.broker.consume(DOCUMENTS_QUEUE, prefetch=100, timeout=200)
    found = []
    try:
        for message in consumer:
            if message is None:
                break
            found.append(message.args[0])
            consumer.ack(message)
    finally:
        consumer.close()
    return found


def test_group_commit_puts_concurrent_submits_in_one_message(connections: Connections) -> None:
    async def scenario() -> list[int]:
        enqueuer = Enqueuer(connections.queue, connections.ledger, Limits(linger_seconds=0.01))
        try:
            # A lone request goes alone, at once; it also reads the room for the next second.
            await enqueuer.submit(documents(1))
            concurrent = await asyncio.gather(*(enqueuer.submit(documents(2)) for _ in range(20)))
        finally:
            await enqueuer.close()
        return [queued.version for answer in concurrent for queued in answer]

    versions = asyncio.run(scenario())
    messages = queued_messages(connections)
    assert [len(message) for message in messages] == [1, 40]
    assert [document["version"] for document in messages[1]] == versions
    assert len(set(versions)) == 40


def test_a_message_holds_at_most_max_batch_documents_and_max_message_bytes(
    connections: Connections,
) -> None:
    by_count = Enqueuer(connections.queue, connections.ledger, Limits(max_batch=3))
    by_count.send(documents(10))
    assert [len(message) for message in queued_messages(connections)] == [3, 3, 3, 1]

    limits = Limits(max_batch=100, max_message_bytes=100)
    by_size = Enqueuer(connections.queue, connections.ledger, limits)
    by_size.send([*documents(5, length=40), DocumentIn(content="x" * 150), *documents(1, 40)])
    messages = queued_messages(connections)
    assert [len(message) for message in messages] == [2, 2, 1, 1, 1]
    sizes = [sum(len(d["content"].encode()) for d in message) for message in messages]
    assert sizes == [80, 80, 40, 150, 40]  # a document above the limit travels alone


def test_a_full_queue_by_size_refuses_with_queue_full_and_queues_nothing(
    connections: Connections,
) -> None:
    Enqueuer(connections.queue, connections.ledger).send(documents(1))
    full = Enqueuer(connections.queue, connections.ledger, Limits(max_queued_bytes=1))

    async def submit() -> None:
        try:
            await full.submit(documents(1))
        finally:
            await full.close()

    with pytest.raises(QueueFullError, match=r"bytes are waiting \(limit 1\)"):
        asyncio.run(submit())
    assert connections.ledger.pending_count() == 1
    assert [len(message) for message in queued_messages(connections)] == [1]
