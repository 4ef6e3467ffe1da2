"""What every broker offers docingest: the `MessageQueue` protocol and its errors."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import dramatiq

from docingest.queue.names import DEAD, QUEUES


class BrokerUnavailableError(Exception):
    """The broker did not take the messages: none of their documents were accepted."""


class PublishUncertainError(BrokerUnavailableError):
    """The broker may or may not hold the messages (a reply lost, a confirmation timed out).

    Retrying with the same ids is safe: versions make a second copy of a document harmless.
    `ids` are the documents concerned, when the caller knows them (the API answers them).
    """

    def __init__(self, message: str, *, ids: Sequence[uuid.UUID] = ()) -> None:
        super().__init__(message)
        self.ids = list(ids)


class QueueFullError(Exception):
    """The queue holds as much as it is allowed to: come back later."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message Dramatiq gave up on after its retries, as `docingest failures` lists it."""

    queue: str
    message_id: str
    actor: str
    documents: int
    retries: int
    dead_since: datetime | None
    bytes: int  # the message's size


class MessageQueue(Protocol):
    """The only view of the broker that the rest of docingest has.

    One implementation per broker (`docingest.queue.redis`, `docingest.queue.rabbitmq`).
    `broker` is the Dramatiq broker the worker's actors run on; nothing else should need it.
    """

    @property
    def broker(self) -> dramatiq.Broker: ...

    @property
    def durability(self) -> str:
        """How a published message survives a broker crash, in words for `/ready` and logs."""

    def publish(self, messages: Sequence[dramatiq.Message[Any]]) -> None:
        """Queue every message or none; return once the broker holds them durably.

        Raises `BrokerUnavailableError` when nothing was queued, `PublishUncertainError` when
        the outcome is unknown, `QueueFullError` when the broker refuses for lack of room.
        """

    def depths(self) -> dict[str, int]:
        """Messages in each part of each queue, keyed as `names.depth_names()`."""

    def dead_letters(self, limit: int, *, max_bytes: int) -> list[DeadLetter]:
        """Dead-lettered messages of every queue, oldest first: up to `limit`, fewer once
        their bodies pass `max_bytes` (at least one); no body beyond those is decoded."""

    def count_dead_letters(self) -> int: ...

    def carried(self, ids: set[str]) -> set[str] | None:
        """Which of these document ids some message of the documents queue still carries
        (waiting, delayed, being processed or dead); None when the broker cannot tell."""

    def queued_bytes(self) -> int | None:
        """Roughly how many bytes of messages wait in the documents queue; None if unknown."""

    def requeue_dead_letters(self) -> int:
        """Move every queue's dead letters back onto that queue, retry counts reset."""

    def ping(self) -> None:
        """Raise `BrokerUnavailableError` unless the broker answers now."""

    def close(self) -> None: ...


def oldest_first(letters: list[DeadLetter], limit: int) -> list[DeadLetter]:
    """Dead letters as `MessageQueue.dead_letters` answers them, whatever the broker."""
    letters.sort(key=lambda letter: letter.dead_since or datetime.min.replace(tzinfo=UTC))
    return letters[:limit]


def fitting(sizes: Sequence[int], max_bytes: int) -> int:
    """How many of the first `sizes` fit in `max_bytes`; at least one, if any."""
    total = 0
    for count, size in enumerate(sizes):
        total += size
        if count and total > max_bytes:
            return count
    return len(sizes)


def dead_letter_total(depths: dict[str, int]) -> int:
    """The dead letters of every queue, from `MessageQueue.depths()`."""
    return sum(depths[queue + DEAD] for queue in QUEUES)
