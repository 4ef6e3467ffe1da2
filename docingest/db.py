"""Engine, reads, and the one statement that stores a whole batch of classified documents."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    bindparam,
    delete,
    event,
    func,
    or_,
    tuple_,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, create_engine, select
from sqlmodel.sql.expression import SelectOfScalar

from docingest.schemas import utcnow
from docingest.settings import get_settings
from docingest.tables import DOCUMENTS, FAILURES, VERSION_FLOORS, Document, Failure


def make_engine(url: str, *, pre_ping: bool = True) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=_json,
        )
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    return create_engine(
        url,
        pool_pre_ping=pre_ping,
        pool_size=5,
        max_overflow=10,
        connect_args=POSTGRESQL_TIMEOUTS,
        json_serializer=_json,
    )


# A cut link must not hang a request or a worker: connecting, a dead peer (TCP keepalives and
# unacknowledged data), a lock held by another transaction, and a session left idle inside a
# transaction are all bounded. Statements themselves are not: a big batch may take a while.
POSTGRESQL_TIMEOUTS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
    "options": ("-c timezone=UTC -c lock_timeout=30s -c idle_in_transaction_session_timeout=60s"),
}


def _json(value: Any) -> str:
    """orjson: the standard library's encoder cost 5 % of a worker's time (py-spy)."""
    return orjson.dumps(value).decode()


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the API read while a worker writes. FULL sync: a commit is on disk before the
    worker acknowledges its message, so a power cut cannot lose an acknowledged batch (NORMAL,
    faster, would only survive crashes of the process; docs/reliability.md has the cost)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@lru_cache
def get_engine() -> Engine:
    """The worker's engine, one per process, from DATABASE_URL.

    Without a ping on every checkout (a round trip per batch): after a database restart the
    first use of a stale connection fails, SQLAlchemy drops the pool, and Dramatiq retries.
    """
    return make_engine(get_settings().database_url, pre_ping=False)


def get_document(session: Session, document_id: uuid.UUID) -> Document | None:
    return session.get(Document, document_id)


def store_batch(
    engine: Engine,
    documents: Sequence[dict[str, Any]],
    failures: Sequence[dict[str, Any]] = (),
) -> None:
    """Store a classified batch and its failures in one transaction.

    Rows are column dicts of `Document` and `Failure`. Redelivered messages and out-of-order
    versions are harmless: each upsert only replaces a row with a *newer* version
    (`DO UPDATE … WHERE version < excluded.version`), so the newest always wins.
    """
    rows = [*documents, *failures]
    if not rows:
        return
    with engine.begin() as connection:
        for table, table_rows in ((DOCUMENTS, documents), (FAILURES, failures)):
            if table_rows:
                statement = _upsert_statement(connection.dialect.name, table)
                connection.execute(statement, _sorted_newest(table_rows))
        raise_floor(connection, max(row["version"] for row in rows))


def _sorted_newest(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each id once, in id order: concurrent batches sharing ids then lock their rows in the same
    order, so PostgreSQL never has two of them wait for each other (a deadlock)."""
    return sorted(newest_per_id(rows), key=lambda row: row["id"])


def raise_floor(connection: Connection, version: int) -> None:
    """Record in the storing transaction how high this process's stored versions went."""
    insert = dialect_insert(connection, VERSION_FLOORS)
    statement = insert.on_conflict_do_update(
        index_elements=[VERSION_FLOORS.c.writer],
        set_={"version": insert.excluded.version, "updated_at": insert.excluded.updated_at},
        where=VERSION_FLOORS.c.version < insert.excluded.version,
    )
    writer = f"{socket.gethostname()}:{os.getpid()}"
    connection.execute(statement, {"writer": writer, "version": version, "updated_at": utcnow()})


def version_floor(engine: Engine) -> int:
    """The highest version ever stored (0 on a new database)."""
    with engine.connect() as connection:
        statement = sa_select(func.max(VERSION_FLOORS.c.version))
        return int(connection.execute(statement).scalar() or 0)


def dialect_insert(connection: Connection, table: Table) -> Any:
    """PostgreSQL's or SQLite's INSERT, both with `on_conflict_do_update`."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


@cache
def _upsert_statement(dialect_name: str, table: Table) -> Insert:
    """Built once per process: constructing the statement costs more than running a small batch.

    A document row is replaced only by a newer version. A failure row also by the same version
    (a replay that failed again), and it counts the attempts. Every column is replaced, so a
    column a row leaves out becomes NULL: a worker's row (no `deleted_at`) that is newer than a
    tombstone brings the document back.
    """
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    insert = dialect.insert(table)
    newer = insert.excluded.version
    kept = {"id", "created_at"} if table is DOCUMENTS else {"id", "attempts"}
    updates = {c.name: insert.excluded[c.name] for c in table.columns if c.name not in kept}
    if table is DOCUMENTS:
        where = table.c.version < newer
    else:
        updates["attempts"] = table.c.attempts + 1
        where = table.c.version <= newer
    statement: Insert = insert.on_conflict_do_update(
        index_elements=[table.c.id], set_=updates, where=where
    )
    return statement


def newest_per_id(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One statement may not touch a row twice (PostgreSQL refuses), so keep each id's newest."""
    newest: dict[uuid.UUID, dict[str, Any]] = {}
    for row in rows:
        current = newest.get(row["id"])
        if current is None or row["version"] > current["version"]:
            newest[row["id"]] = row
    return list(newest.values())


def stored_versions(engine: Engine, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Each id's highest version stored, as a document (or tombstone) or as a failure."""
    found: dict[uuid.UUID, int] = {}
    with engine.connect() as connection:
        for table in (DOCUMENTS, FAILURES):
            statement = sa_select(table.c.id, table.c.version).where(table.c.id.in_(ids))
            for document_id, version in connection.execute(statement):
                found[document_id] = max(found.get(document_id, -1), int(version))
    return found


def current_contents(engine: Engine, ids: Sequence[str]) -> list[tuple[uuid.UUID, int, str]]:
    """(id, version, content) of the stored, not deleted documents among `ids`."""
    documents = DOCUMENTS
    statement = sa_select(documents.c.id, documents.c.version, documents.c.content).where(
        documents.c.id.in_([uuid.UUID(value) for value in ids]),
        documents.c.deleted_at.is_(None),
    )
    with engine.connect() as connection:
        return [(row.id, row.version, row.content) for row in connection.execute(statement)]


def update_classifications(engine: Engine, updates: Sequence[dict[str, Any]]) -> int:
    """Replace the classification of each (id, version) still stored at that version.

    Rows are `Document` column dicts with `id` and `version`; returns how many were updated.
    """
    if not updates:
        return 0
    documents = DOCUMENTS
    fields = [name for name in updates[0] if name not in {"id", "version"}]
    statement = (
        update(documents)
        .where(documents.c.id == bindparam("_id"), documents.c.version == bindparam("_version"))
        .values({name: bindparam(name) for name in fields})
    )
    rows = [
        {name: row[name] for name in fields} | {"_id": row["id"], "_version": row["version"]}
        for row in updates
    ]
    with engine.begin() as connection:
        return connection.execute(statement, rows).rowcount


def _unsuperseded_failures() -> SelectOfScalar[Failure]:
    """Failures with no stored version at least as new: the ones still worth replaying."""
    return (
        select(Failure)
        .outerjoin(Document, col(Document.id) == col(Failure.id))
        .where(or_(col(Document.version).is_(None), col(Document.version) < col(Failure.version)))
        .order_by(col(Failure.failed_at), col(Failure.id))
    )


def list_failures(session: Session, *, limit: int, offset: int = 0) -> Sequence[Failure]:
    return session.exec(_unsuperseded_failures().limit(limit).offset(offset)).all()


def count_failures(engine: Engine) -> int:
    unsuperseded = _unsuperseded_failures().order_by(None).subquery()
    with engine.connect() as connection:
        statement = sa_select(func.count()).select_from(unsuperseded)
        return int(connection.execute(statement).scalar_one())


def get_failure(session: Session, document_id: uuid.UUID) -> Failure | None:
    return session.get(Failure, document_id)


def take_failures(
    engine: Engine, requeue: Callable[[Sequence[Failure]], None], *, batch: int = 500
) -> int:
    """Hand the unsuperseded failures found now to `requeue`, a batch at a time.

    The list is a snapshot: a document that fails again during the replay is not replayed
    again by it. Each batch is read, requeued and deleted in one transaction, and a row is
    deleted only as it was read (same version and attempts): a worker that failed the replayed
    document again meanwhile has rewritten the row, which then stays visible.
    """
    with engine.connect() as connection:
        keys = [tuple(key) for key in connection.execute(_failure_keys())]
    taken = 0
    for start in range(0, len(keys), batch):
        as_read = tuple_(col(Failure.id), col(Failure.version), col(Failure.attempts)).in_(
            keys[start : start + batch]
        )
        with Session(engine) as session:
            failures = session.exec(select(Failure).where(as_read)).all()
            if failures:
                session.execute(delete(Failure).where(as_read))
                requeue(failures)
            session.commit()
        taken += len(failures)
    return taken


def _failure_keys() -> Select[tuple[uuid.UUID, int, int]]:
    unsuperseded = _unsuperseded_failures().subquery()
    return sa_select(unsuperseded.c.id, unsuperseded.c.version, unsuperseded.c.attempts)


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic; the API never creates tables itself."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["url"] = url
    command.upgrade(config, revision)
