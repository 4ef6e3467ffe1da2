"""The ledger in Redis: a version counter and the pending hash, one Lua script per call.

The counter must never go back, yet Redis may lose it: flushed, replaced, restarted from an
older append-only file, failed over to a lagging replica. So every reservation passes a floor,
the highest version this process issued or the database ever stored (`version_floors`, which
workers raise in the transaction that stores each batch); a counter found below its floor jumps
to the next *epoch* (a multiple of 2^32), above every version issued before, stored or queued.
So does a counter found on another Redis process or replication history than it was last
written on (restarted from its file, failed over to a replica): it may lag behind versions
another API process issued, still queued or held by a worker, that no floor knows of.
A missing counter makes the caller read the floor from the database first.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from docingest.ledger.base import FloorReader, LedgerUnavailableError, PendingEntry, Versions
from docingest.settings import Settings

VERSION_KEY = "docingest:version"
PENDING_KEY = "docingest:pending"
# The Redis process (run id) and replication history (replid) the counter was last written on.
SERVER_KEY = "docingest:version:server"
EPOCH = 2**32
# How often a process re-reads the database's floor when nothing suggests it should.
FLOOR_MAX_AGE_SECONDS = 30.0

# A pending value lists every version of its id still waiting, "<version>:<reserved at, ms>"
# comma-separated (the time lets the reconciler tell old from new): a refused request forgets its
# own version only, and the versions accepted before it stay known.
_ENTRIES = """
local function entries(value)
  local list = {}
  if value then
    for version, ms in string.gmatch(value, '(%d+):?(%d*)') do
      list[#list + 1] = {tonumber(version), ms}
    end
  end
  return list
end
local function joined(list)
  local parts = {}
  for _, entry in ipairs(list) do
    parts[#parts + 1] = string.format('%.0f', entry[1]) .. ':' .. entry[2]
  end
  return table.concat(parts, ',')
end
local function store(key, id, list)
  if #list == 0 then redis.call('HDEL', key, id) else redis.call('HSET', key, id, joined(list)) end
end
"""

# KEYS: counter, pending, server. ARGV: floor (-1: unknown), now (ms), jump target (0: none), ids…
# Returns {first version, pending count}, or {-1, 0} when the counter must jump and no target
# above it and the floor was given (the caller records one in the database first), or when the
# counter is gone and the floor unknown. Each id's new version joins those still waiting. The
# server key holds the identity of the data's history (the Redis process's run
# id and its replication id) when the counter was last written: a counter found under another
# one (a restart from its file, a promoted replica) may lag behind versions other processes
# issued, queued or held by a worker, that no floor knows of: it jumps too.
_RESERVE = """
local count = #ARGV - 3
local floor = tonumber(ARGV[1])
local stored = redis.call('GET', KEYS[1])
local counter = tonumber(stored or '0')
if stored == false and floor < 0 then return {-1, 0} end
local server = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') .. ':'
  .. string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
local moved = stored ~= false and redis.call('GET', KEYS[3]) ~= server
if counter < floor or (stored == false and floor > 0) or moved then
  local target = tonumber(ARGV[3])
  if target <= math.max(floor, counter) then return {-1, 0} end
  counter = target
end
local first = counter + 1
redis.call('SET', KEYS[1], string.format('%.0f', counter + count))
redis.call('SET', KEYS[3], server)
for i = 1, count do
  local entry = string.format('%.0f', first + i - 1) .. ':' .. ARGV[2]
  local waiting = redis.call('HGET', KEYS[2], ARGV[i + 3])
  redis.call('HSET', KEYS[2], ARGV[i + 3], waiting and (waiting .. ',' .. entry) or entry)
end
return {string.format('%.0f', first), redis.call('HLEN', KEYS[2])}
"""

# KEYS: pending. ARGV: mode, id, version, id, version… Removes that version of each id (forget)
# or every version up to it (settle: a newer version of the id is still waiting).
_REMOVE = (
    _ENTRIES
    + """
local at_most = ARGV[1] == 'at-most'
for i = 2, #ARGV, 2 do
  local target = tonumber(ARGV[i + 1])
  local kept = {}
  for _, entry in ipairs(entries(redis.call('HGET', KEYS[1], ARGV[i]))) do
    if not (entry[1] == target or (at_most and entry[1] < target)) then kept[#kept + 1] = entry end
  end
  store(KEYS[1], ARGV[i], kept)
end
return redis.call('HLEN', KEYS[1])
"""
)

# KEYS: pending. ARGV: now (ms), id, version… Adds each version unless it already waits.
_MARK = (
    _ENTRIES
    + """
for i = 2, #ARGV, 2 do
  local list = entries(redis.call('HGET', KEYS[1], ARGV[i]))
  local version, present = tonumber(ARGV[i + 1]), false
  for _, entry in ipairs(list) do present = present or entry[1] == version end
  if not present then
    list[#list + 1] = {version, ARGV[1]}
    store(KEYS[1], ARGV[i], list)
  end
end
return redis.call('HLEN', KEYS[1])
"""
)


def _nothing() -> None:
    return None


def _no_record(version: int) -> None:
    return None


class RedisLedger:
    def __init__(
        self,
        client: redis.Redis,
        *,
        floor: FloorReader,
        record_jump: Callable[[int], None] = _no_record,
        on_close: Callable[[], None] = _nothing,
    ) -> None:
        """`record_jump`: writes an epoch's start where `floor` reads it, before it is used."""
        self._client = client
        self._read_floor = floor
        self._record_jump = record_jump
        self._on_close = on_close
        self._reserve = client.register_script(_RESERVE)
        self._remove = client.register_script(_REMOVE)
        self._mark = client.register_script(_MARK)
        self._lock = threading.Lock()
        self._issued = 0  # the highest version this process handed out
        self._floor: int | None = None
        self._floor_read_at = 0.0

    @classmethod
    def from_url(
        cls,
        url: str,
        settings: Settings,
        *,
        floor: FloorReader,
        record_jump: Callable[[int], None],
        on_close: Callable[[], None],
    ) -> RedisLedger:
        timeout = settings.broker_timeout_seconds
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return cls(client, floor=floor, record_jump=record_jump, on_close=on_close)

    def reserve(self, ids: Sequence[uuid.UUID]) -> tuple[int, int | None]:
        args = [_now_ms(), *(str(i) for i in ids)]
        first, count = self._run_reserve(args, jump_to=0)
        if first < 0:  # the counter is gone: read how high versions went before issuing any
            self._refresh_floor(force=True)
            first, count = self._run_reserve(args, jump_to=0)
        if first < 0:  # it must jump: to an epoch recorded first, above any earlier jump
            first, count = self._run_reserve(args, jump_to=self._jump_target())
        with self._lock:
            self._issued = max(self._issued, first + len(ids) - 1)
        return first, count

    def _run_reserve(self, args: list[Any], *, jump_to: int) -> tuple[int, int]:
        """`args`: the time, then the ids."""
        keys = [VERSION_KEY, PENDING_KEY, SERVER_KEY]
        floor = self._floor_arg()
        first, count = self._call(
            self._reserve, keys=keys, args=[floor, args[0], jump_to, *args[1:]]
        )
        return int(first), int(count)

    def _jump_target(self) -> int:
        """The next epoch above the counter, the floor and every earlier recorded jump (whose
        versions may be queued or held, stored nowhere), recorded in the database before use:
        a later jump, even on a Redis that never saw this one, goes above it."""
        self._refresh_floor(force=True)
        counter = int(self._call(self._client.get, VERSION_KEY) or 0)
        target = (max(counter, self._floor_arg()) // EPOCH + 1) * EPOCH
        try:
            self._record_jump(target)
        except Exception as error:
            raise LedgerUnavailableError(
                f"the counter's jump cannot be recorded: {error}"
            ) from error
        return target

    def _floor_arg(self) -> int:
        """max(what this process issued, what the database stored); -1 when neither is known.

        The first reservation of a process reads the floor itself (a restarted process knows
        nothing else); later ones refresh it in the background, so that a slow database never
        holds ingestion up.
        """
        stale = time.monotonic() - self._floor_read_at > FLOOR_MAX_AGE_SECONDS
        if stale and self._floor_read_at == 0.0:
            self._refresh_floor(force=False)
        elif stale:
            self._floor_read_at = time.monotonic()
            threading.Thread(
                target=self._refresh_floor, kwargs={"force": False}, daemon=True
            ).start()
        with self._lock:
            if self._floor is None:
                return self._issued if self._issued else -1
            return max(self._floor, self._issued)

    def _refresh_floor(self, *, force: bool) -> None:
        """Forced: a counter is missing and must not restart without it (the database being
        down then refuses ingestion). Otherwise best effort, the old floor kept on failure."""
        self._floor_read_at = time.monotonic()
        try:
            floor = self._read_floor()
        except Exception as error:
            if force:
                raise LedgerUnavailableError(
                    f"the version counter is missing and the database cannot say how high "
                    f"versions went: {error}"
                ) from error
            return
        with self._lock:
            self._floor = floor

    def forget(self, versions: Versions) -> None:
        self._remove_pending("exact", versions)

    def published(self, versions: Versions) -> None:
        """Nothing to record: the reconciler asks Redis which messages carry an entry."""

    def settle(self, versions: Versions) -> None:
        self._remove_pending("at-most", versions)

    def _remove_pending(self, mode: str, versions: Versions) -> None:
        if versions:
            args = [mode, *(x for i, v in versions for x in (str(i), v))]
            self._call(self._remove, keys=[PENDING_KEY], args=args)

    def mark(self, versions: Versions) -> None:
        if versions:
            args = [_now_ms(), *(x for i, v in versions for x in (str(i), v))]
            self._call(self._mark, keys=[PENDING_KEY], args=args)

    def pending_version(self, document_id: uuid.UUID) -> int | None:
        value = self._call(self._client.hget, PENDING_KEY, str(document_id))
        return None if value is None else max(version for version, _ in _parse(value))

    def pending_count(self) -> int:
        return int(self._call(self._client.hlen, PENDING_KEY))

    def older_than(self, moment: datetime, limit: int) -> list[PendingEntry]:
        cutoff = moment.timestamp() * 1000
        entries: list[PendingEntry] = []
        try:
            for key, value in self._client.hscan_iter(PENDING_KEY, count=1000):
                for version, reserved_ms in _parse(value):
                    if reserved_ms < cutoff:
                        reserved_at = datetime.fromtimestamp(reserved_ms / 1000, UTC)
                        entries.append(PendingEntry(uuid.UUID(key.decode()), version, reserved_at))
                if len(entries) >= limit:
                    break
        except redis.RedisError as error:
            raise LedgerUnavailableError(str(error)) from error
        return entries

    def claim(self, name: str, seconds: float) -> bool:
        key = f"docingest:lock:{name}"
        return bool(self._call(self._client.set, key, 1, nx=True, px=max(1, int(seconds * 1000))))

    def ping(self) -> None:
        self._call(self._client.ping)

    def close(self) -> None:
        self._client.close()
        self._on_close()

    @staticmethod
    def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except redis.RedisError as error:
            raise LedgerUnavailableError(str(error)) from error


def _parse(value: bytes) -> list[tuple[int, float]]:
    """A pending value: each waiting version and its reservation time (0 for entries written
    before times were kept)."""
    waiting = []
    for entry in value.decode().split(","):
        version, _, reserved = entry.partition(":")
        waiting.append((int(version), float(reserved or 0)))
    return waiting


def _now_ms() -> int:
    return int(time.time() * 1000)
