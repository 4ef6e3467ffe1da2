"""Refuse oversized bodies with `413` and slow ones with `408`, before they are parsed."""

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


def reads_body(method: str) -> bool:
    """Methods whose body is read (and so limited, and authenticated before it is read)."""
    return method not in ("GET", "HEAD", "OPTIONS")


class BodySizeLimit:
    """Pure ASGI middleware: checks Content-Length, then counts streamed bytes.

    The body is buffered up to the limit (FastAPI buffers it anyway to parse JSON), so memory
    stays bounded by `max_bytes` whatever the client sends or claims. The whole body must arrive
    within `timeout_seconds`: uvicorn's timeouts cover idle connections, not a client trickling
    a body a byte at a time, which would otherwise hold its buffer and a connection forever.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not reads_body(scope["method"]):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout_seconds):
                body = await self._read(receive)
        except TimeoutError:
            detail = f"Request body not received within {self.timeout_seconds:g} seconds"
            await refuse(receive, send, 408, detail, drain=False)
            return
        except _TooLargeError as error:
            await self._too_large(receive, send, drain=not error.complete)
            return
        if body is not None:
            await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
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
