"""Where an accepted document waits to be queued: versions, messages, group commit, backpressure.

A queue message carries a list of documents. Concurrent requests are coalesced: while one
batch is being written to the broker, the next one fills up, so under load the broker sees a
few large messages instead of one per request, and under low load nothing waits. Messages are
bounded by documents (ENQUEUE_MAX_BATCH) and by bytes (ENQUEUE_MAX_MESSAGE_BYTES), what waits by
documents (MAX_QUEUED_DOCUMENTS) and by bytes (MAX_QUEUED_BYTES).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat

import structlog

from docingest.ledger import Ledger, LedgerUnavailableError
from docingest.observe import tracing
from docingest.queue import (
    BrokerUnavailableError,
    MessageQueue,
    PublishUncertainError,
    QueueFullError,
)
from docingest.queue.messages import ingest_message
from docingest.schemas import DocumentIn, QueuedDocument, utcnow

logger = structlog.get_logger(__name__)

# How long a queue-depth reading stays good enough to refuse work on.
_DEPTH_MAX_AGE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_batch: int = 500
    max_message_bytes: int = 8 * 1024**2
    linger_seconds: float = 0.0
    max_queued: int | None = None
    max_queued_bytes: int | None = None
    # How long each wait of a request may take (the backpressure reading, the batch ahead of
    # it, its own batch): a cut link must not hang it, a slow but healthy broker must get it.
    timeout_seconds: float = 10.0


class Enqueuer:
    def __init__(
        self,
        queue: MessageQueue,
        ledger: Ledger,
        limits: Limits = Limits(),
        *,
        traced: bool = False,
    ) -> None:
        """`traced`: messages name the requests they carry (docingest/observe/tracing.py)."""
        self.queue = queue
        self.ledger = ledger
        self._limits = limits
        self._traced = traced
        # The last readings of what waits; the pending count also comes free with each reserve.
        self._room_read_at = -float("inf")
        self._depth: int | None = None
        self._queued_bytes: int | None = None
        self._last_batch_requests = 0
        self._pending: asyncio.Queue[_Request] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Its own threads: a slow /stats or a long replay in the shared pool cannot stall ingestion.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="enqueue")

    def send(
        self,
        documents: Sequence[DocumentIn],
        origins: Sequence[str | None] = (),
        deadline: float | None = None,
    ) -> list[QueuedDocument]:
        """Stamp versions and queue the documents; return only once the broker holds them.

        `BrokerUnavailableError`: nothing was accepted. `PublishUncertainError`: the broker may
        hold them; their pending entries stay, for the worker or the reconciler to clear.
        `origins`, when traced: each document's request (its span's traceparent). `deadline`
        (`time.monotonic()`): when the request is answered whatever happens here. Versions
        reserved after it are never published: the client may have sent the same documents
        again meanwhile, and these versions would then be newer than the retry's.
        """
        if not documents:
            return []
        if deadline is None:
            deadline = time.monotonic() + self._limits.timeout_seconds
        if time.monotonic() > deadline:
            raise BrokerUnavailableError("the request timed out before it was sent")
        ids = [doc.id for doc in documents]
        try:
            first, depth = self.ledger.reserve(ids)
        except LedgerUnavailableError as error:
            raise BrokerUnavailableError(f"version ledger unavailable: {error}") from error
        if depth is not None:
            self._depth = depth
        accepted_at = utcnow()
        # Built from fields already validated, so without validating them again.
        queued = [
            QueuedDocument.model_construct(
                id=doc.id, content=doc.content, version=first + i, accepted_at=accepted_at
            )
            for i, doc in enumerate(documents)
        ]
        try:
            if time.monotonic() > deadline:
                raise BrokerUnavailableError("versions reserved too late to be used")
            self.requeue(queued, origins)
        except PublishUncertainError as error:
            raise PublishUncertainError(str(error), ids=ids) from error
        except (BrokerUnavailableError, QueueFullError):
            self._forget(queued)
            raise
        return queued

    def requeue(self, queued: Sequence[QueuedDocument], origins: Sequence[str | None] = ()) -> None:
        """Put already versioned documents on the queue (a new batch, or a replay), all or none;
        then tell the ledger the broker holds them."""
        if origins:
            tracing.publish(self.queue, list(self._messages(queued)), origins)
        else:
            self.queue.publish([ingest_message(part) for part in self._messages(queued)])
        self._published(queued)

    def _published(self, queued: Sequence[QueuedDocument]) -> None:
        """Best effort: the broker holds the messages whatever happens here, so the answer stays
        a 202; an entry left unconfirmed is only abandoned past RECONCILE_ABANDON_SECONDS."""
        try:
            self.ledger.published([(document.id, document.version) for document in queued])
        except LedgerUnavailableError as error:
            logger.warning("publish not recorded in the ledger", error=str(error))

    def _messages(self, queued: Sequence[QueuedDocument]) -> Iterator[list[dict[str, object]]]:
        """Consecutive documents, at most `max_batch` and `max_message_bytes` a message (a larger
        document travels alone)."""
        limits = self._limits
        part: list[dict[str, object]] = []
        size = 0
        for document in queued:
            length = len(document.content.encode())
            if part and (len(part) >= limits.max_batch or size + length > limits.max_message_bytes):
                yield part
                part, size = [], 0
            part.append(document.to_message())
            size += length
        if part:
            yield part

    def _forget(self, queued: Sequence[QueuedDocument]) -> None:
        """Best effort: with the ledger down this fails too, and the reconciler clears them."""
        try:
            self.ledger.forget([(document.id, document.version) for document in queued])
        except LedgerUnavailableError:
            return

    async def submit(self, documents: Sequence[DocumentIn]) -> list[QueuedDocument]:
        """Send with group commit: share one message with whatever other requests are waiting."""
        if not documents:
            return []
        await self._check_room()
        if self._task is None:
            # In a context of its own: it serves every request, not the first one's span.
            self._task = asyncio.create_task(self._flush_forever(), context=contextvars.Context())
        request = _Request(list(documents), asyncio.get_running_loop().create_future())
        if self._traced:
            request.origin = tracing.current_traceparent()
        await self._pending.put(request)
        return await request.result

    async def _check_room(self) -> None:
        """Refuses on the last readings; a reading that does not come in time (every thread
        waiting on a cut link) is not waited for: the send will say what is wrong."""
        if time.monotonic() - self._room_read_at > _DEPTH_MAX_AGE_SECONDS:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    loop.run_in_executor(self._executor, self._read_room),
                    self._limits.timeout_seconds,
                )
        if refusal := self._refusal():
            raise QueueFullError(refusal)

    def _read_room(self) -> None:
        """Unreadable figures do not refuse: the send will fail and say why."""
        limits = self._limits
        self._room_read_at = time.monotonic()
        if limits.max_queued is not None:
            try:
                self._depth = self.ledger.pending_count()
            except LedgerUnavailableError:
                self._depth = None
        if limits.max_queued_bytes is not None:
            try:
                self._queued_bytes = self.queue.queued_bytes()
            except BrokerUnavailableError:
                self._queued_bytes = None

    def _refusal(self) -> str | None:
        """Why new documents must wait, from the last readings, or None."""
        limits, depth, queued_bytes = self._limits, self._depth, self._queued_bytes
        if depth is not None and limits.max_queued is not None and depth >= limits.max_queued:
            return f"{depth} documents are waiting (limit {limits.max_queued})"
        if (
            queued_bytes is not None
            and limits.max_queued_bytes is not None
            and queued_bytes >= limits.max_queued_bytes
        ):
            return f"{queued_bytes} bytes are waiting (limit {limits.max_queued_bytes})"
        return None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _flush_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            documents = [doc for request in batch for doc in request.documents]
            origins = _origins(batch) if self._traced else ()
            # From here, not from when a thread takes the batch up: the thread may start late.
            deadline = time.monotonic() + self._limits.timeout_seconds
            try:
                queued = await asyncio.wait_for(
                    loop.run_in_executor(self._executor, self.send, documents, origins, deadline),
                    self._limits.timeout_seconds,
                )
            except TimeoutError:
                ids = [document.id for document in documents]
                timed_out = PublishUncertainError("the broker did not answer in time", ids=ids)
                for request in batch:
                    request.fail(timed_out)
                continue
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
        a fraction of the per-message cost. A batch stops growing at `max_batch` documents or
        `max_message_bytes`.
        """
        limits = self._limits
        batch = [await self._pending.get()]
        count, size = len(batch[0].documents), batch[0].size
        linger = limits.linger_seconds if self._last_batch_requests > 1 else 0.0
        deadline = time.monotonic() + linger
        while count < limits.max_batch and size < limits.max_message_bytes:
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
            count += len(request.documents)
            size += request.size
        self._last_batch_requests = len(batch)
        return batch


def _origins(batch: Sequence[_Request]) -> list[str | None]:
    """Each document's request traceparent, in the order of the documents."""
    return [
        origin for request in batch for origin in repeat(request.origin, len(request.documents))
    ]


@dataclass
class _Request:
    documents: list[DocumentIn]
    result: asyncio.Future[list[QueuedDocument]] = field(repr=False)
    size: int = field(init=False)
    origin: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.size = sum(len(document.content) for document in self.documents)

    def succeed(self, queued: list[QueuedDocument]) -> None:
        if not self.result.done():
            self.result.set_result(queued)

    def fail(self, error: Exception) -> None:
        if not self.result.done():
            self.result.set_exception(error)
