"""The counts `/stats` reads from the database: documents per category, stored per minute."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    func,
    select,
)

from docingest.schemas import as_utc
from docingest.tables import DOCUMENTS


def count_categories(engine: Engine) -> dict[str, int]:
    """Stored documents per category, tombstones left out."""
    statement = (
        select(DOCUMENTS.c.category, func.count())
        .where(DOCUMENTS.c.deleted_at.is_(None))
        .group_by(DOCUMENTS.c.category)
        .order_by(DOCUMENTS.c.category)
    )
    with engine.connect() as connection:
        return {str(category): int(count) for category, count in connection.execute(statement)}


def stored_per_minute(engine: Engine, since: datetime) -> dict[datetime, int]:
    """Documents stored (not deleted) since `since` per UTC minute; minutes without any left out."""
    with engine.connect() as connection:
        minute = _minute_of(DOCUMENTS.c.updated_at, connection.dialect.name)
        statement = (
            select(minute, func.count())
            .where(DOCUMENTS.c.updated_at >= since, DOCUMENTS.c.deleted_at.is_(None))
            .group_by(minute)
        )
        return {_as_minute(value): int(count) for value, count in connection.execute(statement)}


def _minute_of(column: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.date_trunc("minute", column)
    return func.strftime("%Y-%m-%d %H:%M:00", column)


def _as_minute(value: datetime | str) -> datetime:
    """PostgreSQL answers a timestamp, SQLite text; both are UTC."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return as_utc(parsed)
