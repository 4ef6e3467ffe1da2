"""The ledger in the documents' database: for brokers without Redis (RabbitMQ).

Versions come from one counter row (`UPDATE … RETURNING`, committed before any version is
used), so they increase with arrival across every API host, and they can never fall below a
stored version: each reservation starts above the version floor (`floor.py`), which the storing
transactions raise in the same database. A deployment that moves from Redis to RabbitMQ on the
same database thus continues above every version Redis issued and a worker stored. The cost is a
database round trip per accepted batch on the way in, and ingestion answers 503 while the
database is unreachable.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import BindParameter

from docingest.db import dialect_insert
from docingest.ledger.base import LedgerUnavailableError, PendingEntry, Versions
from docingest.ledger.floor import stored_floor
from docingest.schemas import as_utc, utcnow
from docingest.tables import PENDING, VERSION_COUNTER

COUNTER = "documents"


class SqlLedger:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def reserve(self, ids: Sequence[uuid.UUID]) -> tuple[int, int | None]:
        floor = stored_floor()
        start = case((floor > VERSION_COUNTER.c.value, floor), else_=VERSION_COUNTER.c.value)
        raise_counter = (
            update(VERSION_COUNTER)
            .where(VERSION_COUNTER.c.name == COUNTER)
            .values(value=start + len(ids))
            .returning(VERSION_COUNTER.c.value)
        )
        with self._begin() as connection:
            last = int(connection.execute(raise_counter).scalar_one())
            first = last - len(ids) + 1
            now = utcnow()
            rows = [
                {"id": document_id, "version": first + i, "reserved_at": now}
                for i, document_id in enumerate(ids)
            ]
            self._insert(connection, rows)
        return first, None

    def mark(self, versions: Versions) -> None:
        if versions:
            now = utcnow()
            rows = [{"id": i, "version": v, "reserved_at": now} for i, v in versions]
            with self._begin() as connection:
                self._insert(connection, rows)

    @staticmethod
    def _insert(connection: Connection, rows: list[dict[str, Any]]) -> None:
        """One row per waiting version: the versions accepted before stay known when a later
        one is forgotten. Sorted: two reservations sharing ids lock them in the same order."""
        statement = dialect_insert(connection, PENDING).on_conflict_do_nothing()
        connection.execute(
            statement, sorted(rows, key=lambda row: (str(row["id"]), row["version"]))
        )

    def forget(self, versions: Versions) -> None:
        self._remove(versions, exact=True)

    def published(self, versions: Versions) -> None:
        if not versions:
            return
        statement = (
            update(PENDING)
            .where(
                PENDING.c.id == bindparam("pending_id"),
                PENDING.c.version == bindparam("pending_version"),
            )
            .values(published=True)
        )
        pairs = sorted(versions, key=lambda pair: (str(pair[0]), pair[1]))  # the inserts' order
        with self._begin() as connection:
            connection.execute(
                statement, [{"pending_id": i, "pending_version": v} for i, v in pairs]
            )

    def settle(self, versions: Versions) -> None:
        self._remove(versions, exact=False)

    def _remove(self, versions: Versions, *, exact: bool) -> None:
        if not versions:
            return
        # Settling up to the newest version of an id settles the others; forgetting does not.
        chosen = set(versions) if exact else dict(sorted(versions, key=lambda p: p[1])).items()
        pairs = sorted(chosen, key=lambda pair: (str(pair[0]), pair[1]))
        version: BindParameter[int] = bindparam("pending_version")
        at = PENDING.c.version == version if exact else PENDING.c.version <= version
        statement = delete(PENDING).where(and_(PENDING.c.id == bindparam("pending_id"), at))
        # One executemany, not a statement per id: a worker settles a whole batch per message.
        with self._begin() as connection:
            connection.execute(
                statement, [{"pending_id": i, "pending_version": v} for i, v in pairs]
            )

    def pending_version(self, document_id: uuid.UUID) -> int | None:
        statement = select(func.max(PENDING.c.version)).where(PENDING.c.id == document_id)
        with self._connect() as connection:
            found = connection.execute(statement).scalar_one_or_none()
        return None if found is None else int(found)

    def pending_count(self) -> int:
        with self._connect() as connection:
            count = select(func.count(PENDING.c.id.distinct()))
            return int(connection.execute(count).scalar_one())

    def older_than(self, moment: datetime, limit: int) -> list[PendingEntry]:
        statement = (
            select(PENDING.c.id, PENDING.c.version, PENDING.c.reserved_at, PENDING.c.published)
            .where(PENDING.c.reserved_at < moment)
            .order_by(PENDING.c.reserved_at)
            .limit(limit)
        )
        with self._connect() as connection:
            return [
                PendingEntry(row.id, int(row.version), as_utc(row.reserved_at), bool(row.published))
                for row in connection.execute(statement)
            ]

    def claim(self, name: str, seconds: float) -> bool:
        """A row of the counters' table whose value is when the claim expires (ms)."""
        key, now = f"lock:{name}", int(time.time() * 1000)
        take = (
            update(VERSION_COUNTER)
            .where(VERSION_COUNTER.c.name == key, VERSION_COUNTER.c.value <= now)
            .values(value=now + int(seconds * 1000))
        )
        with self._begin() as connection:
            insert = dialect_insert(connection, VERSION_COUNTER)
            connection.execute(insert.values(name=key, value=0).on_conflict_do_nothing())
            return connection.execute(take).rowcount == 1

    def ping(self) -> None:
        with self._connect() as connection:
            connection.execute(text("SELECT 1"))

    def close(self) -> None:
        return None  # the engine belongs to the caller

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self._connection(begin=True) as connection:
            yield connection

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with self._connection(begin=False) as connection:
            yield connection

    @contextmanager
    def _connection(self, *, begin: bool) -> Iterator[Connection]:
        """Database errors read as the ledger's: the API answers 503 without knowing SQL."""
        try:
            with self._engine.begin() if begin else self._engine.connect() as connection:
                yield connection
        except SQLAlchemyError as error:
            raise LedgerUnavailableError(str(error)) from error


def _id_and_version(row: dict[str, Any]) -> tuple[str, int]:
    return str(row["id"]), int(row["version"])
