"""The database connection: engines (pool, timeouts, SQLite tuning), the dialect's upsert, and
migrations. What is stored in it, and how it is read back, is `docingest.documents.store`'s."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, Engine, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlmodel import create_engine

from docingest.settings import get_settings

if TYPE_CHECKING:
    from alembic.config import Config


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


# A cut link must not hang a request or a worker, nor let a cut-off worker's transaction hold
# its row locks for long. Client side (libpq): connecting, a silent peer (TCP keepalives) and
# unacknowledged data. Server side, per session: the same keepalives and user timeout toward the
# client, a periodic check that the client is still there during a statement (PostgreSQL 14+),
# sessions idle inside a transaction, and waits on another transaction's locks. Statements
# themselves are not bounded: a big batch may take a while.
POSTGRESQL_TIMEOUTS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "options": " ".join(
        f"-c {setting}"
        for setting in (
            "timezone=UTC",
            "lock_timeout=10s",
            "idle_in_transaction_session_timeout=10s",
            "tcp_keepalives_idle=5",
            "tcp_keepalives_interval=2",
            "tcp_keepalives_count=3",
            "tcp_user_timeout=10000",
            "client_connection_check_interval=2000",
        )
    ),
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


@contextmanager
def autocommit(bind: Engine | Connection) -> Iterator[Connection]:
    """A connection outside any transaction, where each statement is a transaction of its own
    (one snapshot, atomic): no `BEGIN` and `COMMIT` or `ROLLBACK` around it, two round trips of
    three. Given a connection, that one, which its caller took from here: a loop of statements
    (a webhook's turn) checks one out once, not once a statement."""
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


@lru_cache
def get_engine() -> Engine:
    """The worker's engine, one per process, from DATABASE_URL.

    Without a ping on every checkout (a round trip per batch): after a database restart the
    first use of a stale connection fails, SQLAlchemy drops the pool, and Dramatiq retries.
    """
    return make_engine(get_settings().database_url, pre_ping=False)


def dialect_insert(connection: Connection, table: Table) -> Any:
    """PostgreSQL's or SQLite's INSERT, both with `on_conflict_do_update`."""
    return insert_for(connection.dialect.name, table)


def insert_for(dialect_name: str, table: Table) -> Any:
    """`dialect_insert` by the dialect's name, for statements built once and cached."""
    return (postgresql if dialect_name == "postgresql" else sqlite).insert(table)


def newest_per_id(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One statement may not touch a row twice (PostgreSQL refuses), so keep each id's newest.

    Beside `dialect_insert`: every versioned upsert needs it, the store's and the SQL ledger's.
    """
    newest: dict[uuid.UUID, dict[str, Any]] = {}
    for row in rows:
        current = newest.get(row["id"])
        if current is None or row["version"] > current["version"]:
            newest[row["id"]] = row
    return list(newest.values())


class DataLossError(RuntimeError):
    """A downgrade would drop data and was not forced."""


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic; the API never creates tables itself."""
    from alembic import command

    command.upgrade(_alembic_config(url), revision)


def downgrade(url: str, revision: str, *, force: bool = False) -> None:
    """Take the schema down to `revision`; one that would drop data (labels, models, documents)
    raises `DataLossError` unless `force`, before any migration is
    undone (each declares what undoing it deletes as `LOSES`)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = _alembic_config(url)
    config.attributes["force"] = force
    if not force:
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                current = MigrationContext.configure(connection).get_current_revision()
        finally:
            engine.dispose()
        scripts = ScriptDirectory.from_config(config).iterate_revisions(current, revision)
        losses = [f"{s.revision}: {s.module.LOSES}" for s in scripts if hasattr(s.module, "LOSES")]
        if losses:
            raise DataLossError(
                f"going down to {revision} would delete {'; '.join(losses)}: refused, nothing "
                "was changed. Back the database up, then force it (force=True, or "
                "`alembic -x force=true downgrade <revision>`)"
            )
    command.downgrade(config, revision)


@lru_cache
def schema_revisions() -> tuple[str, frozenset[str]]:
    """This code's newest schema revision, and every revision it knows: a database at a known
    one but the newest is behind the code (`/ready` says so); at an unknown one, it was
    migrated by newer code, whose migrations keep older code working (a rolling deploy)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_alembic_config(""))
    head = scripts.get_current_head()
    assert head is not None
    return head, frozenset(script.revision for script in scripts.walk_revisions())


def _alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["url"] = url
    return config
