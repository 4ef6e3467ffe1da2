"""Races between transactions, stepped deterministically: one waits on a lock the test holds,
the test proceeds only once the database says it waits."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, text

from docingest.db import make_engine
from docingest.documents.store import store_batch
from docingest.failures.repository import list_failures, take_failures
from docingest.schemas import QueuedDocument, utcnow
from docingest.tables import Failure
from docingest.worker.ingest import failure_row


class Step(threading.Thread):
    """A call in a thread, its exception kept for the test to raise."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._call = call
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._call()
        except BaseException as error:
            self.error = error

    def finish(self) -> None:
        self.join(30)
        assert not self.is_alive(), "the step never finished"
        if self.error is not None:
            raise self.error


def wait_for_a_lock_wait(engine: Engine) -> None:
    """Until some PostgreSQL backend waits on a lock."""
    deadline = time.monotonic() + 10
    query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(query).scalar_one():
                return
        time.sleep(0.02)
    raise AssertionError("no transaction ever waited on a lock")


def document(document_id: uuid.UUID, version: int) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": document_id,
        "content": f"v{version}",
        "version": version,
        "created_at": now,
        "updated_at": now,
    }


def test_batches_sharing_ids_in_opposite_orders_do_not_deadlock(postgres_url: str) -> None:
    """A holds its lock on `first`; a batch [second, first] must wait on `first` before it
    locks `second`, so that A can still take `second` (unsorted, PostgreSQL would find a
    deadlock and abort one of them)."""
    engine = make_engine(postgres_url)
    first, second = sorted([uuid.uuid4(), uuid.uuid4()])
    store_batch(engine, [document(first, 1), document(second, 1)])
    holder = engine.connect()
    transaction = holder.begin()
    update = text("UPDATE documents SET content = 'held' WHERE id = :id")
    holder.execute(update, {"id": first})
    batch = Step(lambda: store_batch(engine, [document(second, 2), document(first, 2)]))
    batch.start()
    wait_for_a_lock_wait(engine)
    holder.execute(update, {"id": second})
    transaction.commit()
    holder.close()
    batch.finish()
    with engine.connect() as connection:
        versions = dict(connection.execute(text("SELECT id, version FROM documents")).all())
    assert versions == {first: 2, second: 2}
    engine.dispose()


def test_a_document_failing_again_during_its_replay_stays_visible(engine: Engine) -> None:
    """The worker fails the replayed document again while the replay is still running: its new
    failure row must survive the replay's clean-up, and the replay takes it once only."""
    queued = QueuedDocument(id=uuid.uuid4(), content="poison", version=3, accepted_at=utcnow())
    store_batch(engine, [], [failure_row(queued, "ValueError: first", utcnow())])
    workers: list[Step] = []

    def requeue(failures: Sequence[Failure]) -> None:
        again = failure_row(queued, "ValueError: again", utcnow())
        worker = Step(lambda: store_batch(engine, [], [again]))
        worker.start()
        if engine.dialect.name == "postgresql":
            wait_for_a_lock_wait(engine)
        else:
            time.sleep(0.5)  # SQLite: the worker waits for the replay's write lock
        workers.append(worker)

    assert take_failures(engine, requeue) == 1
    (worker,) = workers
    worker.finish()
    failures = list_failures(engine, limit=10)
    assert [(f.id, f.error) for f in failures] == [(queued.id, "ValueError: again")]
