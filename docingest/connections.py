"""Every process's handles on the deployment, made one way: the database, the queue, the
ledger and the metrics store of its settings. Making them does no I/O; `close` releases them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine

from docingest.db import make_engine
from docingest.ledger import Ledger, open_ledger
from docingest.observe.metrics_store import MetricsStore, open_metrics_store
from docingest.queue import MessageQueue, open_queue
from docingest.settings import Settings, get_settings


@dataclass(frozen=True)
class Connections:
    settings: Settings
    engine: Engine
    queue: MessageQueue
    ledger: Ledger
    metrics: MetricsStore

    def close(self) -> None:
        self.queue.close()
        self.ledger.close()
        self.engine.dispose()


def connect(settings: Settings, *, pre_ping: bool = True) -> Connections:
    engine = make_engine(settings.database_url, pre_ping=pre_ping)
    return Connections(
        settings=settings,
        engine=engine,
        queue=open_queue(settings),
        ledger=open_ledger(settings, engine),
        metrics=open_metrics_store(settings, engine),
    )


@contextmanager
def connected(settings: Settings | None = None) -> Iterator[Connections]:
    """For a command: the environment's deployment, closed when the command is done."""
    connections = connect(settings or get_settings())
    try:
        yield connections
    finally:
        connections.close()
