"""A webhook receiver for the tests: a real HTTP server on a thread, as a user's would be. It
verifies each delivery with the reference implementation of Standard Webhooks (`standardwebhooks`)
once given the endpoint's secret, answers what `answer` says for the n-th request (500 for a
while, then 200, say), can hold requests until released, and records every delivery and how
many were in flight at once (two deliveries to one endpoint at the same time are an overlap),
and on which connection each came.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Delivery:
    """One request as received, and what the receiver answered."""

    id: str
    headers: dict[str, str]
    body: bytes
    status: int
    verified: bool | None  # None: no secret given yet
    started: float
    ended: float
    connection: tuple[str, int]  # the sender's address and port: one a connection

    @property
    def items(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = orjson.loads(self.body)["data"]["items"]
        return items

    @property
    def positions(self) -> list[int]:
        return [int(item["position"]) for item in self.items]


@dataclass
class Receiver:
    """`answer(n)`: the status of the n-th request (from 0). While `holding` is set, a request
    waits (its arrival sets `arrived`) before it is answered."""

    answer: Callable[[int], int] = lambda n: 200
    hold_seconds: float = 0.0
    secret: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    max_in_flight: int = 0
    holding: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    _in_flight: int = 0
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self) -> list[Delivery]:
        """The deliveries answered with a 2xx, in the order they ended."""
        with self._lock:
            return sorted((d for d in self.deliveries if d.status < 300), key=lambda d: d.ended)

    def delivered_positions(self) -> list[int]:
        return [position for delivery in self.ok() for position in delivery.positions]

    def handle(self, headers: dict[str, str], body: bytes, connection: tuple[str, int]) -> int:
        started = time.monotonic()
        with self._lock:
            n = self._count
            self._count += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            verified = None
            if self.secret is not None:
                try:
                    Webhook(self.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
            self.arrived.set()
            while self.holding.is_set():
                time.sleep(0.01)
            time.sleep(self.hold_seconds)
            status = self.answer(n) if verified is not False else 401
            delivery = Delivery(
                headers.get("webhook-id", ""), headers, body, status, verified, started,
                time.monotonic(), connection,
            )  # fmt: skip
            with self._lock:
                self.deliveries.append(delivery)
            return status
        finally:
            with self._lock:
                self._in_flight -= 1


@contextmanager
def serving(receiver: Receiver) -> Iterator[str]:
    """The receiver on 127.0.0.1, its URL; stopped after."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status = receiver.handle(headers, body, self.client_address[:2])
            answer = b"ok" if status < 300 else b"not now"
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/docingest"
    finally:
        receiver.holding.clear()
        server.shutdown()
        server.server_close()
