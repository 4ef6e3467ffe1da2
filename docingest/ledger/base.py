"""The ledger's protocol and the types both backends share."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

Versions = Sequence[tuple[uuid.UUID, int]]


class LedgerUnavailableError(Exception):
    """The ledger cannot be reached: no version can be issued, nothing is accepted."""


@dataclass(frozen=True, slots=True)
class PendingEntry:
    id: uuid.UUID
    version: int
    reserved_at: datetime
    published: bool = False  # the broker confirmed it holds the message


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

    def published(self, versions: Versions) -> None:
        """The broker confirmed it holds these versions' messages: where it cannot say what its
        messages carry (RabbitMQ), the reconciler must never abandon them, only settle them."""

    def settle(self, versions: Versions) -> None:
        """These versions are stored or failed: no longer waiting (newer entries stay)."""

    def pending_version(self, document_id: uuid.UUID) -> int | None: ...

    def pending_count(self) -> int: ...

    def older_than(self, moment: datetime, limit: int) -> list[PendingEntry]:
        """Entries reserved before `moment`: the reconciler's candidates."""

    def claim(self, name: str, seconds: float) -> bool:
        """True for one caller, across every process, until `seconds` have passed: a lock
        that expires by itself (a process that dies holding it holds nothing for long)."""

    def ping(self) -> None: ...

    def close(self) -> None: ...


FloorReader = Callable[[], int]
