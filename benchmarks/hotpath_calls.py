"""What a single POST /documents costs the API's own code, in calls and CPU, without the network.

    .venv/bin/python benchmarks/hotpath_calls.py [--requests 10000]
    PYTHONPATH=<checkout> .venv/bin/python benchmarks/hotpath_calls.py   # other code, same venv
    .venv/bin/python benchmarks/hotpath_calls.py --before DIR [--rounds 3]   # both, in turns

Drives the app's ASGI callable directly (every middleware, the hot route, group commit, building
the messages) with a queue and a ledger that do nothing, and prints:
- Python and C function calls per request, one request at a time, in the event loop's thread
  and the enqueuer's (not in the thread that exports spans): a count that does not move with
  the machine's load, to compare two versions of the code;
- CPU microseconds per request, 16 at a time, median of 7 runs (moves with the load).
Tracing follows the OTEL_* variables, as in `docingest api`.

With `--before DIR` (a checkout of the code to compare with, e.g. `git archive HEAD | tar -x -C
DIR`), runs itself `--rounds` times on each code, in turns and each in a new process (the
other order every other round), then prints each one's median of the runs' medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
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


def compare(before: Path, rounds: int, requests: int) -> None:
    """This script on `before`'s code (PYTHONPATH) and on the installed code, in turns."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    variants = {"before": environ | {"PYTHONPATH": str(before.resolve())}, "after": environ}
    medians: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(rounds):
        for name in list(variants) if round_ % 2 == 0 else list(variants)[::-1]:
            command = [sys.executable, __file__, "--requests", str(requests)]
            output = subprocess.run(
                command, env=variants[name], capture_output=True, check=True, text=True
            ).stdout
            print(f"{name}, round {round_ + 1}:\n{output}", end="", flush=True)
            found = re.search(r"CPU µs per request: median ([\d.]+)", output)
            assert found, output
            medians[name].append(float(found.group(1)))
    print("median of the runs' medians (CPU µs per request):")
    for name, values in medians.items():
        print(f"  {name:6} {statistics.median(values):6.1f}   runs: {values}")
    ratio = statistics.median(medians["after"]) / statistics.median(medians["before"])
    print(f"  after / before: {ratio:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--before", type=Path, help="a checkout to compare with, in turns")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each code, --before")
    args = parser.parse_args()
    if args.before is None:
        asyncio.run(main(args.requests))
    else:
        compare(args.before, args.rounds, args.requests)
