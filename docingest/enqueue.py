"""Where an accepted document waits to be queued: versions, messages, group commit.

A queue message carries a list of documents. Concurrent requests are coalesced: while one
batch is being written to the broker, the next one fills up, so under load the broker sees a
few large messages instead of one per request, and under low load nothing waits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio.to_thread
import dramatiq
import dramatiq.errors
import redis
from dramatiq.brokers.redis import RedisBroker

from docingest.broker import INGEST_ACTOR, QUEUE_NAME
from docingest.models import DocumentIn, QueuedDocument, utcnow

VERSION_KEY = "docingest:version"


class BrokerUnavailableError(Exception):
    """The broker did not confirm a message: the documents in it were not accepted."""


class VersionSource(Protocol):
    def reserve(self, count: int) -> int:
        """Reserve `count` consecutive versions and return the first."""


class RedisVersions:
    """A counter shared by every API process, so versions follow arrival order globally."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def reserve(self, count: int) -> int:
        last = int(self._client.incrby(VERSION_KEY, count))
        return last - count + 1


class ClockVersions:
    """For brokers without Redis: nanoseconds since the epoch, never repeating in a process."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def reserve(self, count: int) -> int:
        with self._lock:
            first = max(time.time_ns(), self._last + 1)
            self._last = first + count - 1
        return first


def version_source_for(broker: dramatiq.Broker) -> VersionSource:
    if isinstance(broker, RedisBroker):
        return RedisVersions(broker.client)
    return ClockVersions()


class Enqueuer:
    def __init__(
        self,
        broker: dramatiq.Broker,
        *,
        max_batch: int = 500,
        linger_seconds: float = 0.0,
        versions: VersionSource | None = None,
    ) -> None:
        self._broker = broker
        self._versions = versions or version_source_for(broker)
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._pending: asyncio.Queue[_Request] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def send(self, documents: Sequence[DocumentIn]) -> list[QueuedDocument]:
        """Stamp versions and queue the documents; return only once the broker holds them."""
        if not documents:
            return []
        try:
            first = self._versions.reserve(len(documents))
            accepted_at = utcnow()
            queued = [
                QueuedDocument(
                    id=doc.id, content=doc.content, version=first + i, accepted_at=accepted_at
                )
                for i, doc in enumerate(documents)
            ]
            for start in range(0, len(queued), self._max_batch):
                self._broker.enqueue(_message(queued[start : start + self._max_batch]))
        except (redis.RedisError, dramatiq.errors.BrokerConnectionError) as error:
            raise BrokerUnavailableError(str(error)) from error
        return queued

    async def submit(self, documents: Sequence[DocumentIn]) -> list[QueuedDocument]:
        """Send with group commit: share one message with whatever other requests are waiting."""
        if not documents:
            return []
        if self._task is None:
            self._task = asyncio.create_task(self._flush_forever())
        request = _Request(list(documents), asyncio.get_running_loop().create_future())
        await self._pending.put(request)
        return await request.result

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
        """Take what is waiting now, then linger briefly for more, up to the batch cap."""
        batch = [await self._pending.get()]
        size = len(batch[0].documents)
        deadline = time.monotonic() + self._linger
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
        options={},
    )
