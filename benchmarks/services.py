"""The processes under test and the servers they use, with what the harness watches of them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
import pika
import psutil
import redis
from sqlalchemy import Engine, create_engine, text

from docingest.db import migrate
from docingest.embedded import EmbeddedPostgres, EmbeddedRedis
from docingest.queue.redis import QueueKeys
from docingest.settings import Settings


class PhaseError(RuntimeError):
    """A phase cannot go on; the message says why and which logs to read."""


class Service:
    """A process (and its children) we started, in its own process group, logging to a file."""

    def __init__(self, name: str, command: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.command = list(command)
        self.env = env
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, f"{self.name} is not started"
        return self._process.pid

    def start(self, cwd: Path) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                self.command,
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_count(self, needle: str) -> int:
        return self.log.read_text(errors="replace").count(needle) if self.log.exists() else 0

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise PhaseError(
                f"{self.name} exited with code {self._process.returncode}; see {self.log}"
            )

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM for a graceful stop, then SIGKILL to whatever is left of its group."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@dataclass
class _Watched:
    pid: int
    tree: bool


# How often the periodic samples find each watched tree's processes again (a pass over /proc);
# in between they read the processes found. Explicit samples (a phase's boundaries) always do.
FIND_SECONDS = 1.0


@dataclass
class Sampler:
    """Every 100 ms, the peak RSS and CPU time of every process of every watched tree.

    RSS peaks (the kernel's, `high_water_mark`) are kept per label and process; CPU times let
    a phase tell its own processes' CPU from the rest of the machine's, which on a shared
    machine is noise in the figures.
    A sample reads two files a process; the trees are found again every FIND_SECONDS (a pass
    over every process of the machine: at every sample, the sampler took ~0.07 core).
    """

    interval: float = 0.1
    _watched: dict[str, _Watched] = field(default_factory=dict)
    _trees: dict[str, list[psutil.Process]] = field(default_factory=dict)
    _found_at: float = float("-inf")
    _peaks: dict[str, dict[int, int]] = field(default_factory=dict)
    _cpu: dict[int, float] = field(default_factory=dict)
    _label_of: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def watch(self, label: str, pid: int, *, tree: bool = True) -> None:
        with self._lock:
            self._watched[label] = _Watched(pid, tree)
        self.sample()

    def unwatch(self, label: str) -> None:
        self.sample()
        with self._lock:
            self._watched.pop(label, None)
            self._trees.pop(label, None)

    def take_peaks(self, label: str) -> dict[int, int]:
        """Peak RSS in bytes per process seen under `label`, forgotten once taken."""
        self.sample()
        with self._lock:
            return self._peaks.pop(label, {})

    def cpu_seconds(self) -> float:
        """CPU time used so far by every process ever watched (sampled now)."""
        self.sample()
        with self._lock:
            return sum(self._cpu.values())

    def cpu_by_label(self) -> dict[str, float]:
        """CPU time used so far by the processes of each label (sampled now)."""
        self.sample()
        totals: dict[str, float] = {}
        with self._lock:
            for pid, seconds in self._cpu.items():
                label = self._label_of[pid]
                totals[label] = totals.get(label, 0.0) + seconds
        return totals

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample(find=time.monotonic() - self._found_at >= FIND_SECONDS)

    def sample(self, *, find: bool = True) -> None:
        with self._lock:
            if find:
                self._find()
            for label, processes in self._trees.items():
                for process in processes:
                    with contextlib.suppress(psutil.Error):
                        times = process.cpu_times()
                        self._cpu[process.pid] = times.user + times.system
                        self._label_of[process.pid] = label
                    if (peak := high_water_mark(process.pid)) is not None:
                        self._peaks.setdefault(label, {})[process.pid] = peak

    def _find(self) -> None:
        """Each watched tree's processes, from one pass over every process (psutil keeps the
        objects between passes)."""
        children: dict[int, list[psutil.Process]] = {}
        for process in psutil.process_iter(["ppid"]):
            children.setdefault(process.info["ppid"], []).append(process)
        self._trees = {label: _tree(w, children) for label, w in self._watched.items()}
        self._found_at = time.monotonic()


def memory_kb(pid: int) -> dict[str, int]:
    """The memory lines of /proc/<pid>/status (VmHWM, VmRSS, …), in kB; none once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    found = (line.partition(":") for line in lines)
    return {name: int(value.split()[0]) for name, _, value in found if name.startswith("Vm")}


def high_water_mark(pid: int) -> int | None:
    """The process's peak RSS in bytes since it last exec'd (the kernel's VmHWM): no spike
    between two samples is missed, and what `docingest worker` does before it execs Dramatiq
    (checking, or training, the model) is not counted as the worker's."""
    peak = memory_kb(pid).get("VmHWM")
    return None if peak is None else peak * 1024


def _tree(watched: _Watched, children: dict[int, list[psutil.Process]]) -> list[psutil.Process]:
    try:
        found, waiting = [], [psutil.Process(watched.pid)]
    except psutil.Error:
        return []
    while waiting:
        process = waiting.pop()
        found.append(process)
        if watched.tree:
            waiting += children.get(process.pid, [])
    return found


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (steal included: a neighbour's use)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class Servers:
    """PostgreSQL and Redis: embedded ones in the run folder, or the URLs given (a RabbitMQ
    node is always given: `bench.py --broker`)."""

    def __init__(self, folder: Path, database_url: str | None, redis_url: str | None) -> None:
        self.folder = folder
        self._given_database = database_url
        self._given_redis = redis_url
        self._postgres: EmbeddedPostgres | None = None
        self._redis: EmbeddedRedis | None = None
        self.redis_url = redis_url or ""
        self.docingest_database_url = ""
        self.baseline_database_url = ""
        self.rabbitmq_database_url = ""  # docingest on RabbitMQ: its SQL ledger lives here

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            shutil.rmtree(self.folder / "postgres", ignore_errors=True)
            shutil.rmtree(self.folder / "redis", ignore_errors=True)

    def _start(self) -> None:
        if self._given_redis is None:
            self._redis = EmbeddedRedis(self.folder / "redis")
            self._redis.start()
            self.redis_url = self._redis.url
        if self._given_database is None:
            self._postgres = EmbeddedPostgres(self.folder / "postgres")
            self._postgres.start()
            self.docingest_database_url = self._postgres.create_database("bench_docingest")
            self.baseline_database_url = self._postgres.create_database("bench_baseline")
            self.rabbitmq_database_url = self._postgres.create_database("bench_rabbitmq")
            migrate(self.rabbitmq_database_url)
        else:
            url = Settings(database_url=self._given_database).database_url
            self.docingest_database_url = self.baseline_database_url = url
            self.rabbitmq_database_url = url
        migrate(self.docingest_database_url)

    def stop(self) -> None:
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None

    def pids(self) -> dict[str, int]:
        """Root processes of the embedded servers, for the CPU accounting."""
        pids = {}
        if self._redis is not None:
            pids["redis"] = int(redis.Redis.from_url(self.redis_url).info("server")["process_id"])
        if self._postgres is not None:
            pid_file = self._postgres.data_dir / "postmaster.pid"
            pids["postgres"] = int(pid_file.read_text().split()[0])
        return pids


class Queue:
    """One Dramatiq queue in Redis: what is pending, what is dead-lettered."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.name = name
        self.keys = QueueKeys.of(name)  # the baseline's queue lives in the same namespace
        self._hashes = (self.keys.messages, self.keys.delayed_messages)

    def stash(self) -> None:
        """Hide the queued messages from the workers, until `unstash` hands them all at once."""
        self._rename(self._keys(), self._stash_keys())

    def unstash(self) -> None:
        if self.client.exists(*self._keys()):
            raise PhaseError(f"queue {self.name!r} is not empty: cannot put the stash back")
        self._rename(self._stash_keys(), self._keys())

    def _keys(self) -> tuple[str, str]:
        return self.keys.waiting, self.keys.messages

    def _stash_keys(self) -> tuple[str, str]:
        return f"bench-stash:{self.name}", f"bench-stash:{self.name}.msgs"

    def _rename(self, sources: tuple[str, str], targets: tuple[str, str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for source, target in zip(sources, targets, strict=True):
            pipe.rename(source, target)
        pipe.execute()

    def reset(self) -> None:
        """An empty Redis: queues, retries, version counter, pending set."""
        self.client.flushdb()

    def close(self) -> None:
        self.client.close()

    def pending(self) -> int:
        """Messages not yet acknowledged, including those waiting for a retry."""
        pipe = self.client.pipeline(transaction=False)
        for key in self._hashes:
            pipe.hlen(key)
        return sum(pipe.execute())

    def dead(self) -> int:
        return int(self.client.hlen(self.keys.dead_messages))

    def documents_per_message(self) -> dict[bytes, int]:
        """A docingest message carries a list of documents, a baseline message one."""
        sizes = {}
        for message_id, data in self.client.hgetall(self._hashes[0]).items():
            argument = orjson.loads(data)["args"][0]
            sizes[message_id] = len(argument) if isinstance(argument, list) else 1
        return sizes


class RabbitQueue:
    """docingest's documents queue on RabbitMQ, with `Queue`'s methods.

    AMQP cannot count unacknowledged messages, so `pending` adds the messages ready to the SQL
    ledger's pending entries (settled by the worker right after its commit, before the ack),
    less the documents stashed. A queue cannot be hidden either: `stash` moves its messages to
    a queue of the harness's own (`bench-stash`, no consumer), `unstash` publishes them back
    in one burst of unconfirmed publishes and then acknowledges the stash.
    """

    STASH = "bench-stash"

    def __init__(self, url: str, name: str, database_url: str) -> None:
        self.url = url
        self.name = name
        self._queues = (name, f"{name}.DQ")
        self._engine = create_engine(database_url)
        self._stashed_documents = 0

    def _channel(self) -> tuple[pika.BlockingConnection, Any]:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        return connection, connection.channel()

    def _count(self, queue: str) -> int:
        connection, channel = self._channel()
        try:
            return int(channel.queue_declare(queue, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker:  # not declared yet: empty
            return 0
        finally:
            connection.close()

    def reset(self) -> None:
        """Empty queues and pending set; the version counter stays (it only grows)."""
        connection, channel = self._channel()
        try:
            for queue in (*self._queues, f"{self.name}.XQ", self.STASH):
                channel.queue_delete(queue)
        finally:
            connection.close()
        with self._engine.begin() as connection_:
            connection_.execute(text("DELETE FROM pending_documents"))
        self._stashed_documents = 0

    def _move(self, source: str, target: str, *, confirm: bool) -> list[bytes]:
        """Every message of `source` onto `target`; the bodies, in order."""
        connection, channel = self._channel()
        try:
            channel.queue_declare(self.STASH, durable=True)
            if confirm:
                channel.confirm_delivery()
            bodies, last_tag = [], None
            while True:
                method, _, body = channel.basic_get(source, auto_ack=False)
                if method is None:
                    break
                bodies.append(body)
                last_tag = method.delivery_tag
            for body in bodies:
                properties = pika.BasicProperties(delivery_mode=2)
                channel.basic_publish("", target, body, properties)
            if last_tag is not None:
                channel.basic_ack(last_tag, multiple=True)
            return bodies
        finally:
            connection.close()

    def stash(self) -> None:
        """Until the queue stays empty: messages that `documents_per_message` read come back
        to it asynchronously, after its channel closed. Counted once per message id: a message
        can be moved twice (seen in runs: 2,752 documents stashed for 2,000 pending), which
        left `pending` below zero and the drain waiting forever."""
        bodies = self._move(self.name, self.STASH, confirm=True)
        time.sleep(0.5)
        while self._count(self.name):
            bodies += self._move(self.name, self.STASH, confirm=True)
            time.sleep(0.5)
        messages = {message["message_id"]: message for message in map(orjson.loads, bodies)}
        self._stashed_documents = sum(len(message["args"][0]) for message in messages.values())

    def unstash(self) -> None:
        if self._count(self.name):
            raise PhaseError(f"queue {self.name!r} is not empty: cannot put the stash back")
        self._move(self.STASH, self.name, confirm=False)
        self._stashed_documents = 0

    def pending(self) -> int:
        """Documents not stored yet (bench documents have distinct ids), stash excluded."""
        with self._engine.connect() as connection:
            waiting = int(connection.scalar(text("SELECT count(*) FROM pending_documents")) or 0)
        waiting -= self._stashed_documents
        return waiting + sum(self._count(queue) for queue in self._queues)

    def dead(self) -> int:
        return self._count(f"{self.name}.XQ")

    def documents_per_message(self) -> dict[int, int]:
        """Read without taking: fetched unacknowledged, then returned by closing the channel."""
        connection, channel = self._channel()
        sizes = {}
        try:
            while True:
                method, _, body = channel.basic_get(self.name, auto_ack=False)
                if method is None:
                    break
                sizes[method.delivery_tag] = len(orjson.loads(body)["args"][0])
        finally:
            connection.close()
        return sizes

    def close(self) -> None:
        self._engine.dispose()


class Table:
    """The stored documents of one design, read back to check every accepted one.

    `failures` names the table where a design records documents it could not classify: those
    are failed, visibly, not lost.
    """

    def __init__(self, url: str, name: str, *, has_version: bool, failures: str | None) -> None:
        self.engine: Engine = create_engine(url)
        self.name = name
        self.has_version = has_version
        self.failures = failures

    def truncate(self) -> None:
        tables = ", ".join(filter(None, (self.name, self.failures)))
        with self.engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {tables}"))

    def rows(self, since: datetime | None = None) -> list[tuple[str, int | None, str, bool]]:
        """(id, version or None, md5 of content, classified?) for every row, or for those
        written from `since` on (docingest's table only: by its `updated_at`)."""
        version = "version" if self.has_version else "NULL"
        query = f"SELECT id::text, {version}, md5(content), category IS NOT NULL FROM {self.name}"
        params = {} if since is None else {"since": since}
        if since is not None:
            query += " WHERE updated_at >= :since"
        with self.engine.connect() as connection:
            found = connection.execute(text(query), params)
            return [(row[0], row[1], row[2], row[3]) for row in found]

    def has_rows(self, since: datetime | None = None) -> bool:
        where, params = (
            ("", {}) if since is None else (" WHERE updated_at >= :since", {"since": since})
        )
        query = f"SELECT EXISTS (SELECT 1 FROM {self.name}{where})"
        with self.engine.connect() as connection:
            return bool(connection.scalar(text(query), params))

    def now(self) -> datetime:
        """The database's clock: what `since` compares with."""
        with self.engine.connect() as connection:
            moment: datetime = connection.scalar(text("SELECT clock_timestamp()"))
            return moment

    def failed_ids(self) -> set[str]:
        if self.failures is None:
            return set()
        with self.engine.connect() as connection:
            return set(connection.scalars(text(f"SELECT id::text FROM {self.failures}")))

    def dispose(self) -> None:
        self.engine.dispose()
