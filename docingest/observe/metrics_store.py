"""Where worker processes add up their metrics, so the API can serve the deployment's totals.

Beside the ledger: the Redis hash `docingest:metrics:worker` (one pipelined round trip per
flush), or the `worker_metrics` table when the ledger is the database (RabbitMQ deployments).
Field names are `worker_metrics.WorkerMetrics`'s. When each worker process last flushed is kept
beside them (`mark_seen`): the hash `docingest:metrics:workers_seen`, or `seen|<worker>` rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, cast

import redis
from sqlalchemy import ColumnElement, Engine, delete, select
from sqlalchemy.exc import SQLAlchemyError

from docingest.db import dialect_insert
from docingest.settings import Settings
from docingest.tables import WORKER_METRICS

WORKER_KEY = "docingest:metrics:worker"
SEEN_KEY = "docingest:metrics:workers_seen"
_SEEN = "seen|"  # the prefix of the table's rows that hold when a worker was last seen


class MetricsStoreUnavailableError(Exception):
    """The store did not answer; increments are kept for the next flush."""


class MetricsStore(Protocol):
    def add(self, increments: Mapping[str, float]) -> None: ...

    def read(self) -> dict[str, float]: ...

    def mark_seen(self, worker: str, at: float) -> None:
        """`worker` was alive at Unix time `at` (set, not added)."""

    def seen(self) -> dict[str, float]: ...

    def forget(self, workers: Sequence[str]) -> None: ...


class RedisMetricsStore:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def add(self, increments: Mapping[str, float]) -> None:
        with (
            _unavailable_on(redis.RedisError),
            self._client.pipeline(transaction=False) as pipeline,
        ):
            for field, amount in increments.items():
                pipeline.hincrbyfloat(WORKER_KEY, field, amount)
            pipeline.execute()

    def read(self) -> dict[str, float]:
        with _unavailable_on(redis.RedisError):
            return _floats(cast(dict[bytes, bytes], self._client.hgetall(WORKER_KEY)))

    def mark_seen(self, worker: str, at: float) -> None:
        with _unavailable_on(redis.RedisError):
            self._client.hset(SEEN_KEY, worker, at)

    def seen(self) -> dict[str, float]:
        with _unavailable_on(redis.RedisError):
            return _floats(cast(dict[bytes, bytes], self._client.hgetall(SEEN_KEY)))

    def forget(self, workers: Sequence[str]) -> None:
        with _unavailable_on(redis.RedisError):
            self._client.hdel(SEEN_KEY, *workers)


class SqlMetricsStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, increments: Mapping[str, float]) -> None:
        rows = [{"field": field, "value": amount} for field, amount in sorted(increments.items())]
        self._upsert(rows, add=True)

    def read(self) -> dict[str, float]:
        return self._fields(~WORKER_METRICS.c.field.startswith(_SEEN, autoescape=True))

    def mark_seen(self, worker: str, at: float) -> None:
        self._upsert([{"field": _SEEN + worker, "value": at}], add=False)

    def seen(self) -> dict[str, float]:
        fields = self._fields(WORKER_METRICS.c.field.startswith(_SEEN, autoescape=True))
        return {field.removeprefix(_SEEN): at for field, at in fields.items()}

    def forget(self, workers: Sequence[str]) -> None:
        fields = [_SEEN + worker for worker in workers]
        with _unavailable_on(SQLAlchemyError), self._engine.begin() as connection:
            connection.execute(delete(WORKER_METRICS).where(WORKER_METRICS.c.field.in_(fields)))

    def _upsert(self, rows: list[dict[str, Any]], *, add: bool) -> None:
        """Rows by field: their values added to those stored, or in their place."""
        with _unavailable_on(SQLAlchemyError), self._engine.begin() as connection:
            insert = dialect_insert(connection, WORKER_METRICS)
            new = insert.excluded.value
            statement = insert.on_conflict_do_update(
                index_elements=[WORKER_METRICS.c.field],
                set_={"value": WORKER_METRICS.c.value + new if add else new},
            )
            connection.execute(statement, rows)

    def _fields(self, condition: ColumnElement[bool]) -> dict[str, float]:
        query = select(WORKER_METRICS.c.field, WORKER_METRICS.c.value).where(condition)
        with _unavailable_on(SQLAlchemyError), self._engine.connect() as connection:
            return {row.field: float(row.value) for row in connection.execute(query)}


@contextmanager
def _unavailable_on(*errors: type[Exception]) -> Iterator[None]:
    """The store's own errors become MetricsStoreUnavailableError."""
    try:
        yield
    except errors as error:
        raise MetricsStoreUnavailableError(str(error)) from error


def _floats(fields: dict[bytes, bytes]) -> dict[str, float]:
    return {key.decode(): float(value) for key, value in fields.items()}


def open_metrics_store(settings: Settings, engine: Engine) -> MetricsStore:
    """Beside the ledger (see `docingest.ledger.open_ledger`)."""
    url = settings.ledger_url_or_default
    if url == "database":
        return SqlMetricsStore(engine)
    timeout = settings.broker_timeout_seconds
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    return RedisMetricsStore(client)
