"""From accepted documents to queue messages, on a real Redis: group commit, message limits,
refusal when the queue is full."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

from docingest.connections import Connections, connected
from docingest.ledger import Ledger
from docingest.queue import PublishUncertainError, QueueFullError
from docingest.queue.enqueue import Enqueuer, Limits
from docingest.queue.names import DOCUMENTS_QUEUE
from docingest.schemas import DocumentIn
from docingest.settings import Settings
from tests.proxy import DelayingProxy

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


def test_versions_reserved_after_the_answer_are_never_published(
    connections: Connections, settings: Settings
) -> None:
    """The send's threads are busy for a while (a backpressure reading on a slow link), then the
    ledger is slow to answer: the request is answered 503 "may or may not" at its deadline,
    counted from when it was handed to a thread, not from when a thread took it up. The versions
    its send reserves after that answer must not be published: a client's retry may hold older
    ones by then, and the stale content would win."""
    proxy = DelayingProxy(
        redis.Redis.from_url(
            settings.ledger_url or settings.broker_url
        ).connection_pool.connection_kwargs["port"]
    )
    slow = settings.model_copy(update={"ledger_url": f"redis://127.0.0.1:{proxy.port}/0"})

    async def scenario(ledger: Ledger) -> None:
        enqueuer = Enqueuer(connections.queue, ledger, Limits(timeout_seconds=1.0))
        loop = asyncio.get_running_loop()
        await enqueuer.submit(documents(1))  # reads the room: not read again for a second
        for _ in range(2):
            enqueuer._executor.submit(time.sleep, 0.6)
        loop.call_later(0.4, proxy.holding.set)  # before the send is taken up, at 0.6 s
        loop.call_later(1.4, proxy.holding.clear)  # after the 503, before 1.0 s of the send
        try:
            with pytest.raises(PublishUncertainError, match="did not answer in time"):
                await enqueuer.submit(documents(1))
            await asyncio.sleep(1.0)  # the reserve is answered and the send ends meanwhile
        finally:
            await enqueuer.close()

    try:
        with connected(slow) as through_proxy:
            asyncio.run(scenario(through_proxy.ledger))
    finally:
        proxy.close()
    assert [len(message) for message in queued_messages(connections)] == [1]  # the first only
    assert connections.ledger.pending_count() == 1
