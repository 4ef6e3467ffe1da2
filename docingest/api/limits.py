"""Refuse oversized bodies with `413` and slow ones with `408`, before they are parsed; bound
the body bytes a process holds at once (`503` beyond MAX_BUFFERED_BYTES)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What a refused client may still send, read and thrown away, so that one which sends its whole
# body before reading (Python's urllib, many scripts) gets the answer instead of a connection
# reset. Bounded: a client cannot keep a connection longer or make us read more than this.
DRAIN_BYTES = 64 << 20
DRAIN_SECONDS = 5.0
# How long a body waits for room in MAX_BUFFERED_BYTES before its 503: long enough to ride out a
# burst of requests finishing, short enough that a waiting client holds nothing for long.
BUFFER_WAIT_SECONDS = 1.0
# Bodies up to this size may use the whole buffer budget; larger ones leave an eighth of it to
# them, so that big uploads holding the budget (each for at most BODY_TIMEOUT_SECONDS) never
# lock out the small requests of other clients.
SMALL_BODY_BYTES = 64 << 10


def reads_body(method: str) -> bool:
    """Methods whose body is read (and so limited, and authenticated before it is read)."""
    return method not in ("GET", "HEAD", "OPTIONS")


class BufferBudget:
    """The body bytes one API process holds at once. Without it, N clients could make the
    process hold N times MAX_BODY_BYTES (measured: 40 idle uploads, 103 → 664 MB of RSS).

    Not locked: every call runs on the event loop thread; a release wakes every waiter, each
    of which looks again.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.headroom = capacity // 8  # kept for small bodies
        self.used = 0
        self._released = asyncio.Event()

    async def take(self, size: int, body_size: int) -> bool:
        """Hold `size` more bytes for a body of `body_size` bytes (so far); False if no room
        came within BUFFER_WAIT_SECONDS."""
        limit = self.capacity if body_size <= SMALL_BODY_BYTES else self.capacity - self.headroom
        if self.used + size <= limit:  # the common case: no clock read, no waiting
            self.used += size
            return True
        deadline = asyncio.get_running_loop().time() + BUFFER_WAIT_SECONDS
        while self.used + size > limit:
            released = self._released
            try:
                async with asyncio.timeout_at(deadline):
                    await released.wait()
            except TimeoutError:
                return False
        self.used += size
        return True

    def give_back(self, size: int) -> None:
        if size:
            self.used -= size
            self._released.set()
            self._released = asyncio.Event()


class _Lease:
    """The bytes one request holds of the budget: its declared length at once, else as its
    body grows."""

    def __init__(self, budget: BufferBudget) -> None:
        self.budget = budget
        self.size = 0

    async def cover(self, body_size: int) -> None:
        """Hold at least `body_size` bytes; _NoRoomError if no room came in time."""
        if body_size > self.size:
            if not await self.budget.take(body_size - self.size, body_size):
                raise _NoRoomError
            self.size = body_size

    def release(self) -> None:
        self.budget.give_back(self.size)
        self.size = 0


class BodySizeLimit:
    """Pure ASGI middleware: checks Content-Length, then counts streamed bytes.

    The body is buffered up to the limit (FastAPI buffers it anyway to parse JSON), so memory
    stays bounded by `max_bytes` whatever the client sends or claims. The whole body must arrive
    within `timeout_seconds`: uvicorn's timeouts cover idle connections, not a client trickling
    a body a byte at a time, which would otherwise hold its buffer and a connection forever.
    The bytes held by all requests at once are bounded by `max_buffered_bytes` (`BufferBudget`),
    held until the request is answered; a body without room gets 503 + Retry-After.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        timeout_seconds: float,
        max_buffered_bytes: int,
        retry_after_seconds: int,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds
        self.budget = BufferBudget(max_buffered_bytes)
        self.retry_after = [(b"retry-after", str(retry_after_seconds).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not reads_body(scope["method"]):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(receive, send)
            return
        lease = _Lease(self.budget)
        try:
            await self._serve(scope, receive, send, declared, lease)
        except _NoRoomError:
            detail = "Too many request bodies are being received at once; retry later"
            await refuse(receive, send, 503, detail, headers=self.retry_after)
        finally:
            lease.release()

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, declared: int | None, lease: _Lease
    ) -> None:
        if declared is not None:
            await lease.cover(declared)  # before a byte is read
        try:
            async with asyncio.timeout(self.timeout_seconds):
                body = await self._read(receive, lease)
        except TimeoutError:
            detail = f"Request body not received within {self.timeout_seconds:g} seconds"
            await refuse(receive, send, 408, detail, drain=False)
            return
        except _TooLargeError as error:
            await self._too_large(receive, send, drain=not error.complete)
            return
        if body is not None:
            await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive, lease: _Lease) -> bytes | None:
        """The whole body; None if the client went away."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_bytes:
                raise _TooLargeError(complete=not more)
            await lease.cover(size)
            chunks.append(chunk)
            if not more:
                return b"".join(chunks)

    async def _too_large(self, receive: Receive, send: Send, *, drain: bool = True) -> None:
        detail = f"Request body is larger than the limit of {self.max_bytes} bytes"
        await refuse(receive, send, 413, detail, drain=drain)


class _TooLargeError(Exception):
    """`complete`: the client already sent its last byte, so there is nothing left to drain."""

    def __init__(self, *, complete: bool) -> None:
        super().__init__()
        self.complete = complete


class _NoRoomError(Exception):
    """No room in the buffer budget came in time."""


async def refuse(
    receive: Receive,
    send: Send,
    code: int,
    detail: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    drain: bool = True,
) -> None:
    """Answer at once, then close the connection, never having kept the body.

    The answer goes out before the rest of the body is read, so a client that waits for it
    (curl, `Expect: 100-continue`) gets it promptly. With `drain`, the response is held open
    while what the client keeps sending is read and discarded (up to DRAIN_BYTES within
    DRAIN_SECONDS): closing a socket with unread bytes makes the kernel send a reset, which
    would destroy the answer before a send-everything-then-read client has seen it.
    """
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": drain})
    if drain:
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                await _discard(receive)
        except TimeoutError:
            pass
        await send({"type": "http.response.body", "body": b""})


async def _discard(receive: Receive) -> None:
    left = DRAIN_BYTES
    while left > 0:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return
        left -= len(message.get("body", b""))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the buffered body to the app, then pass through (to hear of a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
