"""What has been accepted and is still waiting: versions and the pending set, kept in Redis.

The API reserves consecutive versions and marks the documents pending in one atomic script (one
round trip per batch); the worker settles them once stored or failed. The pending set answers
"is this id waiting?" for the status endpoint and "how full is the queue?" for backpressure.
Both live beside the queue, in the same Redis and the same append-only file.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from typing import Protocol

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

VERSION_KEY = "docingest:version"
PENDING_KEY = "docingest:pending"

# KEYS: version counter, pending hash. ARGV: document ids. Returns {first version, pending count}.
# One HSET per 1,000 ids: Lua's unpack() is bounded by its stack.
_RESERVE = """
local count = #ARGV
local first = redis.call('INCRBY', KEYS[1], count) - count + 1
local pairs = {}
for i = 1, count do
  pairs[#pairs + 1] = ARGV[i]
  pairs[#pairs + 1] = first + i - 1
  if #pairs == 2000 or i == count then
    redis.call('HSET', KEYS[2], unpack(pairs))
    pairs = {}
  end
end
return {first, redis.call('HLEN', KEYS[2])}
"""

# KEYS: pending hash. ARGV: id, version, id, version… Removes an id unless a newer version of it
# was accepted meanwhile (that one is still waiting).
_SETTLE = """
for i = 1, #ARGV, 2 do
  local pending = redis.call('HGET', KEYS[1], ARGV[i])
  if pending and tonumber(pending) <= tonumber(ARGV[i + 1]) then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return redis.call('HLEN', KEYS[1])
"""


class Ledger(Protocol):
    def reserve(self, ids: Sequence[uuid.UUID]) -> tuple[int, int | None]:
        """Mark the documents pending under consecutive versions.

        Returns the first version, and the pending count after (None if not known).
        """

    def forget(self, ids: Sequence[uuid.UUID]) -> None:
        """Undo `reserve` for documents the broker did not take."""

    def mark(self, versions: Sequence[tuple[uuid.UUID, int]]) -> None:
        """Mark already versioned documents pending again (a replay)."""

    def settle(self, versions: Sequence[tuple[uuid.UUID, int]]) -> None:
        """These versions are stored or failed: no longer waiting."""

    def pending_version(self, document_id: uuid.UUID) -> int | None: ...

    def pending_count(self) -> int | None:
        """Documents accepted and not yet settled; None when the ledger cannot tell."""


class RedisLedger:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def reserve(self, ids: Sequence[uuid.UUID]) -> tuple[int, int | None]:
        first, count = self._reserve(keys=[VERSION_KEY, PENDING_KEY], args=[str(i) for i in ids])
        return int(first), int(count)

    def forget(self, ids: Sequence[uuid.UUID]) -> None:
        self._client.hdel(PENDING_KEY, *(str(i) for i in ids))

    def mark(self, versions: Sequence[tuple[uuid.UUID, int]]) -> None:
        if versions:
            self._client.hset(PENDING_KEY, mapping={str(i): v for i, v in versions})

    def settle(self, versions: Sequence[tuple[uuid.UUID, int]]) -> None:
        if versions:
            self._settle(keys=[PENDING_KEY], args=[x for i, v in versions for x in (str(i), v)])

    def pending_version(self, document_id: uuid.UUID) -> int | None:
        value = self._client.hget(PENDING_KEY, str(document_id))
        return None if value is None else int(value)

    def pending_count(self) -> int:
        return int(self._client.hlen(PENDING_KEY))


class ClockLedger:
    """For brokers without Redis: clock versions, no pending set (status and backpressure off)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def reserve(self, ids: Sequence[uuid.UUID]) -> tuple[int, int | None]:
        with self._lock:
            first = max(time.time_ns(), self._last + 1)
            self._last = first + len(ids) - 1
        return first, None

    def forget(self, ids: Sequence[uuid.UUID]) -> None:
        return None

    def mark(self, versions: Sequence[tuple[uuid.UUID, int]]) -> None:
        return None

    def settle(self, versions: Sequence[tuple[uuid.UUID, int]]) -> None:
        return None

    def pending_version(self, document_id: uuid.UUID) -> int | None:
        return None

    def pending_count(self) -> int | None:
        return None


def ledger_for(broker: dramatiq.Broker) -> Ledger:
    if isinstance(broker, RedisBroker):
        return RedisLedger(broker.client)
    return ClockLedger()
