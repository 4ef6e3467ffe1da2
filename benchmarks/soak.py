"""The soak test: a million documents through a running service, memory watched throughout.

    make bench BENCH_ARGS="--soak 1000000"    (bench.py --soak N [--soak-rate 3000])

The Procfile's processes on embedded PostgreSQL and Redis, workers running from the start. A
paced sender posts bulk requests of fresh documents (ids from a counter, BBC texts) at
`--soak-rate` documents a second, below the workers' drain rate so that backpressure never has
to answer 429 (each 429 or 503 is counted, and retried after its Retry-After). Every 10 seconds:
the RSS of each API and worker process, Redis's memory, the ledger's pending set, the queue's
messages, the rows stored. After the last request, the run waits for the queue to drain and
checks: every document stored once; RSS after warm-up (the first tenth of the documents) flat
within 10 %; Redis's memory back within 10 % (or 1 MB) of its start; nothing left in the
pending set; worker RSS at most 200 MB a process.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import redis
from loadgen import Generator
from measure import Context, DesignRun, docingest_design, service_env
from rich.console import Console
from rich.table import Table
from services import Sampler, Servers
from sqlalchemy import text

from docingest.db import make_engine
from docingest.embedded import wait_until
from docingest.ledger.redis import PENDING_KEY
from docingest.model.datasets import load_bbc

SAMPLE_SECONDS = 10
WARM_UP_SHARE = 0.1
FLAT_WITHIN = 0.10
WORKER_RSS_LIMIT_MB = 200
# What stays once drained: the version counter, the workers' metrics and heartbeats.
REDIS_SLACK_MB = 1
progress = Console(stderr=True, width=140)


@dataclass
class Sample:
    seconds: float
    accepted: int
    stored: int
    queued_messages: int
    pending: int
    redis_mb: float
    rss_mb: dict[str, float]


@dataclass
class Sender:
    """Bulk requests of fresh documents at a steady rate; what the API answered."""

    url: str
    total: int
    rate: float
    bulk_size: int
    connections: int
    texts: list[str]
    accepted: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    _next: itertools.count[int] = field(default_factory=itertools.count)
    _namespace: int = field(default_factory=lambda: uuid.uuid4().int >> 64 << 64)

    async def run(self) -> None:
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            await asyncio.gather(
                *(self._connection(client, started) for _ in range(self.connections))
            )

    async def _connection(self, client: httpx.AsyncClient, started: float) -> None:
        while (first := next(self._next) * self.bulk_size) < self.total:
            count = min(self.bulk_size, self.total - first)
            due = started + (first + count) / self.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self._post(client, self._body(first, count), count)

    def _body(self, first: int, count: int) -> bytes:
        return orjson.dumps(
            [
                {
                    "id": str(uuid.UUID(int=self._namespace + n)),
                    "content": self.texts[n % len(self.texts)],
                }
                for n in range(first, first + count)
            ]
        )

    async def _post(self, client: httpx.AsyncClient, body: bytes, count: int) -> None:
        headers = {"Content-Type": "application/json"}
        while True:
            response = await client.post("/documents/bulk", content=body, headers=headers)
            if response.status_code == 202:
                self.accepted += response.json()["accepted"]
                return
            self.refused[response.status_code] = self.refused.get(response.status_code, 0) + 1
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))


class Watch:
    """The figures of one sample, from the processes, Redis and the database."""

    def __init__(self, run: DesignRun, redis_url: str, database_url: str) -> None:
        self.run = run
        self.redis = redis.Redis.from_url(redis_url)
        self.engine = make_engine(database_url, pre_ping=False)
        self.started = time.monotonic()

    def sample(self, sender: Sender) -> Sample:
        with self.engine.connect() as connection:
            stored = connection.execute(text("SELECT count(*) FROM documents")).scalar_one()
        return Sample(
            seconds=time.monotonic() - self.started,
            accepted=sender.accepted,
            stored=stored,
            queued_messages=self.run.queue.pending(),
            pending=int(self.redis.hlen(PENDING_KEY)),
            redis_mb=int(self.redis.info("memory")["used_memory"]) / 1e6,
            rss_mb=self._rss(),
        )

    def _rss(self) -> dict[str, float]:
        """Per process, named by role and its rank in the tree (supervisors left out)."""
        found = {}
        for role, service in (("api", self.run.api), ("worker", self.run.workers)):
            root = psutil.Process(service.pid)
            children = sorted(root.children(recursive=True), key=lambda process: process.pid)
            for rank, process in enumerate(children or [root]):
                found[f"{role}{rank}"] = process.memory_info().rss / 1e6
        return found

    def close(self) -> None:
        self.redis.close()
        self.engine.dispose()


def soak(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    texts, _ = load_bbc()
    with Sampler() as sampler, Servers(args.run_folder, None, None) as servers:
        env = service_env(servers.docingest_database_url, servers.redis_url, model)
        design = docingest_design(env, args.api_workers, args.worker_processes, args.worker_threads)
        context = Context(
            folder=args.run_folder,
            generator=Generator("python", "the soak's own paced client"),
            sampler=sampler,
            database_url=servers.docingest_database_url,
            texts=texts,
            generator_threads=1,
            timeout=args.timeout,
        )
        with DesignRun(context, design, "bbc") as run:
            run.reset()
            run.start_workers()
            watch = Watch(run, servers.redis_url, servers.docingest_database_url)
            try:
                return _soak(args, run, watch, texts)
            finally:
                watch.close()


def _soak(
    args: argparse.Namespace, run: DesignRun, watch: Watch, texts: list[str]
) -> dict[str, Any]:
    sender = Sender(
        run.url, args.soak, args.soak_rate, args.bulk_size, args.bulk_concurrency, texts
    )
    redis_start = watch.sample(sender).redis_mb
    samples: list[Sample] = []

    async def send_and_watch() -> None:
        sending = asyncio.create_task(sender.run())
        while not sending.done():
            await asyncio.wait({sending}, timeout=SAMPLE_SECONDS)
            samples.append(await asyncio.to_thread(watch.sample, sender))
            _log(samples[-1], args.soak)
        await sending

    asyncio.run(send_and_watch())

    def drained() -> bool:
        samples.append(watch.sample(sender))
        return samples[-1].stored >= args.soak and samples[-1].queued_messages == 0

    wait_until(drained, args.timeout, "the queue drained", interval=SAMPLE_SECONDS)
    time.sleep(SAMPLE_SECONDS)  # the ledger settles just after the commit
    samples.append(watch.sample(sender))
    return _verdict(args, sender, samples, redis_start)


def _log(sample: Sample, total: int) -> None:
    rss = " ".join(f"{name} {mb:.0f}" for name, mb in sample.rss_mb.items())
    progress.log(
        f"{sample.seconds:6.0f} s  accepted {sample.accepted:>9,}/{total:,}  stored "
        f"{sample.stored:>9,}  pending {sample.pending:>7,}  redis {sample.redis_mb:6.1f} MB  "
        f"RSS MB: {rss}"
    )


def _verdict(
    args: argparse.Namespace, sender: Sender, samples: list[Sample], redis_start: float
) -> dict[str, Any]:
    last = samples[-1]
    warmed = [sample for sample in samples if sample.accepted >= WARM_UP_SHARE * args.soak]
    growth = {
        name: max(sample.rss_mb.get(name, 0.0) for sample in warmed) / warmed[0].rss_mb[name] - 1
        for name in warmed[0].rss_mb
    }
    worker_peak = max(
        mb for sample in samples for name, mb in sample.rss_mb.items() if name.startswith("worker")
    )
    sending_seconds = next(s.seconds for s in samples if s.accepted >= args.soak)
    checks = {
        "every document stored once": last.stored == args.soak == sender.accepted,
        "no 429 or 503": not sender.refused,
        f"RSS flat within {FLAT_WITHIN:.0%} after warm-up": max(growth.values()) <= FLAT_WITHIN,
        f"Redis memory back within {FLAT_WITHIN:.0%} (or {REDIS_SLACK_MB} MB) of its start": (
            last.redis_mb <= max(redis_start * (1 + FLAT_WITHIN), redis_start + REDIS_SLACK_MB)
        ),
        "pending set empty": last.pending == 0,
        f"worker RSS ≤ {WORKER_RSS_LIMIT_MB} MB": worker_peak <= WORKER_RSS_LIMIT_MB,
    }
    return {
        "documents": args.soak,
        "rate_asked": args.soak_rate,
        "sending_seconds": round(sending_seconds, 1),
        "total_seconds": round(last.seconds, 1),
        "accepted": sender.accepted,
        "stored": last.stored,
        "refused": sender.refused,
        "rss_growth_after_warm_up": {name: round(value, 3) for name, value in growth.items()},
        "rss_after_warm_up_mb": {k: round(v, 1) for k, v in warmed[0].rss_mb.items()},
        "rss_end_mb": {k: round(v, 1) for k, v in last.rss_mb.items()},
        "worker_peak_rss_mb": round(worker_peak, 1),
        "redis_mb_start_end": [round(redis_start, 1), round(last.redis_mb, 1)],
        "pending_end": last.pending,
        "checks": checks,
    }


def print_verdict(verdict: dict[str, Any]) -> None:
    table = Table(title=f"soak: {verdict['documents']:,} documents")
    table.add_column("check")
    table.add_column("met")
    for check, met in verdict["checks"].items():
        table.add_row(check, "yes" if met else "NO")
    console = Console(width=132, highlight=False)
    console.print(table)
    details = {key: value for key, value in verdict.items() if key != "checks"}
    console.print(orjson.dumps(details, option=orjson.OPT_INDENT_2).decode())
    print(orjson.dumps(verdict).decode(), flush=True)
