"""The phases of one design under one workload: accept, drain, end to end, and the row check."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import redis
from corpus import Doc, make_documents, write_bodies
from loadgen import Generator, LoadJob, LoadResult, run_load
from services import (
    PhaseError,
    Queue,
    RabbitQueue,
    Sampler,
    Servers,
    Service,
    Table,
    machine_busy_seconds,
)

from docingest.embedded import free_port, wait_until
from docingest.model.datasets import load_bbc

ROOT = Path(__file__).resolve().parent.parent
WARMUP_DOCS = 256
# Few connections: the warm-up documents go in many small messages, to reach every process.
WARMUP_CONNECTIONS = 8
WORKER_READY = "Worker process is ready for action"
# The drain's end is when its poll first sees an empty queue: poll often, to time it closely.
DRAIN_POLL_SECONDS = 0.005
# benchmarks/baseline.py's names; not imported, since importing it connects to the servers.
BASELINE_QUEUE = "baseline"
BASELINE_TABLE = "baseline_documents"


@dataclass(frozen=True, slots=True)
class Design:
    """How to run one implementation: its processes, its queue and its table."""

    name: str
    api_command: list[str]
    worker_command: list[str]
    worker_processes: int
    queue: str
    table: str
    failures_table: str | None
    has_version: bool
    ready_path: str
    env: dict[str, str]

    def api(self, port: int) -> list[str]:
        return [*self.api_command, "--host", "127.0.0.1", "--port", str(port)]


def docingest_design(
    env: dict[str, str], api_workers: int, processes: int, threads: int, name: str = "docingest"
) -> Design:
    """The service as its Procfile runs it: `docingest api` and `docingest worker`; `name`
    tells the runs on different brokers apart (env's BROKER_URL)."""
    docingest = [sys.executable, "-m", "docingest"]
    threads_option = ["--threads", str(threads)]
    return Design(
        name=name,
        api_command=[*docingest, "api", "--workers", str(api_workers)],
        worker_command=[*docingest, "worker", "--processes", str(processes), *threads_option],
        worker_processes=processes,
        queue="documents",
        table="documents",
        failures_table="failures",
        has_version=True,
        ready_path="/ready",
        env=env,
    )


def baseline_design(env: dict[str, str], processes: int, threads: int) -> Design:
    """The article's way: one uvicorn process, `dramatiq benchmarks.baseline -p 4 -t 4`."""
    dramatiq = [sys.executable, "-m", "dramatiq", "benchmarks.baseline"]
    return Design(
        name="baseline",
        api_command=[sys.executable, "-m", "uvicorn", "benchmarks.baseline:app"],
        worker_command=[*dramatiq, "-p", str(processes), "-t", str(threads)],
        worker_processes=processes,
        queue=BASELINE_QUEUE,
        table=BASELINE_TABLE,
        failures_table=None,
        has_version=False,
        ready_path="/openapi.json",
        env=env,
    )


@dataclass(frozen=True, slots=True)
class Context:
    """What every phase shares: where to write, how to load, how long to wait."""

    folder: Path
    generator: Generator
    sampler: Sampler
    database_url: str
    texts: Sequence[str]
    generator_threads: int
    timeout: int


@dataclass(slots=True)
class Check:
    """Every accepted document must be stored exactly once, as sent and classified."""

    expected: int
    stored: int
    failed: int
    lost: int
    duplicated: int
    unacknowledged: int
    mismatched: int
    dead_lettered: int


@dataclass(slots=True)
class PhaseResult:
    name: str
    docs: int
    seconds: float
    other_cores: float
    load: LoadResult | None = None
    check: Check | None = None
    details: dict[str, Any] = field(default_factory=dict)
    sent: list[Doc] = field(default_factory=list, repr=False)

    @property
    def rate(self) -> float:
        return self.docs / self.seconds if self.seconds > 0 else 0.0


class CpuWindow:
    """Machine CPU minus ours over a phase: what other work on a shared machine took."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.start = time.monotonic()
        self.busy = machine_busy_seconds()
        self.ours = sampler.cpu_seconds()
        self.by_label = sampler.cpu_by_label()

    def cpu_ms_per_doc(self, docs: int) -> dict[str, float]:
        """Each role's CPU over the window per document: `api`, `workers`, and each server
        (postgres, redis, rabbitmq); the unit costs of docs/deploy.md's capacity model."""
        spent: dict[str, float] = {}
        for label, seconds in self.sampler.cpu_by_label().items():
            role = label.rsplit("-", 1)[-1] if label.endswith(("-api", "-workers")) else label
            spent[role] = spent.get(role, 0.0) + seconds - self.by_label.get(label, 0.0)
        spent.pop("bench", None)
        return {role: round(s * 1000 / docs, 4) for role, s in spent.items() if docs and s > 0}

    def other_cores(self, generator_cpu: float) -> float:
        """Average cores used by processes that are not the benchmark's, over the window."""
        wall = time.monotonic() - self.start
        ours = self.sampler.cpu_seconds() - self.ours + generator_cpu
        return max(0.0, (machine_busy_seconds() - self.busy - ours) / wall) if wall > 0 else 0.0


class DesignRun:
    """One design's API (and, in some phases, workers) for one workload's phases."""

    def __init__(self, context: Context, design: Design, workload: str) -> None:
        self.context = context
        self.design = design
        self.workload = workload
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs = context.folder / "logs"
        broker_url = design.env["BROKER_URL"]
        self.queue: Queue | RabbitQueue = (
            RabbitQueue(broker_url, design.queue, context.database_url)
            if broker_url.startswith("amqp")
            else Queue(redis.Redis.from_url(broker_url), design.queue)
        )
        self.table = Table(
            context.database_url,
            design.table,
            has_version=design.has_version,
            failures=design.failures_table,
        )
        self.api = self._service("api", design.api(self.port))
        self.workers = self._service("workers", design.worker_command)

    def _service(self, role: str, command: list[str]) -> Service:
        name = f"{self.design.name}-{self.workload}-{role}"
        return Service(name, command, self.design.env, self.logs / f"{name}.log")

    def __enter__(self) -> Self:
        self.api.start(ROOT)
        self.context.sampler.watch(self.api.name, self.api.pid)
        wait_until(self._api_ready, 120, f"{self.api.name} start-up", interval=0.2)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_workers()
        self.context.sampler.unwatch(self.api.name)
        self.api.stop()
        self.table.dispose()
        self.queue.close()

    def _api_ready(self) -> bool:
        self.api.check_alive()
        try:
            return httpx.get(self.url + self.design.ready_path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def logs_hint(self) -> str:
        return f"logs: {self.api.log}, {self.workers.log}"

    def peaks(self) -> dict[str, dict[int, int]]:
        """Peak RSS per process of the API and of the workers, once they are stopped."""
        sampler = self.context.sampler
        return {
            "api": sampler.take_peaks(self.api.name),
            "workers": sampler.take_peaks(self.workers.name),
        }

    # Workers -------------------------------------------------------------------------------

    def start_workers(self) -> None:
        self.workers.start(ROOT)
        self.context.sampler.watch(self.workers.name, self.workers.pid)

    def stop_workers(self) -> None:
        self.context.sampler.unwatch(self.workers.name)
        self.workers.stop()

    def _alive(self) -> bool:
        self.api.check_alive()
        self.workers.check_alive()
        return True

    # Phases --------------------------------------------------------------------------------

    def reset(self) -> None:
        """A fresh table and an empty queue (and ledger: on Redis, the version counter too)."""
        self.table.truncate()
        self.queue.reset()

    def warm_up(self) -> None:
        """Let the API serve a few requests before measuring, then forget them."""
        self.reset()
        docs = make_documents(self.context.texts, self.workload, WARMUP_DOCS)
        self._load("warm-up", docs, 1, 64)
        self.reset()

    def accept(self, phase: str, count: int, per_request: int, connections: int) -> PhaseResult:
        """Accept-only: no worker runs, so the documents stay queued for `drain`."""
        self.reset()
        docs = make_documents(self.context.texts, self.workload, count)
        window = CpuWindow(self.context.sampler)
        load = self._load(phase, docs, per_request, connections)
        return PhaseResult(
            name=phase,
            docs=len(load.accepted),
            seconds=load.seconds,
            other_cores=window.other_cores(load.cpu_seconds),
            load=load,
            sent=docs,
            details={"cpu_ms_per_doc": window.cpu_ms_per_doc(len(load.accepted))},
        )

    def drain(self, phase: str, accepted: PhaseResult) -> PhaseResult:
        """Hand the queue that `accepted` filled, all at once, to running and warmed-up workers.

        Started on a full queue, worker processes would begin one by one (imports take seconds
        on 2 cores) and load the model on their first message: that start-up is not the drain
        rate. So the messages are set aside, the workers started and warmed up with a few
        documents, and the queue put back in one step; the clock runs from then to the last
        acknowledgement.
        """
        assert accepted.load is not None
        sizes = self.queue.documents_per_message()
        if not sizes:
            raise PhaseError(f"{phase}: nothing is queued to drain")
        self.queue.stash()
        launched = time.monotonic()
        self.start_workers()
        self._warm_up_workers(phase)
        self.table.truncate()
        window = CpuWindow(self.context.sampler)
        handed_over = time.monotonic()
        self.queue.unstash()
        finished = self._wait_drained(phase)
        return PhaseResult(
            name=phase,
            docs=sum(sizes.values()),
            seconds=finished - handed_over,
            other_cores=window.other_cores(0.0),
            check=self.check(accepted.sent, accepted.load.accepted),
            details={
                "queued_messages": len(sizes),
                "worker_start_and_warm_up_seconds": handed_over - launched,
                "cpu_ms_per_doc": window.cpu_ms_per_doc(sum(sizes.values())),
            },
        )

    def start_warm_workers(self, phase: str) -> None:
        """Start the workers and warm them up, for phases that run with them throughout."""
        self.start_workers()
        self._warm_up_workers(phase)

    def _warm_up_workers(self, phase: str) -> None:
        """Every process ready, then a few hundred documents in small messages through them."""
        ready_before = self.workers.log_count(WORKER_READY)
        wait_until(
            lambda: (
                self._alive()
                and self.workers.log_count(WORKER_READY) - ready_before
                >= self.design.worker_processes
            ),
            120,
            f"{phase}: worker start-up ({self.logs_hint()})",
            interval=0.05,
        )
        docs = make_documents(self.context.texts, self.workload, WARMUP_DOCS)
        self._load("warm-up-workers", docs, 1, WARMUP_CONNECTIONS)
        self._wait_drained(f"{phase} warm-up")

    def end_to_end(
        self,
        phase: str,
        count: int,
        per_request: int,
        connections: int,
        *,
        keep_rows: bool = False,
        server_ids: bool = False,
    ) -> PhaseResult:
        """With workers running: first request sent to last document stored.

        Also notes when the first row appeared: idle workers poll the queue with a backoff, and
        the time they take to notice work is part of this figure.

        `keep_rows`: on the table as it is, not emptied first; the check then reads the rows
        written since the phase began only. `server_ids`: half the ids time-ordered
        (`make_documents`).
        """
        if self.queue.pending():
            raise PhaseError(f"{phase}: the queue is not empty before the phase")
        since = None
        if keep_rows:
            since = self.table.now()
        else:
            self.table.truncate()
        docs = make_documents(self.context.texts, self.workload, count, server_ids=server_ids)
        first_row: list[float] = []

        def watch_first_row() -> None:
            if not first_row and self.table.has_rows(since):
                first_row.append(time.monotonic())

        window = CpuWindow(self.context.sampler)
        load = self._load(phase, docs, per_request, connections, on_wait=watch_first_row)
        finished = self._wait_drained(phase, on_poll=watch_first_row)
        return PhaseResult(
            name=phase,
            docs=len(load.accepted),
            seconds=finished - load.first_send,
            other_cores=window.other_cores(load.cpu_seconds),
            load=load,
            check=self.check(docs, load.accepted, since),
            details={
                "first_row_after_seconds": first_row[0] - load.first_send if first_row else None,
                "cpu_ms_per_doc": window.cpu_ms_per_doc(len(load.accepted)),
            },
        )

    def _wait_drained(self, phase: str, on_poll: Callable[[], None] = lambda: None) -> float:
        """When the last message is acknowledged: its rows are committed, since the ack follows."""

        def drained() -> bool:
            done = self._alive() and self.queue.pending() == 0
            on_poll()  # after: once drained, every row is committed, the first one too
            return done

        return wait_until(
            drained,
            self.context.timeout,
            f"{phase}: queue drained ({self.logs_hint()})",
            interval=DRAIN_POLL_SECONDS,
        )

    def _load(
        self,
        phase: str,
        docs: list[Doc],
        per_request: int,
        connections: int,
        on_wait: Callable[[], None] = lambda: None,
    ) -> LoadResult:
        context = self.context
        prefix = context.folder / "bodies" / f"{self.design.name}-{self.workload}-{phase}-"
        prefix.parent.mkdir(exist_ok=True)
        threads = 1 if context.generator.name == "python" else context.generator_threads
        requests = write_bodies(docs, prefix, threads=threads, per_request=per_request)
        threads = min(threads, requests)
        job = LoadJob(
            url=self.url,
            path="/documents" if per_request == 1 else "/documents/bulk",
            content_type="application/json",
            bodies_prefix=prefix,
            out_dir=context.folder / "load" / f"{self.design.name}-{self.workload}-{phase}",
            threads=threads,
            connections=max(threads, min(connections, requests)),
            timeout=context.timeout,
        )
        try:
            load = run_load(context.generator, job, self.logs / "generator.log", on_wait)
        finally:
            for body_file in prefix.parent.glob(prefix.name + "*"):
                body_file.unlink()
        if not load.complete:
            raise PhaseError(
                f"{phase}: {load.responses} of {load.requests} requests answered before the "
                f"generator's timeout; errors {load.errors}; {self.logs_hint()}"
            )
        return load

    def check(
        self, sent: Sequence[Doc], accepted: dict[str, int | None], since: datetime | None = None
    ) -> Check:
        """The table's rows, or those written from `since` on (a table kept between phases)."""
        rows = self.table.rows(since)
        expected = {doc.id: doc.md5() for doc in sent}
        stored = {row[0] for row in rows}
        missing = accepted.keys() - stored
        failed = missing & self.table.failed_ids()
        wrong_version = sum(
            1
            for row_id, version, _, _ in rows
            if accepted.get(row_id) is not None and version != accepted[row_id]
        )
        return Check(
            expected=len(accepted),
            stored=len(rows),
            failed=len(failed),
            lost=len(missing - failed),
            duplicated=(len(rows) - len(stored)) + len(stored - expected.keys()) + wrong_version,
            unacknowledged=len((stored & expected.keys()) - accepted.keys()),
            mismatched=sum(
                1
                for row_id, _, md5, classified in rows
                if row_id in expected and (md5 != expected[row_id] or not classified)
            ),
            dead_lettered=self.queue.dead(),
        )


def service_env(database_url: str, broker_url: str, model_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "MODEL_PATH": str(model_path),
        "PYTHONUNBUFFERED": "1",
    }


@contextlib.contextmanager
def warm_docingest(
    args: argparse.Namespace, generator: Generator, model: Path, phase: str, **env: str
) -> Iterator[DesignRun]:
    """docingest's processes on the run's servers (embedded, or the URLs given), every one
    watched by the CPU sampler, the API and the workers started and warm: the modes that run
    their phases with the workers up throughout (--feed, --grown) start here."""
    with (
        Sampler() as sampler,
        Servers(args.run_folder, args.database_url, args.redis_url) as servers,
    ):
        sampler.watch("bench", os.getpid(), tree=False)
        for label, pid in servers.pids().items():
            sampler.watch(label, pid)
        service = service_env(servers.docingest_database_url, servers.redis_url, model) | env
        design = docingest_design(
            service, args.api_workers, args.worker_processes, args.worker_threads
        )
        context = Context(
            folder=args.run_folder,
            generator=generator,
            sampler=sampler,
            database_url=servers.docingest_database_url,
            texts=load_bbc()[0],
            generator_threads=args.generator_threads,
            timeout=args.timeout,
        )
        with DesignRun(context, design, "bbc") as run:
            run.warm_up()
            run.start_warm_workers(phase)
            yield run
