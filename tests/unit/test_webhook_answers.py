"""How a delivery reads the receiver's answer: a 2xx's short body to its end (its connection then
carries the next batch), a refusal's beginning for the last error, and neither for long when
the receiver trickles it."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from docingest.changes.webhooks.delivery import BODY_SECONDS, Outcome, post
from docingest.changes.webhooks.endpoints import new_secret
from docingest.tables import Webhook


@contextmanager
def trickling(status: str, *, declared: int, pause: float) -> Iterator[str]:
    """A receiver that answers `status` with a body of `declared` bytes, sent a byte every
    `pause` seconds; its URL."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(1 << 20)
            head = f"HTTP/1.1 {status}\r\nContent-Length: {declared}\r\n\r\n"
            connection.sendall(head.encode())
            for _ in range(declared):
                if stop.wait(pause):
                    return
                connection.sendall(b"x")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    finally:
        stop.set()
        server.close()
        thread.join(5)


def deliver_once(url: str) -> tuple[Outcome, float]:
    endpoint = Webhook(id=uuid.uuid4(), url=url, secret=new_secret())
    started = time.monotonic()
    with httpx.Client(timeout=10, trust_env=False) as client:
        outcome = post(client, endpoint, "id-1-2", b'{"data":{"items":[]}}', allow_private=True)
    return outcome, time.monotonic() - started


@pytest.mark.parametrize(("status", "ok"), [("200 OK", True), ("500 Internal Server Error", False)])
def test_a_trickled_answer_does_not_hold_the_delivery(status: str, ok: bool) -> None:
    with trickling(status, declared=10_000, pause=0.2) as url:
        outcome, seconds = deliver_once(url)
    assert outcome.ok is ok
    assert seconds < BODY_SECONDS + 1.5, seconds
    if not ok:
        assert outcome.error is not None
        assert outcome.error.startswith("HTTP 500: x")
