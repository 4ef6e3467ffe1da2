"""Helpers of the fault-injection tests: real processes, a patient client, and the figures.

Every process runs in its own session (process group), so a test can SIGKILL a whole Dramatiq
worker tree at once, and a teardown can make sure nothing it started outlives it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import redis
from sqlalchemy import text

from docingest.db import make_engine
from docingest.embedded import free_port
from docingest.ledger.redis import PENDING_KEY
from docingest.queue.redis import NAMESPACE, QueueKeys
from tests.helpers import UNAMBIGUOUS

HEARTBEAT_TIMEOUT_SECONDS = 3
TEXTS = list(UNAMBIGUOUS.values())


def content_for(n: int, label: str = "") -> str:
    """A classifiable text, unique per n, so a stored row can be traced back to what was sent."""
    return f"{TEXTS[n % len(TEXTS)]} [{label}#{n}]"


# --- processes ---------------------------------------------------------------------------------


class Process:
    """One command in its own session, its output in a log file."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.log_path = cwd / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(args),
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def group(self) -> list[psutil.Process]:
        """Every running process of this one's group (Dramatiq forks its workers); zombies are
        dead, only not yet reaped by whoever inherited them."""
        members = []
        for process in psutil.process_iter(["pid", "status"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):  # exited meanwhile
                zombie = process.info["status"] == psutil.STATUS_ZOMBIE
                if os.getpgid(process.pid) == self.pid and not zombie:
                    members.append(process)
        return members

    def dump_stacks(self) -> None:
        """Every thread's stack of each worker process Dramatiq forked, into the log (SIGUSR1,
        docingest.worker.middleware): what a stuck worker waits on, for a failure's report."""
        for process in self.group():
            if process.pid != self.pid:
                with contextlib.suppress(psutil.Error):
                    process.send_signal(signal.SIGUSR1)
        time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL to the whole process group: a crash, no cleanup, no acknowledgement.

        Waits until every member is gone: on a busy machine a killed process with a large
        heap takes a moment to exit, and one may have been forking when the signal went out.
        """
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(10)
        _, alive = psutil.wait_procs(self.group(), timeout=10)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM (graceful), then SIGKILL to the group for whatever is left."""
        if self.alive() and timeout > 0:
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        return self.popen.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Api(Process):
    def __init__(self, name: str, env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "docingest", "api", "--port", str(self.port)]
        super().__init__(name, args, env, cwd)

    def wait_ready(self, timeout: float = 30) -> None:
        """/ready answers 200: the process is up and reaches both the broker and the database."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")


class Processes:
    """Starts the service's processes; `stop_all` (a fixture's teardown) ends every one of them."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self.started: list[Process] = []
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{self._count:02d}-{kind}"

    def api(self, **env: str) -> Api:
        api = Api(self._name("api"), self.env | env, self.cwd)
        self.started.append(api)
        api.wait_ready()
        return api

    def worker(self, *, processes: int = 1, threads: int = 2, **env: str) -> Process:
        args = [sys.executable, "-m", "docingest", "worker"]
        args += ["--processes", str(processes), "--threads", str(threads)]
        worker = Process(self._name("worker"), args, self.env | env, self.cwd)
        self.started.append(worker)
        return worker

    def stop_all(self, timeout: float = 10) -> None:
        """SIGTERM to all at once (a graceful Dramatiq stop takes 2-3 s), SIGKILL what is left."""
        started = time.monotonic()
        for process in self.started:
            if process.alive():
                process.popen.send_signal(signal.SIGTERM)
        for process in self.started:
            remaining = max(0.1, timeout - (time.monotonic() - started))
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(remaining)
            process.stop(timeout=0)
        print(f"----- stopped {len(self.started)} processes in {time.monotonic() - started:.1f} s")
        for process in self.started:
            print(f"----- {process.name} (exit {process.popen.returncode}) -----")
            print(process.log_tail())


def service_env(
    *, database_url: str, broker_url: str, model_path: Path, data_dir: Path, **extra: str
) -> dict[str, str]:
    """What the service's processes read; the test's own DATABASE_URL/REDIS_URL never leak in."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return env | {
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "MODEL_PATH": str(model_path),
        "DATA_DIR": str(data_dir),
        "WORKER_HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT_SECONDS),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def keyed_processes(
    tmp_path: Path, *, database_url: str, broker_url: str, model_path: Path, api_keys: str
) -> Processes:
    """Processes of a service with these API_KEYS, retrying after 1 s (tests of clients)."""
    env = service_env(
        database_url=database_url,
        broker_url=broker_url,
        model_path=model_path,
        data_dir=tmp_path / "var",
        RETRY_AFTER_SECONDS="1",
        API_KEYS=api_keys,
    )
    return Processes(tmp_path, env)


# --- a client that keeps what it was told ------------------------------------------------------


@dataclass
class Sent:
    """What the client sent and what the API answered; the test's single source of truth."""

    documents: dict[tuple[str, str], int | None] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    retry_after: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_sent(self, documents: Iterable[dict[str, str]]) -> None:
        with self.lock:
            for document in documents:
                self.documents.setdefault((document["id"], document["content"]), None)

    def record_accepted(self, document: dict[str, str], version: int) -> None:
        with self.lock:
            key = (document["id"], document["content"])
            previous = self.documents.get(key)
            self.documents[key] = version if previous is None else max(previous, version)

    def record_status(self, response: httpx.Response) -> None:
        with self.lock:
            self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
            if "retry-after" in response.headers:
                self.retry_after.add(response.headers["retry-after"])

    @property
    def sent(self) -> int:
        return len(self.documents)

    @property
    def accepted(self) -> int:
        return sum(1 for _, version in self._snapshot() if version is not None)

    def _snapshot(self) -> list[tuple[tuple[str, str], int | None]]:
        """The documents as they are now: a feeder thread may be adding to them."""
        with self.lock:
            return list(self.documents.items())

    def last_sent(self) -> dict[str, tuple[str, int | None]]:
        """Per id, the content sent last and the version its 202 returned (None: not accepted).

        "Last" is the order of first sending: meaningful for ids whose updates are each sent
        after the previous one's answer, as a client that orders its updates does.
        """
        return {
            document_id: (content, version) for (document_id, content), version in self._snapshot()
        }

    def newest(self) -> dict[str, tuple[int, str]]:
        """Per id, the highest version any 202 returned, and the content sent with it."""
        newest: dict[str, tuple[int, str]] = {}
        for (document_id, content), version in self._snapshot():
            if version is not None and version > newest.get(document_id, (-1, ""))[0]:
                newest[document_id] = (version, content)
        return newest


def new_documents(count: int, label: str) -> list[dict[str, str]]:
    return [{"id": str(uuid.uuid4()), "content": content_for(n, label)} for n in range(count)]


def post_bulk(
    client: httpx.Client,
    documents: list[dict[str, str]],
    sent: Sent,
    *,
    patience: float = 60,
    retry: bool = True,
) -> bool:
    """POST /documents/bulk until every document is accepted, waiting as Retry-After says.

    Retries the same ids and contents, so a request whose answer was lost (a timeout) at worst
    queues the same document twice, which the versioned upsert absorbs. Returns whether accepted.
    """
    sent.record_sent(documents)
    deadline = time.monotonic() + patience
    while True:
        try:
            response = client.post("/documents/bulk", json=documents)
        except httpx.HTTPError as error:
            sent.errors.append(repr(error))
            wait = 0.5
        else:
            sent.record_status(response)
            if response.status_code == 202:
                items = response.json()["items"]
                assert [item["status"] for item in items] == [202] * len(documents), items
                for document, item in zip(documents, items, strict=True):
                    assert item["id"] == document["id"]
                    sent.record_accepted(document, item["version"])
                return True
            assert response.status_code in (429, 503), (response.status_code, response.text)
            assert response.headers["content-type"] == "application/json"
            wait = float(response.headers["retry-after"])
        if not retry or time.monotonic() + wait > deadline:
            return False
        time.sleep(wait)


def post_one(client: httpx.Client, document: dict[str, str], sent: Sent) -> None:
    """POST /documents once; a 202 records the version the API gave it."""
    sent.record_sent([document])
    response = client.post("/documents", json=document)
    sent.record_status(response)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["id"] == document["id"]
    sent.record_accepted(document, body["version"])


class Feeder(threading.Thread):
    """Posts bulk requests of `size` new documents in a loop (retrying each) until finished."""

    def __init__(
        self, base_url: str, sent: Sent, *, size: int, label: str, pause: float = 0.0
    ) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.sent = sent
        self.size = size
        self.label = label
        self.pause = pause
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self.requests = 0

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, timeout=10) as client:
                while not self.stopping.is_set():
                    label = f"{self.label}{self.requests}"
                    post_bulk(client, new_documents(self.size, label), self.sent)
                    self.requests += 1
                    self.stopping.wait(self.pause)
        except BaseException as error:
            self.failure = error

    def finish(self) -> None:
        self.stopping.set()
        self.join(60)
        assert not self.is_alive(), "the feeding client did not stop"
        if self.failure is not None:
            raise self.failure


# --- what ended up in the database -------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    sent: int
    accepted: int
    ids: int
    stored: int
    duplicated: int
    lost: int
    unknown: int

    def line(self, test: str) -> str:
        return (
            f"FIGURES {test}: sent={self.sent} accepted={self.accepted} stored={self.stored} "
            f"duplicated={self.duplicated} lost={self.lost} (ids={self.ids}, "
            f"rows-not-accepted={self.unknown})"
        )

    @property
    def complete(self) -> bool:
        return self.lost == 0 and self.duplicated == 0


def rows(database_url: str) -> list[tuple[str, str, int]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            result = connection.execute(text("SELECT id, content, version FROM documents"))
            return [(str(uuid.UUID(str(i))), c, int(v)) for i, c, v in result]
    finally:
        engine.dispose()


def figures(sent: Sent, database_url: str) -> Figures:
    """sent/accepted count documents (an update is a document); stored/lost count accepted ids.

    duplicated: rows beyond one per accepted id, plus rows whose version or content differ from
    the newest version accepted for that id. lost: accepted ids with no row.
    """
    newest = sent.newest()
    found: dict[str, list[tuple[str, int]]] = {}
    for document_id, content, version in rows(database_url):
        found.setdefault(document_id, []).append((content, version))
    stored = sum(1 for document_id in newest if document_id in found)
    extra_rows = sum(len(found[i]) - 1 for i in newest if i in found)
    stale = sum(
        1
        for document_id, (version, content) in newest.items()
        if document_id in found and found[document_id][0] != (content, version)
    )
    return Figures(
        sent=sent.sent,
        accepted=sent.accepted,
        ids=len(newest),
        stored=stored,
        duplicated=extra_rows + stale,
        lost=len(newest) - stored,
        unknown=len(found.keys() - newest.keys()),
    )


def wait_for_figures(
    sent: Sent,
    database_url: str,
    timeout: float,
    *,
    broker_url: str | None = None,
    idle: Callable[[], bool] | None = None,
) -> Figures:
    """Poll the table until every accepted id holds its newest version, or time runs out.

    With `broker_url` (a Redis) or `idle` (any broker), also stop once the queue has been idle
    for two polls in a row (nothing waiting, delayed or in flight): nothing more can arrive, so
    what is missing is lost.
    """
    if idle is None and broker_url is not None:
        idle = functools.partial(queue_idle, broker_url)
    deadline = time.monotonic() + timeout
    idle_polls = 0
    while True:
        current = figures(sent, database_url)
        if current.complete or time.monotonic() > deadline:
            return current
        idle_polls = idle_polls + 1 if idle is not None and idle() else 0
        if idle_polls >= 2:
            return current
        time.sleep(0.5)


def stale(sent: Sent, database_url: str) -> int:
    """Accepted ids whose row is missing the version the 202 of their last-sent document
    returned (an older version, or another content), for ids whose last document was accepted.
    A missing row is `lost`, not stale."""
    stored = {
        document_id: (content, version) for document_id, content, version in rows(database_url)
    }
    return sum(
        1
        for document_id, (content, version) in sent.last_sent().items()
        if version is not None
        and document_id in stored
        and stored[document_id] != (content, version)
    )


def not_stored(versions: dict[str, int], database_url: str) -> int:
    """How many of these ids hold no row of at least the given version yet."""
    stored = {document_id: version for document_id, _, version in rows(database_url)}
    return sum(
        1 for document_id, version in versions.items() if stored.get(document_id, -1) < version
    )


def count_rows(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM documents")).scalar_one())
    finally:
        engine.dispose()


# --- what is in Redis --------------------------------------------------------------------------


DOCUMENTS_KEYS = QueueKeys.of("documents")


def queued_messages(broker_url: str) -> int:
    """Messages waiting on the documents queue (not yet fetched by a worker)."""
    return int(redis.Redis.from_url(broker_url).llen(DOCUMENTS_KEYS.waiting))


def unacked_messages(broker_url: str) -> int:
    """Messages fetched by some worker and not acknowledged yet: in flight."""
    client = redis.Redis.from_url(broker_url)
    return sum(int(client.scard(key)) for key in client.scan_iter(DOCUMENTS_KEYS.acks_pattern))


def held_by_silent_workers(broker_url: str, silent_seconds: float) -> int:
    """Messages held by workers whose last heartbeat is older than `silent_seconds`, or gone:
    nobody processes those until Redis hands them back (a cut-off or dead worker's)."""
    client = redis.Redis.from_url(broker_url)
    heard_since = (time.time() - silent_seconds) * 1000
    held = 0
    for key in client.scan_iter(DOCUMENTS_KEYS.acks_pattern):
        worker = key.decode().split("__acks__.", 1)[1].split(".", 1)[0]  # .<worker>.<queue>
        heartbeat = client.zscore(f"{NAMESPACE}:__heartbeats__", worker)
        if heartbeat is None or heartbeat < heard_since:
            held += int(client.scard(key))
    return held


def broker_state(broker_url: str) -> str:
    """Where a Redis's messages are, for a report or a failure's message."""
    client = redis.Redis.from_url(broker_url)
    acks = {key.decode(): int(client.scard(key)) for key in client.scan_iter("*__acks__*")}
    heartbeats = client.zrange(f"{NAMESPACE}:__heartbeats__", 0, -1, withscores=True)
    return (
        f"waiting {queued_messages(broker_url)}, delayed {client.llen(DOCUMENTS_KEYS.delayed)}, "
        f"dead-lettered {dead_letters(broker_url)}, unacknowledged {acks}, pending documents "
        f"{pending_documents(broker_url)}, heartbeats {[(w.decode(), s) for w, s in heartbeats]} "
        f"at {time.time() * 1000:.0f}"
    )


def queue_idle(broker_url: str) -> bool:
    """No message waiting, waiting for a retry, or held by a worker (dead or alive)."""
    client = redis.Redis.from_url(broker_url)
    waiting = int(client.llen(DOCUMENTS_KEYS.waiting)) + int(client.llen(DOCUMENTS_KEYS.delayed))
    return waiting == 0 and unacked_messages(broker_url) == 0


def pending_documents(broker_url: str) -> int:
    """The ledger's count of accepted documents not yet stored or failed."""
    return int(redis.Redis.from_url(broker_url).hlen(PENDING_KEY))


def dead_letters(broker_url: str) -> int:
    return int(redis.Redis.from_url(broker_url).zcard(DOCUMENTS_KEYS.dead))


BALLAST_KEY = "docingest-test:ballast"


def post_during_background_fsync(
    broker_url: str, post: Callable[[], object], *, ballast_mb: int = 32, attempts: int = 3
) -> tuple[bool, int]:
    """Call `post` while Redis runs a slow background fsync of its append-only file.

    Under `appendfsync everysec` Redis starts a background fsync at the first write a second
    or more after the last fsync, and while that fsync runs it postpones writing new commands
    to the file (up to 2 s) yet answers them. After two quiet seconds (everything written
    before is fsynced by then), a large write starts an fsync slow enough to post through.

    Returns whether the fsync was still running after `post` returned (then, with everysec,
    what `post` queued was acknowledged but is only in Redis's memory), and how many posts it
    took; with `appendfsync always` there is no such window and every attempt is made.
    """
    client = redis.Redis.from_url(broker_url)
    if client.config_get("appendfsync")["appendfsync"] != "everysec":
        attempts = 1  # `always` answers only what is fsynced, `no` leaves it to the OS
    for attempt in range(1, attempts + 1):
        time.sleep(2.2)
        client.set(BALLAST_KEY, b"\0" * (ballast_mb << 20))
        post()
        if int(client.info("persistence")["aof_pending_bio_fsync"]) > 0:
            return True, attempt
    return False, attempts


def drop_ballast(broker_url: str) -> None:
    redis.Redis.from_url(broker_url).delete(BALLAST_KEY)


def assert_nothing_lost(result: Figures) -> None:
    """Every document sent was accepted, and every accepted id holds its newest version."""
    assert result.accepted == result.sent, result
    assert result.lost == 0, result
    assert result.duplicated == 0, result
    assert result.stored == result.ids, result
    assert result.unknown == 0, result
