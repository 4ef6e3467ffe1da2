"""The change feed's exactness with real processes: the API, two worker processes that each run
the relay, and a consumer following `GET /changes` through the Python client.

- A change committed late (a transaction held open while the workers store and number others)
  reaches a consumer that already read past it, once.
- Eight clients create, update and delete a bounded set of ids (and a ninth writer commits
  transactions it held open) while a worker process is killed with SIGKILL and started again,
  and the consumer stops and resumes from its saved cursor twice: what it saw is the history
  of committed versions that the database holds, each change once, in order per id, none
  before its document was readable.

(tests/integration/test_changes.py proves the same in one process, with relays as threads.)
"""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from docingest_client import Change, NotFoundError
from sqlalchemy import Engine, text

from docingest import Client
from docingest.changes.relay import relay_lag
from docingest.db import make_engine
from docingest.documents.store import _store_documents
from docingest.embedded import wait_until
from tests.faults import Process, Processes, pending_documents, queue_idle, service_env
from tests.helpers import UNAMBIGUOUS
from tests.integration.test_changes import row

WORKER_READY = "Worker process is ready for action"
BATCH_DONE = '"event":"batch processed"'
WRITERS = 8
IDS = 40
SLOW_IDS = 8


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


def two_workers(procs: Processes) -> list[Process]:
    """Two worker processes (each its own Dramatiq process group, each running the relay),
    ready to consume."""
    workers = [procs.worker(processes=1), procs.worker(processes=1)]
    for worker in workers:
        wait_ready(worker)
    return workers


def wait_ready(worker: Process) -> None:
    def ready() -> bool:
        assert worker.alive(), worker.log_tail()
        return WORKER_READY in worker.log_path.read_text(errors="replace")

    wait_until(ready, 90, f"{worker.name} ready")


def batches(worker: Process) -> int:
    """Batches the worker has stored so far, by its log."""
    return worker.log_path.read_text(errors="replace").count(BATCH_DONE)


class Following(threading.Thread):
    """A consumer's `changes()` iterator, followed in a thread: `take` waits for the next changes
    a bounded time (a change the feed never hands out fails the test, not hangs it)."""

    def __init__(self, changes: Iterator[Change]) -> None:
        super().__init__(daemon=True)
        self.changes = changes
        self.queue: queue.Queue[Change] = queue.Queue()
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        try:
            for change in self.changes:
                self.queue.put(change)
        except Exception as error:  # the client closed under it, at the test's end
            self.error = error

    def take(self, count: int, timeout: float = 60) -> list[Change]:
        deadline = time.monotonic() + timeout
        taken: list[Change] = []
        while len(taken) < count:
            try:
                taken.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"{len(taken)} of {count} changes: {taken}") from None
        return taken


def test_a_change_committed_late_reaches_a_consumer_that_read_past_it(
    postgres_url: str,
    redis_url: str,
    model_path: Path,
    tmp_path: Path,
    procs: Processes,
    engine: Engine,
) -> None:
    """A transaction writes a document (its change row takes its id) and stays open while the
    two workers store ten others and their relays number them; the consumer reads those ten,
    past where the open one's id lies; then it commits: the consumer, following `next`, gets
    it once, after the ten, and not before the document is readable."""
    procs.env = service_env(
        database_url=postgres_url, broker_url=redis_url, model_path=model_path, data_dir=tmp_path
    )
    api = procs.api()
    two_workers(procs)
    late = uuid.uuid4()
    texts = list(UNAMBIGUOUS.values())
    with Client(api.base_url) as client, engine.connect() as held:
        transaction = held.begin()
        _store_documents(held, [row(late, 1)])  # a worker's statement, not committed yet
        early = client.add_many([texts[n % len(texts)] + f" #{n}" for n in range(10)])
        followed = Following(client.changes(wait=1))
        before = followed.take(10)
        assert {c.document_id for c in before} == {item.id for item in early}
        # Both relays went on numbering past it: nothing committed waits, the open row is
        # invisible to them, to the feed and to readers.
        assert relay_lag(engine).waiting == 0
        with pytest.raises(NotFoundError):
            client.get(late)
        transaction.commit()
        client.get(late)
        more = client.add_many([texts[n % len(texts)] + f" after #{n}" for n in range(5)])
        after = followed.take(6)
    seen = before + after
    assert [c.document_id for c in after].count(late) == 1
    assert {c.document_id for c in after} == {late} | {item.id for item in more}
    positions = [int(c.position) for c in seen]
    assert positions == list(range(1, 17)), positions  # once each, in order, no gap
    late_position = next(int(c.position) for c in seen if c.document_id == late)
    assert late_position > max(int(c.position) for c in before)
    with engine.connect() as connection:
        found = connection.execute(text("SELECT document_id, id FROM changes")).all()
    ids: dict[uuid.UUID, int] = {document_id: int(id_) for document_id, id_ in found}
    assert ids[late] < min(ids[c.document_id] for c in before)  # its id first, its position after
    print(
        f"FIGURES changes late commit: id {ids[late]} of {len(ids)}, position {late_position}, "
        "seen once after the 10 read while it was open"
    )


# --- eight writers, a worker killed, a consumer restarted ----------------------------------------


@dataclass
class Written:
    """What the writers were told: per id, the versions a 202 gave and the category of the text
    sent with each, and how many DELETEs answered 204."""

    versions: dict[uuid.UUID, dict[int, str]] = field(default_factory=dict)
    deletes: Counter[uuid.UUID] = field(default_factory=Counter)
    refused: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Writing(threading.Thread):
    """A writer thread: `operations` counts what it did, `finish` stops it and raises what it
    raised."""

    def __init__(self, ids: list[uuid.UUID], written: Written) -> None:
        super().__init__(daemon=True)
        self.ids = ids
        self.written = written
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self.operations = 0

    def finish(self) -> None:
        self.stopping.set()
        self.join(30)
        assert not self.is_alive(), "a writer did not stop"
        if self.failure is not None:
            raise self.failure


class Writer(Writing):
    """POSTs new versions of ids of the bounded set (one in five a DELETE) until stopped."""

    def __init__(self, number: int, base_url: str, ids: list[uuid.UUID], written: Written) -> None:
        super().__init__(ids, written)
        self.number = number
        self.base_url = base_url

    def run(self) -> None:
        rng = random.Random(self.number)
        try:
            with httpx.Client(base_url=self.base_url, timeout=10) as http:
                while not self.stopping.is_set():
                    self.write(http, rng, rng.choice(self.ids))
                    self.operations += 1
                    self.stopping.wait(0.01)
        except BaseException as error:
            self.failure = error

    def write(self, http: httpx.Client, rng: random.Random, document_id: uuid.UUID) -> None:
        written = self.written
        if rng.random() < 0.2:
            response = http.delete(f"/documents/{document_id}")
            assert response.status_code in (204, 404), response.text
            if response.status_code == 204:
                with written.lock:
                    written.deletes[document_id] += 1
            return
        category = rng.choice(list(UNAMBIGUOUS))
        content = f"{UNAMBIGUOUS[category]} [{self.number}#{self.operations}]"
        response = http.post("/documents", json={"id": str(document_id), "content": content})
        if response.status_code in (429, 503):  # later: nothing accepted, nothing to check
            with written.lock:
                written.refused[response.status_code] += 1
            return
        assert response.status_code == 202, response.text
        with written.lock:
            written.versions.setdefault(document_id, {})[response.json()["version"]] = category


class SlowWriter(Writing):
    """Stores versions of ids of its own straight into the database with a worker's statement,
    each transaction held open 0-0.3 s before its commit (a worker stalled there): its change
    rows take their ids early and commit after others were numbered, all along the run."""

    def __init__(self, engine: Engine, ids: list[uuid.UUID], written: Written) -> None:
        super().__init__(ids, written)
        self.engine = engine

    def run(self) -> None:
        rng = random.Random(-1)
        try:
            while not self.stopping.is_set():
                self.operations += 1  # the version: each one newer than the last, so it wins
                document_id, category = rng.choice(self.ids), rng.choice(list(UNAMBIGUOUS))
                with self.engine.begin() as connection:
                    _store_documents(connection, [row(document_id, self.operations, category)])
                    self.stopping.wait(rng.uniform(0, 0.3))
                with self.written.lock:
                    self.written.versions.setdefault(document_id, {})[self.operations] = category
        except BaseException as error:
            self.failure = error


@dataclass(frozen=True)
class Seen:
    change: Change
    session: int
    # The document's row when the change was received: (version, deleted), None if none.
    document: tuple[int, bool] | None


class Consumer(threading.Thread):
    """Follows the feed with `Client.changes`, saving its cursor to a file after each change it
    applies; `restart()` makes it stop after the next change and start again from the file,
    with a new client. It ends at the change of the document `last` names."""

    def __init__(self, base_url: str, cursor_file: Path, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.cursor_file = cursor_file
        self.engine = engine
        self.seen: list[Seen] = []
        self.sessions = 0
        self.last: uuid.UUID | None = None
        self.failure: BaseException | None = None
        self._restart = threading.Event()

    def restart(self) -> None:
        self._restart.set()

    def wait_for(self, *, session: int, changes: int) -> None:
        """Until this session of the consumer has seen `changes` changes."""

        def seen() -> bool:
            assert self.failure is None, self.failure
            assert self.is_alive()
            return sum(s.session == session for s in self.seen) >= changes

        wait_until(seen, 90, f"session {session} of the consumer seeing {changes} changes")

    def run(self) -> None:
        try:
            while not self.follow():
                pass
        except BaseException as error:
            self.failure = error

    def follow(self) -> bool:
        """One session, from the saved cursor; True once the last change was seen."""
        saved = self.cursor_file.read_text() if self.cursor_file.exists() else None
        self.sessions += 1
        with Client(self.base_url) as client, self.engine.connect() as connection:
            for change in client.changes(after=saved, wait=2):
                self.seen.append(Seen(change, self.sessions, self.document(connection, change)))
                self.cursor_file.write_text(change.position)
                if change.document_id == self.last:
                    return True
                if self._restart.is_set():
                    self._restart.clear()
                    return False
        raise AssertionError("the feed ended")

    @staticmethod
    def document(connection: Any, change: Change) -> tuple[int, bool] | None:
        """The document as a reader finds it now: it must hold the change's version or a newer."""
        found = connection.execute(
            text("SELECT version, deleted_at IS NOT NULL FROM documents WHERE id = :id"),
            {"id": change.document_id},
        ).first()
        connection.rollback()  # a fresh snapshot for the next one
        return None if found is None else (int(found[0]), bool(found[1]))


def settled(drained: Callable[[], bool]) -> Callable[[], bool]:
    """True after `drained` held twice in a row (a message may be between two states)."""
    streak = [0]

    def check() -> bool:
        streak[0] = streak[0] + 1 if drained() else 0
        return streak[0] >= 2

    return check


@pytest.mark.timeout(180)
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_consumer_sees_every_committed_version_once_through_kills_and_restarts(
    broker: str,
    postgres_url: str,
    model_path: Path,
    tmp_path: Path,
    procs: Processes,
    engine: Engine,
    request: pytest.FixtureRequest,
) -> None:
    """Eight clients POST and DELETE 40 ids, a ninth writer holds its transactions open before
    committing; a worker process is SIGKILLed while it stores and started again; the consumer
    stops twice and resumes from the cursor it saved. Once all is stored, what the consumer saw
    is the changes table, position by position, and agrees with what the writers were told and
    with the documents the database holds."""
    broker_url = str(request.getfixturevalue("redis_url" if broker == "redis" else "amqp_url"))
    procs.env = service_env(
        database_url=postgres_url, broker_url=broker_url, model_path=model_path, data_dir=tmp_path
    )
    api = procs.api()
    workers = two_workers(procs)
    ids = [uuid.uuid4() for _ in range(IDS)]
    written = Written()
    consumer = Consumer(api.base_url, tmp_path / "cursor", engine)
    consumer.start()
    slow_ids = [uuid.uuid4() for _ in range(SLOW_IDS)]
    writers: list[Writing] = [
        *(Writer(n, api.base_url, ids, written) for n in range(WRITERS)),
        SlowWriter(engine, slow_ids, written),
    ]
    started = time.monotonic()
    for writer in writers:
        writer.start()
    try:
        consumer.wait_for(session=1, changes=10)
        consumer.restart()
        # Killed while it stores: its messages in flight are redelivered, its relay's pass (if
        # it was in one) rolls back.
        wait_until(lambda: batches(workers[0]) >= 3, 90, "the worker storing")
        workers[0].kill()  # SIGKILL to its process group
        stored_by_killed = batches(workers[0])
        killed = time.monotonic()
        assert workers[0].group() == []
        procs.worker(processes=1)  # started again; it takes over once ready
        consumer.wait_for(session=2, changes=10)
        consumer.restart()
        consumer.wait_for(session=3, changes=10)
        time.sleep(max(0.0, killed + 5 - time.monotonic()))
    finally:
        for writer in writers:
            writer.finish()
    wrote = time.monotonic() - started

    # Drained: every accepted document stored (the ledger settled), no message left.
    def drained() -> bool:
        if broker == "redis":
            return pending_documents(broker_url) == 0 and queue_idle(broker_url)
        with engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM pending_documents")).scalar() == 0

    wait_until(settled(drained), 60, "the queue drained", interval=0.3)
    # The last change: a document sent now, after every other is stored.
    with Client(api.base_url) as client:
        consumer.last = client.add("The last document of the run: the match ended in a draw.").id
    consumer.join(30)
    assert not consumer.is_alive(), "the consumer did not reach the last change"
    if consumer.failure is not None:
        raise consumer.failure

    with engine.connect() as connection:
        unnumbered = connection.execute(text("SELECT count(*) FROM changes WHERE position IS NULL"))
        table = connection.execute(
            text("SELECT position, document_id, version, kind FROM changes ORDER BY position")
        ).all()
        documents = {
            document_id: (int(version), bool(deleted))
            for document_id, version, deleted in connection.execute(
                text("SELECT id, version, deleted_at IS NOT NULL FROM documents")
            )
        }
    seen = [s.change for s in consumer.seen]
    described = [(int(c.position), c.document_id, c.version, c.kind) for c in seen]

    # The feed as the consumer saw it is the changes the database holds: each once, in order.
    assert unnumbered.scalar_one() == 0, "committed changes the relay never numbered"
    assert described == [(int(p), d, int(v), k) for p, d, v, k in table]
    assert len({(c.document_id, c.version) for c in seen}) == len(seen)
    assert [int(c.position) for c in seen] == list(range(1, len(seen) + 1))
    assert consumer.sessions == 3
    assert len({s.session for s in consumer.seen}) == 3, "a session saw nothing"

    # Each change is one the writers made, with what they sent; per id, versions only rise, and
    # the last one is what the document holds.
    by_id: dict[uuid.UUID, list[Change]] = {}
    for change in seen:
        by_id.setdefault(change.document_id, []).append(change)
    for document_id in ids + slow_ids:
        changes = by_id.get(document_id, [])
        versions = [c.version for c in changes]
        assert versions == sorted(set(versions)), (document_id, versions)
        accepted = written.versions.get(document_id, {})
        stored = [c for c in changes if c.kind == "stored"]
        assert all(c.version in accepted for c in stored), (document_id, versions, accepted)
        assert all(c.category == accepted[c.version] for c in stored), document_id
        assert sum(c.kind == "deleted" for c in changes) <= written.deletes[document_id]
        assert {c.kind for c in changes} <= {"stored", "deleted"}
        if not changes:
            assert not accepted
            assert document_id not in documents
            continue
        assert documents[document_id] == (versions[-1], changes[-1].kind == "deleted")
        # The newest version a 202 gave is in the feed, unless a delete came after it.
        newest = max(accepted, default=0)
        assert newest in versions or documents[document_id][0] > newest, document_id

    # No change reached the consumer before its document was readable at that version.
    early = [
        (s.change.position, s.document)
        for s in consumer.seen
        if s.document is None or s.document[0] < s.change.version
    ]
    assert early == []
    kinds = Counter(c.kind for c in seen)
    print(
        f"FIGURES changes exact ({broker}): {len(seen)} changes ({kinds['stored']} stored, "
        f"{kinds['deleted']} deleted) of {IDS} ids from {WRITERS} writers, "
        f"{sum(w.operations for w in writers[:-1])} requests in {wrote:.1f} s, "
        f"{writers[-1].operations} slow transactions, "
        f"{sum(written.deletes.values())} deletes, refused {dict(written.refused)}; a worker "
        f"killed after {stored_by_killed} batches and restarted, the consumer resumed twice: "
        "each once, in order"
    )
