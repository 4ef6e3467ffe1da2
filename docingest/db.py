"""Engine, reads, and the one statement that stores a whole batch of classified documents."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlmodel import Session, create_engine

from docingest.models import Document
from docingest.settings import get_settings


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        connect_args={"options": "-c timezone=UTC"},
    )


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the API read while a worker writes; NORMAL sync is durable across app crashes."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@lru_cache
def get_engine() -> Engine:
    """One engine (and connection pool) per process, from DATABASE_URL."""
    return make_engine(get_settings().database_url)


def get_document(session: Session, document_id: uuid.UUID) -> Document | None:
    return session.get(Document, document_id)


# Eight bound parameters a row: 500 rows stay under SQLite's 32,766 and PostgreSQL's 65,535.
_ROWS_PER_STATEMENT = 500
_UPDATED_ON_CONFLICT = (
    "content",
    "category",
    "confidence",
    "model_version",
    "version",
    "updated_at",
)


def upsert_documents(engine: Engine, rows: Sequence[dict[str, Any]]) -> None:
    """Store a batch in one statement; an older version never overwrites a newer one.

    Rows are `Document` column dicts. Redelivered messages and out-of-order versions are
    harmless: the conditional `DO UPDATE … WHERE version < excluded.version` keeps the newest.
    """
    if not rows:
        return
    unique = _newest_per_id(rows)
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    table = Document.__table__  # type: ignore[attr-defined]
    with engine.begin() as connection:
        for start in range(0, len(unique), _ROWS_PER_STATEMENT):
            statement = dialect.insert(table).values(unique[start : start + _ROWS_PER_STATEMENT])
            statement = statement.on_conflict_do_update(
                index_elements=[table.c.id],
                set_={name: statement.excluded[name] for name in _UPDATED_ON_CONFLICT},
                where=table.c.version < statement.excluded.version,
            )
            connection.execute(statement)


def _newest_per_id(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One statement may not touch a row twice (PostgreSQL refuses), so keep each id's newest."""
    newest: dict[uuid.UUID, dict[str, Any]] = {}
    for row in rows:
        current = newest.get(row["id"])
        if current is None or row["version"] > current["version"]:
            newest[row["id"]] = row
    return list(newest.values())


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic; the API never creates tables itself."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["url"] = url
    command.upgrade(config, revision)
