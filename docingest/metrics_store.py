"""Where worker processes add up their metrics, so the API can serve the deployment's totals.

Beside the ledger: the Redis hash `docingest:metrics:worker` (one pipelined round trip per
flush), or the `worker_metrics` table when the ledger is the database (RabbitMQ deployments).
Field names are `metrics.WorkerMetrics`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, cast

import redis
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from docingest.db import dialect_insert
from docingest.settings import Settings
from docingest.tables import WORKER_METRICS

WORKER_KEY = "docingest:metrics:worker"


class MetricsStoreUnavailableError(Exception):
    """The store did not answer; increments are kept for the next flush."""


class MetricsStore(Protocol):
    def add(self, increments: Mapping[str, float]) -> None: ...

    def read(self) -> dict[str, float]: ...


class RedisMetricsStore:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def add(self, increments: Mapping[str, float]) -> None:
        try:
            with self._client.pipeline(transaction=False) as pipeline:
                for field, amount in increments.items():
                    pipeline.hincrbyfloat(WORKER_KEY, field, amount)
                pipeline.execute()
        except redis.RedisError as error:
            raise MetricsStoreUnavailableError(str(error)) from error

    def read(self) -> dict[str, float]:
        try:
            fields = cast(dict[bytes, bytes], self._client.hgetall(WORKER_KEY))
        except redis.RedisError as error:
            raise MetricsStoreUnavailableError(str(error)) from error
        return {key.decode(): float(value) for key, value in fields.items()}


class SqlMetricsStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, increments: Mapping[str, float]) -> None:
        rows = [{"field": field, "value": amount} for field, amount in sorted(increments.items())]
        try:
            with self._engine.begin() as connection:
                insert = dialect_insert(connection, WORKER_METRICS)
                statement = insert.on_conflict_do_update(
                    index_elements=[WORKER_METRICS.c.field],
                    set_={"value": WORKER_METRICS.c.value + insert.excluded.value},
                )
                connection.execute(statement, rows)
        except SQLAlchemyError as error:
            raise MetricsStoreUnavailableError(str(error)) from error

    def read(self) -> dict[str, float]:
        try:
            with self._engine.connect() as connection:
                rows = connection.execute(select(WORKER_METRICS.c.field, WORKER_METRICS.c.value))
                return {row.field: float(row.value) for row in rows}
        except SQLAlchemyError as error:
            raise MetricsStoreUnavailableError(str(error)) from error


def open_metrics_store(settings: Settings, engine: Engine) -> MetricsStore:
    """Beside the ledger (see `docingest.ledger.open_ledger`)."""
    url = settings.ledger_url_or_default
    if url == "database":
        return SqlMetricsStore(engine)
    timeout = settings.broker_timeout_seconds
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    return RedisMetricsStore(client)
