"""What has been accepted and is still waiting: the version authority and the pending set.

The API reserves versions and marks documents pending in one call; the worker settles them once
stored or failed; the reconciler (`docingest.worker.reconcile`) clears entries no message will
ever settle. The pending set answers "is this id waiting?" for the status endpoint and "how full
is the queue?" for backpressure.

Two backends, chosen by LEDGER_URL (default: the broker's Redis, else the database): Redis
(`redis.py`: no database round trip on the way in) and SQL (`sql.py`: a counter row and a table,
for brokers without Redis).
"""

from __future__ import annotations

from sqlalchemy import Engine

from docingest.db import make_engine
from docingest.ledger.base import (
    FloorReader,
    Ledger,
    LedgerUnavailableError,
    PendingEntry,
    Versions,
)
from docingest.settings import Settings

__all__ = [
    "FloorReader",
    "Ledger",
    "LedgerUnavailableError",
    "PendingEntry",
    "Versions",
    "open_ledger",
]


def open_ledger(settings: Settings, engine: Engine) -> Ledger:
    """The ledger LEDGER_URL names. `engine` is the documents' database: the Redis ledger
    reads its version floor there, the SQL ledger lives there."""
    url = settings.ledger_url_or_default
    if url == "database":
        from docingest.ledger.sql import SqlLedger

        return SqlLedger(engine)
    from docingest.ledger.floor import record_jump, version_floor
    from docingest.ledger.redis import RedisLedger

    # A pool of its own: requests holding every connection of the app's pool must not keep
    # the floor from being read. Connections are opened only when read (rarely).
    floors = make_engine(settings.database_url)
    return RedisLedger.from_url(
        url,
        settings,
        floor=lambda: version_floor(floors),
        record_jump=lambda version: record_jump(floors, version),
        on_close=floors.dispose,
    )
