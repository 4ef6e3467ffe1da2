"""What has been accepted and is still waiting: the version authority and the pending set.

The API reserves versions and marks documents pending in one call; the worker settles them once
stored or failed; the reconciler (`docingest.ledger.reconcile`) clears entries no message will
ever settle. The pending set answers "is this id waiting?" for the status endpoint and "how full
is the queue?" for backpressure.

Two backends, chosen by LEDGER_URL (default: the broker's Redis, else the database): Redis
(`redis.py`: no database round trip on the way in) and SQL (`sql.py`: a counter row and a table,
for brokers without Redis).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Engine

from docingest.settings import Settings

Versions = Sequence[tuple[uuid.UUID, int]]


class LedgerUnavailableError(Exception):
    """The ledger cannot be reached: no version can be issued, nothing is accepted."""


@dataclass(frozen=True, slots=True)
class PendingEntry:
    id: uuid.UUID
    version: int
    reserved_at: datetime


class Ledger(Protocol):
    def reserve(self, ids: Sequence[uuid.UUID]) -> tuple[int, int | None]:
        """Mark the documents pending under consecutive versions, each higher than any version
        stored or still queued, whatever happened to the ledger's own data.

        Returns the first version, and the pending count after (None if not known).
        """

    def forget(self, versions: Versions) -> None:
        """Undo `reserve` for documents the broker did not take (each only at that version)."""

    def mark(self, versions: Versions) -> None:
        """Mark already versioned documents pending again (a replay), never lowering an entry."""

    def settle(self, versions: Versions) -> None:
        """These versions are stored or failed: no longer waiting (newer entries stay)."""

    def pending_version(self, document_id: uuid.UUID) -> int | None: ...

    def pending_count(self) -> int: ...

    def older_than(self, moment: datetime, limit: int) -> list[PendingEntry]:
        """Entries reserved before `moment`: the reconciler's candidates."""

    def ping(self) -> None: ...

    def close(self) -> None: ...


FloorReader = Callable[[], int]


def open_ledger(settings: Settings, engine: Engine) -> Ledger:
    """The ledger LEDGER_URL names. `engine` is the documents' database: the Redis ledger
    reads its version floor there, the SQL ledger lives there."""
    url = settings.ledger_url_or_default
    if url == "database":
        from docingest.ledger.sql import SqlLedger

        return SqlLedger(engine)
    from docingest.db import version_floor
    from docingest.ledger.redis import RedisLedger

    return RedisLedger.from_url(url, settings, floor=lambda: version_floor(engine))
