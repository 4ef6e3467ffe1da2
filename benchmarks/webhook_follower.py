"""One webhook following the feed during `--feed`'s measured runs (benchmarks/feed.py).

The Procfile's `webhooks` process (`docingest webhooks deliver`) runs from before the first run
to after the last, as it does beside the API and the workers in a deployment, and is watched
by the CPU sampler throughout (idle, it looks for due endpoints every WEBHOOK_POLL_SECONDS). A
run with a webhook has a receiver thread (`http.server` on 127.0.0.1, answering 200) that
records when each delivered change arrived, and an endpoint pointing at it, created with
`POST /webhooks` before the run (the benchmark's services run in open mode on loopback, which
grants the admin scope, and with `WEBHOOK_ALLOW_PRIVATE=true` so that a loopback target is
allowed) and deleted after it; a sample of deliveries has its signature checked with the
Python client's `verify`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
from docingest_client.webhooks import verify
from measure import ROOT, DesignRun
from services import Service

from docingest.embedded import wait_until

DELIVERER_READY = "webhook deliverer started"
# Deliveries whose signature is checked (the first ones of each run): enough to prove the
# format, without spending the benchmark's CPU on an HMAC per delivery.
VERIFY_SAMPLE = 20


class Receiver(ThreadingHTTPServer):
    """Answers every POST with 200 and keeps the delivery as received; read later, it gives,
    per (document, version) stored, when it first arrived and its change's `at`, and the raw
    bodies and headers of the first deliveries.

    Answering at once and processing later is what Standard Webhooks advises a receiver; here
    it also keeps the receiver's parsing off the cores while a run is measured (it is read
    once the run is over, while waiting for the last deliveries)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self._received: list[tuple[bytes, dict[str, str], float]] = []
        self.first_arrival: dict[tuple[str, int], float] = {}
        self.at: dict[tuple[str, int], float] = {}
        self.deliveries = 0
        self.repeated = 0  # stored changes delivered more than once (at least once is the rule)
        self.samples: list[tuple[bytes, dict[str, str], float]] = []
        self.errors: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def take(self, body: bytes, headers: dict[str, str], arrived: float) -> None:
        with self.lock:
            self._received.append((body, headers, arrived))

    def read(self) -> None:
        """Every delivery received so far, read into the figures above."""
        with self.lock:
            received, self._received = self._received, []
            for body, headers, arrived in received:
                self._read(body, headers, arrived)

    def _read(self, body: bytes, headers: dict[str, str], arrived: float) -> None:
        try:
            items = orjson.loads(body)["data"]["items"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as error:
            self.errors.append(f"unreadable delivery: {error!r}")
            return
        self.deliveries += 1
        if len(self.samples) < VERIFY_SAMPLE:
            self.samples.append((body, headers, arrived))
        for item in items:
            if item["kind"] != "stored":
                continue
            key = (item["document_id"], item["version"])
            if key in self.first_arrival:
                self.repeated += 1
                continue
            self.first_arrival[key] = arrived
            self.at[key] = datetime.fromisoformat(item["at"]).timestamp()

    def delivered_ids(self) -> set[str]:
        self.read()
        with self.lock:
            return {document_id for document_id, _ in self.first_arrival}

    def lags(self) -> list[float]:
        self.read()
        with self.lock:
            return [self.first_arrival[key] - self.at[key] for key in self.first_arrival]


class _Handler(BaseHTTPRequestHandler):
    """Keeps connections open (HTTP/1.1), as receivers do."""

    server: Receiver
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        arrived = time.time()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.take(body, dict(self.headers.items()), arrived)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def delivering(run: DesignRun) -> Iterator[Service]:
    """The Procfile's `webhooks` process, started (its log says so) and watched by the sampler
    until the block ends."""
    name = f"{run.design.name}-{run.workload}-webhooks"
    deliverer = Service(
        name,
        [sys.executable, "-m", "docingest", "webhooks", "deliver"],
        run.design.env,
        run.logs / f"{name}.log",
    )
    ready_before = deliverer.log_count(DELIVERER_READY)
    deliverer.start(ROOT)
    try:
        run.context.sampler.watch(name, deliverer.pid)

        def deliverer_ready() -> bool:
            deliverer.check_alive()
            return deliverer.log_count(DELIVERER_READY) > ready_before

        wait_until(deliverer_ready, 120, f"webhook deliverer start-up ({deliverer.log})")
        yield deliverer
    finally:
        run.context.sampler.unwatch(name)
        deliverer.stop()


class WebhookFollower:
    """The receiver and its endpoint, for one run."""

    def __init__(self, run: DesignRun, deliverer: Service) -> None:
        self.run = run
        self.deliverer = deliverer
        self.receiver = Receiver()
        self.endpoint: str | None = None
        self.secret = ""
        self._serving = threading.Thread(
            target=self.receiver.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="webhook-receiver",
            daemon=True,
        )

    def start(self) -> None:
        """Receiver listening, then the endpoint: it is delivered the changes committed from
        its creation on."""
        self._serving.start()
        response = httpx.post(
            self.run.url + "/webhooks",
            json={"url": self.receiver.url},
            timeout=30,
        )
        if response.status_code != 201:
            raise RuntimeError(f"POST /webhooks: {response.status_code} {response.text}")
        created = response.json()
        self.endpoint, self.secret = created["id"], created["secret"]

    def finish(self, ids: set[str], timeout: float) -> None:
        """Once every id in `ids` had its stored change delivered (or `timeout`), stop."""

        def caught_up() -> bool:
            self.deliverer.check_alive()
            return ids <= self.receiver.delivered_ids()

        try:
            wait_until(caught_up, timeout, "the webhook's deliveries", interval=0.05)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.endpoint is not None:
            httpx.delete(f"{self.run.url}/webhooks/{self.endpoint}", timeout=30)
            self.endpoint = None
        if self._serving.is_alive():
            self.receiver.shutdown()
        self.receiver.server_close()

    def verified(self) -> int:
        """The sampled deliveries' signatures, checked with the client's `verify` (as of when
        each arrived); raises on the first that does not hold."""
        for body, headers, arrived in self.receiver.samples:
            verify(body, headers, self.secret, now=arrived)
        return len(self.receiver.samples)
