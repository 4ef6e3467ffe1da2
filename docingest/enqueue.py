"""Where an accepted document waits to be queued: versions, messages, group commit, backpressure.

A queue message carries a list of documents. Concurrent requests are coalesced: while one
batch is being written to the broker, the next one fills up, so under load the broker sees a
few large messages instead of one per request, and under low load nothing waits.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio.to_thread
import dramatiq
import dramatiq.errors
import redis
from dramatiq.brokers.redis import RedisBroker
from redis.client import Pipeline

from docingest.broker import INGEST_ACTOR, QUEUE_NAME
from docingest.ledger import Ledger, ledger_for
from docingest.schemas import DocumentIn, QueuedDocument, utcnow

# How long a queue-depth reading stays good enough to refuse work on.
_DEPTH_MAX_AGE_SECONDS = 1.0


class BrokerUnavailableError(Exception):
    """The broker did not take the message: none of its documents were accepted."""


class QueueFullError(Exception):
    """More documents are waiting than MAX_QUEUED_DOCUMENTS: come back later."""


class Enqueuer:
    def __init__(
        self,
        broker: dramatiq.Broker,
        *,
        max_batch: int = 500,
        linger_seconds: float = 0.0,
        max_queued: int | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self._broker = broker
        self.ledger = ledger or ledger_for(broker)
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._max_queued = max_queued
        self._depth: tuple[float, int | None] = (0.0, None)
        self._last_batch_requests = 0
        self._pending: asyncio.Queue[_Request] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def send(self, documents: Sequence[DocumentIn]) -> list[QueuedDocument]:
        """Stamp versions and queue the documents; return only once the broker holds them."""
        if not documents:
            return []
        ids = [doc.id for doc in documents]
        try:
            first, depth = self.ledger.reserve(ids)
        except redis.RedisError as error:
            raise BrokerUnavailableError(str(error)) from error
        self._depth = (time.monotonic(), depth)
        accepted_at = utcnow()
        # Built from fields already validated, so without validating them again.
        queued = [
            QueuedDocument.model_construct(
                id=doc.id, content=doc.content, version=first + i, accepted_at=accepted_at
            )
            for i, doc in enumerate(documents)
        ]
        try:
            self.requeue(queued)
        except BrokerUnavailableError:
            self._forget(ids)
            raise
        return queued

    def requeue(self, queued: Sequence[QueuedDocument]) -> None:
        """Put already versioned documents on the queue (a new batch, or a replay), all or none."""
        messages = [
            _message(queued[start : start + self._max_batch])
            for start in range(0, len(queued), self._max_batch)
        ]
        try:
            if isinstance(self._broker, RedisBroker):
                _enqueue_atomically(self._broker, messages)
            else:
                for message in messages:
                    self._broker.enqueue(message)
        except (redis.RedisError, dramatiq.errors.BrokerConnectionError) as error:
            raise BrokerUnavailableError(str(error)) from error

    def _forget(self, ids: Sequence[uuid.UUID]) -> None:
        """Best effort: with Redis down this fails too, and the ids read as waiting."""
        try:
            self.ledger.forget(ids)
        except redis.RedisError:
            return

    async def submit(self, documents: Sequence[DocumentIn]) -> list[QueuedDocument]:
        """Send with group commit: share one message with whatever other requests are waiting."""
        if not documents:
            return []
        await self._check_room()
        if self._task is None:
            self._task = asyncio.create_task(self._flush_forever())
        request = _Request(list(documents), asyncio.get_running_loop().create_future())
        await self._pending.put(request)
        return await request.result

    async def _check_room(self) -> None:
        if self._max_queued is None:
            return
        read_at, depth = self._depth
        if time.monotonic() - read_at > _DEPTH_MAX_AGE_SECONDS:
            depth = await anyio.to_thread.run_sync(self._read_depth)
        if depth is not None and depth >= self._max_queued:
            raise QueueFullError(f"{depth} documents are waiting (limit {self._max_queued})")

    def _read_depth(self) -> int | None:
        try:
            depth = self.ledger.pending_count()
        except redis.RedisError:
            depth = None  # the send will fail and say why
        self._depth = (time.monotonic(), depth)
        return depth

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _flush_forever(self) -> None:
        while True:
            batch = await self._collect()
            try:
                queued = await anyio.to_thread.run_sync(
                    self.send, [doc for request in batch for doc in request.documents]
                )
            except Exception as error:  # every waiting request must hear of the failure
                for request in batch:
                    request.fail(error)
                continue
            offset = 0
            for request in batch:
                request.succeed(queued[offset : offset + len(request.documents)])
                offset += len(request.documents)

    async def _collect(self) -> list[_Request]:
        """Take what is waiting now; under concurrent load, linger briefly for more.

        The linger applies only when the previous batch held several requests: a lone client
        never waits, while concurrent ones fill larger messages, which the worker stores for
        a fraction of the per-message cost.
        """
        batch = [await self._pending.get()]
        size = len(batch[0].documents)
        linger = self._linger if self._last_batch_requests > 1 else 0.0
        deadline = time.monotonic() + linger
        while size < self._max_batch:
            if self._pending.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self._pending.get(), remaining)
                except TimeoutError:
                    break
            else:
                request = self._pending.get_nowait()
            batch.append(request)
            size += len(request.documents)
        self._last_batch_requests = len(batch)
        return batch


@dataclass
class _Request:
    documents: list[DocumentIn]
    result: asyncio.Future[list[QueuedDocument]] = field(repr=False)

    def succeed(self, queued: list[QueuedDocument]) -> None:
        if not self.result.done():
            self.result.set_result(queued)

    def fail(self, error: Exception) -> None:
        if not self.result.done():
            self.result.set_exception(error)


def _message(documents: Sequence[QueuedDocument]) -> dramatiq.Message[None]:
    return dramatiq.Message(
        queue_name=QUEUE_NAME,
        actor_name=INGEST_ACTOR,
        args=([doc.to_message() for doc in documents],),
        kwargs={},
        options={"redis_message_id": str(uuid.uuid4())},
    )


def _enqueue_atomically(broker: RedisBroker, messages: Sequence[dramatiq.Message[None]]) -> None:
    """All messages in one MULTI/EXEC: a bulk request is queued whole or not at all."""
    with broker.client.pipeline(transaction=True) as pipeline:
        for message in messages:
            broker.emit_before("enqueue", message, None)
            push_message(pipeline, broker, message.options["redis_message_id"], message.encode())
        pipeline.execute()
    for message in messages:
        broker.emit_after("enqueue", message, None)


def queue_key(broker: RedisBroker, queue_name: str = QUEUE_NAME) -> str:
    """The Redis list of a Dramatiq queue's waiting message ids."""
    return f"{broker.namespace}:{queue_name}"


def push_message(
    pipeline: Pipeline, broker: RedisBroker, message_id: str | bytes, data: bytes
) -> None:
    """Write what Dramatiq's own enqueue script writes, onto a pipeline of the caller's.

    The message body into `<queue>.msgs`, its id onto the `<queue>` list: one round trip for
    many messages instead of one each.
    """
    key = queue_key(broker)
    pipeline.hset(f"{key}.msgs", message_id, data)
    pipeline.rpush(key, message_id)
