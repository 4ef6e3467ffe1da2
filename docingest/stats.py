"""The figures of `GET /stats` and `docingest stats`: what is stored, waiting, failing, how fast.

Counts come from the database (documents per category, tombstones left out; failures not
superseded), waiting documents from the ledger, queue depths from Redis, throughput from
`updated_at` (documents stored per minute), and the end-to-end lag from the workers' metrics
in Redis (cumulative sum and count: a client polling twice gets the mean lag between its polls).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from pydantic import BaseModel
from sqlalchemy import Engine, func, select
from sqlalchemy.sql.elements import ColumnElement

from docingest.db import count_failures
from docingest.ledger import ledger_for
from docingest.metrics import (
    FAILED,
    LAG_SECONDS,
    PROCESSED,
    HistogramSpec,
    queue_depths,
    read_worker_values,
)
from docingest.schemas import as_utc, utcnow
from docingest.tables import DOCUMENTS

THROUGHPUT_MINUTES = 15


class StatusCounts(BaseModel):
    stored: int
    queued: int | None  # None: the broker keeps no ledger (RabbitMQ)
    failed: int


class MinuteCount(BaseModel):
    minute: datetime
    documents: int


class Lag(BaseModel):
    """Acceptance to storage, over every document the workers stored (cumulative)."""

    documents: int
    sum_seconds: float
    mean_seconds: float | None
    p50_seconds: float | None  # upper bound of the histogram bucket holding the median
    p95_seconds: float | None


class WorkerTotals(BaseModel):
    documents_processed: int
    documents_failed: int


class Stats(BaseModel):
    generated_at: datetime
    categories: dict[str, int]
    statuses: StatusCounts
    queues: dict[str, int]
    throughput_per_minute: list[MinuteCount]
    lag: Lag | None
    workers: WorkerTotals | None


def collect_stats(engine: Engine, broker: dramatiq.Broker) -> Stats:
    """Every figure, read now: a few indexed queries and one Redis round trip."""
    now = utcnow()
    categories = count_categories(engine)
    redis_broker = broker if isinstance(broker, RedisBroker) else None
    client = redis_broker.client if redis_broker is not None else None
    return Stats(
        generated_at=now,
        categories=categories,
        statuses=StatusCounts(
            stored=sum(categories.values()),
            queued=ledger_for(broker).pending_count(),
            failed=count_failures(engine),
        ),
        queues=queue_depths(redis_broker.client, redis_broker.namespace) if redis_broker else {},
        throughput_per_minute=stored_per_minute(engine, now),
        **worker_figures(client),
    )


def count_categories(engine: Engine) -> dict[str, int]:
    documents = DOCUMENTS
    statement = (
        select(documents.c.category, func.count())
        .where(documents.c.deleted_at.is_(None))
        .group_by(documents.c.category)
        .order_by(documents.c.category)
    )
    with engine.connect() as connection:
        return {str(category): int(count) for category, count in connection.execute(statement)}


def stored_per_minute(engine: Engine, now: datetime) -> list[MinuteCount]:
    """Documents stored in each of the last THROUGHPUT_MINUTES minutes, oldest first, zeros in."""
    documents = DOCUMENTS
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=THROUGHPUT_MINUTES - 1)
    with engine.connect() as connection:
        minute = _minute_of(documents.c.updated_at, connection.dialect.name)
        statement = (
            select(minute, func.count())
            .where(documents.c.updated_at >= first, documents.c.deleted_at.is_(None))
            .group_by(minute)
        )
        counts = {_as_minute(value): int(count) for value, count in connection.execute(statement)}
    minutes = [first + timedelta(minutes=i) for i in range(THROUGHPUT_MINUTES)]
    return [MinuteCount(minute=m, documents=counts.get(m, 0)) for m in minutes]


def _minute_of(column: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.date_trunc("minute", column)
    return func.strftime("%Y-%m-%d %H:%M:00", column)


def _as_minute(value: datetime | str) -> datetime:
    """PostgreSQL answers a timestamp, SQLite text; both are UTC."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return as_utc(parsed)


def worker_figures(client: redis.Redis | None) -> dict[str, Any]:
    if client is None:
        return {"lag": None, "workers": None}
    values = read_worker_values(client)
    count = int(values.get(f"{LAG_SECONDS.name}|count", 0))
    total = values.get(f"{LAG_SECONDS.name}|sum", 0.0)
    lag = Lag(
        documents=count,
        sum_seconds=total,
        mean_seconds=total / count if count else None,
        p50_seconds=quantile_bound(LAG_SECONDS, values, 0.5),
        p95_seconds=quantile_bound(LAG_SECONDS, values, 0.95),
    )
    workers = WorkerTotals(
        documents_processed=int(values.get(PROCESSED.name, 0)),
        documents_failed=int(values.get(FAILED.name, 0)),
    )
    return {"lag": lag, "workers": workers}


def quantile_bound(spec: HistogramSpec, values: dict[str, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile q (None if empty or in the +Inf bucket)."""
    count = values.get(f"{spec.name}|count", 0.0)
    if not count:
        return None
    cumulative = 0.0
    for le in spec.buckets:
        cumulative += values.get(f"{spec.name}|{le}", 0.0)
        if cumulative >= q * count:
            return float(le)
    return None
