"""What tracing costs the API: CPU per single POST /documents, with tracing off and on.

    .venv/bin/python benchmarks/trace_cost.py [--seconds 10] [--rounds 3] [--before DIR]

Serves `docingest api` on an embedded Redis and SQLite (no worker: documents wait), loads it
with wrk (single POSTs over `--connections` keep-alive connections) and divides the API
process's CPU time by the requests answered. Redis runs without its append-only file, so that
no request waits for a disk shared with others (slower answers cost more CPU each: less group
commit). Variants, run in turns each round: `off` (no OTEL_*
variable), `on` (OTLP/HTTP to a receiver in this script that answers 200 without decoding),
`on-10%` (the same, sampling 10 % of traces) and, given `--before DIR` (a checkout of the code
to compare with, e.g. from `git worktree add`), `before`: that code, run from DIR. Every other
round runs them in the reverse order, so that no variant always follows another.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from docingest.db import migrate
from docingest.embedded import EmbeddedRedis, free_port, wait_until

BODY = '{"content": "The striker scored twice as Chelsea beat Arsenal in the Premiership."}'
WRK_SCRIPT = f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{BODY}'
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10, help="measured wrk run per variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--before", type=Path, help="a checkout to measure as `before`")
    parser.add_argument("--only", nargs="*", help="measure only these variants")
    return parser.parse_args()


class Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes every export and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def variants(sink_url: str, before: Path | None) -> dict[str, dict[str, str]]:
    """Each variant's environment on top of the common one."""
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url}
    sampled = traced | {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    }
    found = {"off": {}, "on": traced, "on-10%": sampled}
    if before is not None:
        found = {"before": {"PYTHONPATH": str(before.resolve())}} | found
    return found


def measure(
    env: dict[str, str], folder: Path, seconds: int, connections: int
) -> tuple[float, float]:
    """CPU microseconds of the API process per request answered over one wrk run, and requests
    answered per second (the CPU per request grows when answers slow down)."""
    port = free_port()
    command = [sys.executable, "-m", "docingest", "api", "--port", str(port)]
    log = (folder / "api.log").open("ab")
    api = subprocess.Popen(command, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), 30, "the API ready")
        _wrk(url, folder, 2, connections)  # warm-up
        process = psutil.Process(api.pid)
        before = process.cpu_times()
        requests = _wrk(url, folder, seconds, connections)
        after = process.cpu_times()
    finally:
        api.terminate()
        api.wait(15)
        log.close()
    cpu = (after.user - before.user) + (after.system - before.system)
    return cpu / requests * 1e6, requests / seconds


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wrk(url: str, folder: Path, seconds: int, connections: int) -> int:
    """Requests wrk had answered with a 2xx. A few others (a 503 after a slow fsync of a
    busy disk) are reported, not counted."""
    script = folder / "post.lua"
    script.write_text(WRK_SCRIPT)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script)]
    output = subprocess.run(
        [*command, f"{url}/documents"], capture_output=True, check=True, text=True
    ).stdout
    answered = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if refused:
        print(f"  ({refused.group(1)} of {answered} answers were not 2xx)", flush=True)
        answered -= int(refused.group(1))
    return answered


def main() -> None:
    args = parse_args()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    sink_url = f"http://127.0.0.1:{sink.server_address[1]}"
    with (
        tempfile.TemporaryDirectory(prefix="trace-cost-") as tmp,
        EmbeddedRedis(Path(tmp) / "redis", appendfsync="everysec") as server,
    ):
        folder = Path(tmp)
        redis.Redis.from_url(server.url).config_set("appendonly", "no")
        database = f"sqlite:///{folder / 'docingest.db'}"
        migrate(database)
        common = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | {
            "DATABASE_URL": database,
            "BROKER_URL": server.url,
            "DATA_DIR": str(folder),
            "MAX_QUEUED_DOCUMENTS": "100000000",
            "LOG_LEVEL": "warning",
        }
        chosen = [
            (name, env)
            for name, env in variants(sink_url, args.before).items()
            if not args.only or name in args.only
        ]
        results: dict[str, list[float]] = {}
        for round_ in range(args.rounds):
            for name, env in chosen if round_ % 2 == 0 else chosen[::-1]:
                redis.Redis.from_url(server.url).flushdb()
                micros, rate = measure(common | env, folder, args.seconds, args.connections)
                results.setdefault(name, []).append(micros)
                print(f"{name:8} {micros:7.1f} µs CPU per request, {rate:6.0f}/s", flush=True)
    print("median of each variant (µs of API CPU per single POST):")
    for name, values in results.items():
        print(f"  {name:8} {statistics.median(values):7.1f}   runs: {values}")


if __name__ == "__main__":
    main()
