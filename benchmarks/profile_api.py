"""Where one API process's CPU goes per single POST (docs/benchmark.md, "Per request").

    .venv/bin/python benchmarks/profile_api.py [--seconds 10] [--connections 64]

Embedded Redis and PostgreSQL, one `docingest api` process (workers stopped), wrk posting one
BBC-size document over and over, py-spy sampling the process (`pip install py-spy`: it is not
a dependency). Prints wrk's rate and latency, the process's CPU per request, and the samples
grouped by where they were taken, innermost matching frame first.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import orjson
import psutil
from bench import ensure_model

from docingest.db import migrate
from docingest.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, wait_until
from docingest.model.datasets import load_bbc

ROOT = Path(__file__).resolve().parent.parent
LUA = 'local f = io.open(os.getenv("BODY_FILE")); wrk.body = f:read("*a"); f:close()\n'
LUA += 'wrk.method = "POST"; wrk.headers["Content-Type"] = "application/json"\n'
# Where a sample was taken: the first group whose marker is in the innermost matching frame.
GROUPS = {
    "enqueuer threads: ledger script + publish": ("Enqueuer.send", "Enqueuer.requeue", "publish"),
    "group commit, event-loop side": ("Enqueuer.submit", "enqueue.py"),
    "body parsing and validation": ("model_validate_json",),
    "hot route + endpoint + answer": ("create_document", "HotRoute", "Response.__"),
    "auth requirement": ("Requirement.__call__",),
    "body size limit": ("BodySizeLimit",),
    "security gate": ("Gate.__call__", "Gate._check"),
    "405/NUL check": ("RequestCheck",),
    "request metrics": ("RequestMetrics",),
    "FastAPI/Starlette outer layers": (
        "FastAPI.__call__",
        "Starlette.__call__",
        "ServerErrorMiddleware",
        "AppBodyLimitMiddleware",
        "ProxyHeadersMiddleware",
    ),
    "uvicorn HTTP protocol": ("uvicorn/protocols",),
    "asyncio event loop": ("asyncio/", "selectors.py"),
    "thread pool hand-off": ("concurrent/futures", "threading.py"),
}


def group_of(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for group, markers in GROUPS.items():
            if any(marker in frame for marker in markers):
                return group
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    work = Path(tempfile.mkdtemp(prefix="profile-api-"))
    redis, postgres = EmbeddedRedis(work / "redis"), EmbeddedPostgres(work / "postgres")
    redis.start()
    postgres.start()
    try:
        database_url = postgres.create_database("profile")
        migrate(database_url)
        run(args, spy, work, database_url, redis.url)
    finally:
        redis.stop()
        postgres.stop()


def run(args: argparse.Namespace, spy: str, work: Path, database_url: str, broker: str) -> None:
    texts, _ = load_bbc()
    (work / "body.json").write_bytes(orjson.dumps({"content": texts[0]}))
    (work / "post.lua").write_text(LUA)
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": database_url,
        "BROKER_URL": broker,
        "MODEL_PATH": str(ensure_model(ROOT / "bench-results" / "model.skops")),
        "MAX_QUEUED_DOCUMENTS": "100000000",
        "BODY_FILE": str(work / "body.json"),
    }
    command = [sys.executable, "-m", "docingest", "api", "--workers", "1", "--port", str(port)]
    with (work / "api.log").open("wb") as log:
        api = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), 60, "the API")
        process = psutil.Process(api.pid)
        wrk = ["wrk", "-t1", f"-c{args.connections}", "--latency", "-s", str(work / "post.lua")]
        subprocess.run([*wrk, "-d3s", f"{url}/documents"], env=env, capture_output=True)
        samples = work / "api.raw"
        record = [spy, "record", "-p", str(api.pid), "-d", str(args.seconds), "-r", "250"]
        spying = subprocess.Popen(
            [*record, "-f", "raw", "-o", str(samples), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        before = sum(process.cpu_times()[:2])
        load = subprocess.run(
            [*wrk, f"-d{args.seconds}s", f"{url}/documents"],
            env=env,
            capture_output=True,
            text=True,
        )
        cpu = sum(process.cpu_times()[:2]) - before
        spying.wait()
    finally:
        api.terminate()
        api.wait(30)
    print(load.stdout)
    requests = int(
        next(line for line in load.stdout.splitlines() if "requests in" in line).split()[0]
    )
    per_request_ms = cpu / requests * 1000
    print(f"API CPU per request: {per_request_ms:.3f} ms")
    report(samples, per_request_ms)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def report(samples: Path, per_request_ms: float) -> None:
    counts: collections.Counter[str] = collections.Counter()
    for line in samples.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        counts[group_of(stack)] += int(count)
    total = sum(counts.values())
    print(f"{'where':45} {'share':>6} {'µs/request':>11}")
    for group, count in counts.most_common():
        share = count / total
        print(f"{group:45} {share:6.0%} {share * per_request_ms * 1000:11.0f}")


if __name__ == "__main__":
    main()
