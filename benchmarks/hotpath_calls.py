"""What a single POST /documents costs the API's own code, in calls and CPU, without the network.

    .venv/bin/python benchmarks/hotpath_calls.py [--requests 10000]
    PYTHONPATH=<checkout> .venv/bin/python benchmarks/hotpath_calls.py   # other code, same venv

Drives the app's ASGI callable directly (every middleware, the hot route, group commit, building
the messages) with a queue and a ledger that do nothing, and prints:
- Python and C function calls per request, one request at a time, in the event loop's thread
  and the enqueuer's (not in the thread that exports spans): a count that does not move with
  the machine's load, to compare two versions of the code;
- CPU microseconds per request, 16 at a time, median of 7 runs (moves with the load).
Tracing follows the OTEL_* variables, as in `docingest api`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from fastapi import FastAPI

import docingest
from docingest.api.factory import create_app
from docingest.queue.enqueue import Enqueuer
from docingest.settings import Settings

BODY = b'{"content": "The striker scored twice as Chelsea beat Arsenal in the Premiership."}'
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]


class Ledger:
    """Versions from a counter, nothing pending."""

    def __init__(self) -> None:
        self.issued = 0

    def reserve(self, ids: list[Any]) -> tuple[int, None]:
        first = self.issued + 1
        self.issued += len(ids)
        return first, None

    def pending_count(self) -> int:
        return 0

    def forget(self, pairs: list[Any]) -> None:
        return


class Queue:
    def publish(self, messages: list[Any]) -> None:
        return

    def queued_bytes(self) -> int:
        return 0


def make_app() -> tuple[FastAPI, bool]:
    """The app as `docingest api` builds it, its state set by hand instead of by its lifespan
    (which would connect to servers); and whether it traces."""
    settings = Settings(_env_file=None, log_level="warning")
    app = create_app(settings)
    app.state.settings = settings
    return app, bool(app._telemetry["tracing"])


async def new_enqueuer(app: FastAPI, traced: bool) -> None:
    """A fresh one (its thread starts on first use), after closing the app's last one."""
    if hasattr(app.state, "enqueuer"):
        await app.state.enqueuer.close()
    # `traced` exists from the tracing change on; code from before it does not know the word.
    options = {"traced": True} if traced else {}
    app.state.enqueuer = Enqueuer(Queue(), Ledger(), **options)  # type: ignore[arg-type]


async def post(app: FastAPI) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/documents",
        "raw_path": b"/documents",
        "query_string": b"",
        "root_path": "",
        "headers": HEADERS,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    messages = [{"type": "http.request", "body": BODY, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # a client that never disconnects
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def post_many(app: FastAPI, requests: int, concurrency: int) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            assert await post(app) == 202

    await asyncio.gather(*(one() for _ in range(requests)))


async def calls_per_request(app: FastAPI, traced: bool, requests: int) -> dict[str, float]:
    counts = {"call": 0, "c_call": 0}

    def count(frame: FrameType, event: str, arg: object) -> None:
        if event in counts:
            counts[event] += 1

    await new_enqueuer(app, traced)
    await post_many(app, 200, 1)  # warm-up: first-use caches
    await new_enqueuer(app, traced)  # its thread, started once profiling is on, is counted too
    sys.setprofile(count)
    threading.setprofile(count)
    try:
        await post_many(app, requests, 1)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    return {event: round(total / requests, 1) for event, total in counts.items()}


async def cpu_per_request(app: FastAPI, requests: int) -> float:
    started = time.process_time()
    await post_many(app, requests, 16)
    return (time.process_time() - started) / requests * 1e6


async def main(requests: int) -> None:
    app, traced = make_app()
    where = Path(docingest.__file__).parent.parent
    calls = await calls_per_request(app, traced, requests // 5)
    runs = sorted([await cpu_per_request(app, requests) for _ in range(7)])
    print(f"code: {where}, tracing {'on' if traced else 'off'}")
    print(f"function calls per request: {calls['call']} Python, {calls['c_call']} C")
    print(f"CPU µs per request: median {statistics.median(runs):.1f}, runs {runs}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=10_000)
    asyncio.run(main(parser.parse_args().requests))
