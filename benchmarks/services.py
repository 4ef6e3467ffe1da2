"""The processes under test and the servers they use, with what the harness watches of them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson
import psutil
import redis
from sqlalchemy import Engine, create_engine, text

from docingest.db import migrate
from docingest.embedded import EmbeddedPostgres, EmbeddedRedis
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


@dataclass
class Sampler:
    """Every 100 ms, the RSS and CPU time of every process of every watched tree.

    RSS peaks are kept per label and process; CPU times let a phase tell its own processes'
    CPU from the rest of the machine's, which on a shared machine is noise in the figures.
    """

    interval: float = 0.1
    _watched: dict[str, _Watched] = field(default_factory=dict)
    _peaks: dict[str, dict[int, int]] = field(default_factory=dict)
    _cpu: dict[int, float] = field(default_factory=dict)
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

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            for label, watched in self._watched.items():
                for process in _processes(watched):
                    with contextlib.suppress(psutil.Error):
                        with process.oneshot():
                            rss = process.memory_info().rss
                            times = process.cpu_times()
                        peaks = self._peaks.setdefault(label, {})
                        peaks[process.pid] = max(peaks.get(process.pid, 0), rss)
                        self._cpu[process.pid] = times.user + times.system


def _processes(watched: _Watched) -> list[psutil.Process]:
    try:
        root = psutil.Process(watched.pid)
        return [root, *root.children(recursive=True)] if watched.tree else [root]
    except psutil.Error:
        return []


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (steal included: a neighbour's use)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class Servers:
    """PostgreSQL and Redis: embedded ones in the run folder, or the URLs given."""

    def __init__(self, folder: Path, database_url: str | None, redis_url: str | None) -> None:
        self.folder = folder
        self._given_database = database_url
        self._given_redis = redis_url
        self._postgres: EmbeddedPostgres | None = None
        self._redis: EmbeddedRedis | None = None
        self.redis_url = redis_url or ""
        self.docingest_database_url = ""
        self.baseline_database_url = ""

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
        else:
            url = Settings(database_url=self._given_database).database_url
            self.docingest_database_url = self.baseline_database_url = url
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
        self._hashes = (f"dramatiq:{name}.msgs", f"dramatiq:{name}.DQ.msgs")

    def stash(self) -> None:
        """Hide the queued messages from the workers, until `unstash` hands them all at once."""
        self._rename(self._keys(), self._stash_keys())

    def unstash(self) -> None:
        if self.client.exists(*self._keys()):
            raise PhaseError(f"queue {self.name!r} is not empty: cannot put the stash back")
        self._rename(self._stash_keys(), self._keys())

    def _keys(self) -> tuple[str, str]:
        return f"dramatiq:{self.name}", self._hashes[0]

    def _stash_keys(self) -> tuple[str, str]:
        return f"bench-stash:{self.name}", f"bench-stash:{self.name}.msgs"

    def _rename(self, sources: tuple[str, str], targets: tuple[str, str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for source, target in zip(sources, targets, strict=True):
            pipe.rename(source, target)
        pipe.execute()

    def pending(self) -> int:
        """Messages not yet acknowledged, including those waiting for a retry."""
        pipe = self.client.pipeline(transaction=False)
        for key in self._hashes:
            pipe.hlen(key)
        return sum(pipe.execute())

    def pending_ids(self) -> set[bytes]:
        return {key for name in self._hashes for key in self.client.hkeys(name)}

    def dead(self) -> int:
        return int(self.client.hlen(f"dramatiq:{self.name}.XQ.msgs"))

    def documents_per_message(self) -> dict[bytes, int]:
        """A docingest message carries a list of documents, a baseline message one."""
        sizes = {}
        for message_id, data in self.client.hgetall(self._hashes[0]).items():
            argument = orjson.loads(data)["args"][0]
            sizes[message_id] = len(argument) if isinstance(argument, list) else 1
        return sizes


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

    def rows(self) -> list[tuple[str, int | None, str, bool]]:
        """(id, version or None, md5 of content, classified?) for every row."""
        version = "version" if self.has_version else "NULL"
        query = f"SELECT id::text, {version}, md5(content), category IS NOT NULL FROM {self.name}"
        with self.engine.connect() as connection:
            return [(row[0], row[1], row[2], row[3]) for row in connection.execute(text(query))]

    def has_rows(self) -> bool:
        with self.engine.connect() as connection:
            return bool(connection.scalar(text(f"SELECT EXISTS (SELECT 1 FROM {self.name})")))

    def failed_ids(self) -> set[str]:
        if self.failures is None:
            return set()
        with self.engine.connect() as connection:
            return set(connection.scalars(text(f"SELECT id::text FROM {self.failures}")))

    def dispose(self) -> None:
        self.engine.dispose()
