"""The queue on Redis: Dramatiq's storage layout, written and read in this module only.

Dramatiq keeps a queue as `<ns>:<queue>` (a list of message ids) and `<ns>:<queue>.msgs` (id →
body), retries in `<queue>.DQ` and dead letters in `<queue>.XQ` (a sorted set by time of death)
with their bodies in `<queue>.XQ.msgs`. docingest writes the same keys, but all the messages of
a request in one `MULTI/EXEC`, so a bulk request is queued whole or not at all.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import dramatiq
import redis
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry

from docingest.queue.base import (
    BrokerUnavailableError,
    DeadLetter,
    PublishUncertainError,
    dead_letter_total,
    fitting,
    oldest_first,
)
from docingest.queue.encoder import decode, encode
from docingest.queue.messages import document_count
from docingest.queue.names import DEAD, DELAYED, DOCUMENTS_QUEUE, QUEUES, depth_names
from docingest.settings import Settings

logger = structlog.get_logger(__name__)

# How often a process reads the server's persistence settings again.
DURABILITY_CHECK_SECONDS = 60.0
NAMESPACE = "dramatiq"
# Dead letters are failures to show and replay, never to expire (Dramatiq's default: 7 days).
DEAD_MESSAGE_TTL_MS = 100 * 365 * 24 * 3600 * 1000


class RecoveringRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, recovering a dead worker's messages within seconds, and a live
    worker's delayed messages after a lost connection.

    Dramatiq requeues the unacknowledged messages of a worker whose heartbeat is older than
    `heartbeat_timeout` during "maintenance", which it runs on a random 0.1 % of commands: on a
    quiet queue that can take many minutes. Here every process also runs it at least once per
    `maintenance_interval` seconds.
    """

    def __init__(self, *, maintenance_interval: float, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self._maintenance_interval = maintenance_interval
        self._next_maintenance = 0.0
        self._consumed: set[str] = set()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        """A consumer starting again, after a lost connection, first hands back everything this
        worker holds of its queue. Redis counts those messages as held by a worker alive and
        well, so no one else would ever process them, yet some never reached it: a fetch whose
        reply was lost, or a delay queue's messages, which Dramatiq forgets on reconnecting.
        Those still being processed are then done twice, which versions make harmless."""
        if queue_name in self._consumed:
            held = f"{NAMESPACE}:__acks__.{self.broker_id}.{queue_name}"
            try:
                message_ids = cast(set[bytes], self.client.smembers(held))
                if message_ids:
                    self.do_requeue(queue_name, *message_ids)
            except redis.RedisError as error:
                raise ConnectionClosed(error) from None
        self._consumed.add(queue_name)
        return super().consume(queue_name, prefetch, timeout)

    def _should_do_maintenance(self, command: str) -> int:
        now = time.monotonic()
        if command in ("fetch", "enqueue") and now >= self._next_maintenance:
            self._next_maintenance = now + self._maintenance_interval
            return 1
        return int(super()._should_do_maintenance(command))


# KEYS: message hashes. ARGV: document ids. Returns the ids some message body names, found by
# their `"id":"<uuid>"` in the orjson text (compact: no spaces) rather than by decoding.
_CARRIED = """
local wanted, left, found = {}, #ARGV, {}
for i = 1, #ARGV do wanted[ARGV[i]] = true end
for _, key in ipairs(KEYS) do
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', key, cursor, 'COUNT', 100)
    cursor = page[1]
    for j = 2, #page[2], 2 do
      for id in string.gmatch(page[2][j], '"id":"([%x%-]+)"') do
        if wanted[id] then
          wanted[id] = nil
          left = left - 1
          found[#found + 1] = id
        end
      end
    end
  until cursor == '0' or left == 0
  if left == 0 then break end
end
return found
"""


def _key(queue: str) -> str:
    return f"{NAMESPACE}:{queue}"


class QueueKeys(NamedTuple):
    """Where Redis keeps one queue: for tools that inspect it (the benchmark, fault tests)."""

    waiting: str  # list of message ids
    messages: str  # id -> body of waiting and in-flight messages
    delayed: str
    delayed_messages: str
    dead: str  # sorted set of dead-lettered ids, by time of death
    dead_messages: str
    acks_pattern: str  # the sets of ids each worker holds

    @classmethod
    def of(cls, queue: str) -> QueueKeys:
        return cls(
            _key(queue),
            _key(queue) + ".msgs",
            _key(queue + DELAYED),
            _key(queue + DELAYED) + ".msgs",
            _key(queue + DEAD),
            _key(queue + DEAD) + ".msgs",
            _key("__acks__.*"),
        )


class RedisQueue:
    """`MessageQueue` on Redis. Publishing uses its own client without redis-py's retries: a
    retried `EXEC` whose first reply was lost would queue the messages twice, and the caller
    must know whether the failure came before or after the request was sent."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        timeout = settings.broker_timeout_seconds
        self._client = redis.Redis.from_url(
            settings.broker_url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._carried = self._client.register_script(_CARRIED)
        self._broker: RecoveringRedisBroker | None = None
        self._durability: Durability | None = None
        self._durability_checked = 0.0

    @property
    def broker(self) -> dramatiq.Broker:
        """Built on first use: only processes that run or address actors need it."""
        if self._broker is None:
            settings = self._settings
            client = redis.Redis.from_url(
                settings.broker_url,
                socket_connect_timeout=settings.broker_timeout_seconds,
                socket_timeout=settings.broker_timeout_seconds,
                health_check_interval=30,
            )
            self._broker = RecoveringRedisBroker(
                client=client,
                namespace=NAMESPACE,
                heartbeat_timeout=int(settings.worker_heartbeat_timeout_seconds * 1000),
                dead_message_ttl=DEAD_MESSAGE_TTL_MS,
                maintenance_interval=settings.worker_heartbeat_timeout_seconds / 3,
            )
        return self._broker

    @property
    def durability(self) -> str:
        text = self._check_durability().text
        replicas = self._settings.redis_min_replicas
        return (
            f"{text}; {replicas} replica(s) hold each message before its 202" if replicas else text
        )

    def publish(self, messages: Sequence[dramatiq.Message[Any]]) -> None:
        """`MULTI`, the messages, `EXEC`, then `WAITAOF`, on one connection held throughout.

        The transaction is written by hand rather than through a redis-py pipeline: a pipeline
        hands its connection back to the pool when it executes, and `WAITAOF` must follow on
        the connection that wrote (it waits for that client's writes). Whether nothing ran
        (`BrokerUnavailableError`) or the outcome is unknown (`PublishUncertainError`) is told
        by where the failure came: before `EXEC` was sent whole, or after.
        """
        if not messages:
            return
        commands = [
            command for message in messages for command in _push(message, str(uuid.uuid4()))
        ]
        connection = self._connection()
        try:
            _transaction(connection, commands)
            self._wait_for_fsync(connection)
        except BaseException:
            connection.disconnect()  # its replies may be out of step: never reuse it
            raise
        finally:
            self._client.connection_pool.release(connection)

    def _connection(self) -> Any:
        """A connected connection, or `BrokerUnavailableError`: nothing has been sent yet."""
        try:
            self._check_durability()
            return self._client.connection_pool.get_connection()
        except redis.RedisError as error:
            raise BrokerUnavailableError(str(error)) from error

    def _wait_for_fsync(self, connection: Any) -> None:
        """WAITAOF: answer only once the append-only file holds the write (Redis >= 7.2).

        The messages are queued by now: any failure here leaves their fate unknown, never
        "nothing was accepted". A Redis whose append-only file was turned off since the last
        check refuses WAITAOF: the messages are queued (in memory only, as with any Redis
        without persistence), the durability is read again and the answer is a 202.
        """
        wait = self._check_durability().wait
        replicas = self._settings.redis_min_replicas
        if not (wait or replicas):
            return
        # Within the socket's own timeout, so that Redis says how many confirmed.
        timeout_ms = int(self._settings.broker_timeout_seconds * 800)
        try:
            local, copies = self._wait(connection, wait, replicas, timeout_ms)
        except redis.ResponseError as error:
            if not _aof_disabled(error):
                raise PublishUncertainError(str(error)) from error
            self._durability = None
            self._check_durability()
            return
        except redis.RedisError as error:
            raise PublishUncertainError(str(error)) from error
        if local < int(wait):
            raise PublishUncertainError(f"Redis did not fsync the messages within {timeout_ms} ms")
        if copies < replicas:
            raise PublishUncertainError(
                f"{copies} of the {replicas} replicas REDIS_MIN_REPLICAS asks for held the "
                f"messages within {timeout_ms} ms (they are queued on the primary)"
            )

    def _wait(
        self, connection: Any, local: bool, replicas: int, timeout_ms: int
    ) -> tuple[int, int]:
        """(local fsyncs, replicas holding the write): WAITAOF where the server has it, else
        WAIT (replicas only, in their memory)."""
        if local or self._check_durability().waitaof:
            connection.send_command("WAITAOF", int(local), replicas, timeout_ms)
            fsynced, copies = connection.read_response()
            return int(fsynced), int(copies)
        connection.send_command("WAIT", replicas, timeout_ms)
        return 0, int(connection.read_response())

    def _check_durability(self) -> Durability:
        """(what a crash of Redis does to a 202, whether to WAITAOF), read again every
        DURABILITY_CHECK_SECONDS (a configuration change or a failover changes it); a Redis that
        can lose accepted documents is logged as an error."""
        now = time.monotonic()
        if self._durability is None or now >= self._durability_checked + DURABILITY_CHECK_SECONDS:
            found: Durability = _call(_durability, self._client)
            if found != self._durability and not found.wait and not found.text.endswith("always"):
                logger.error(
                    "the broker's Redis can lose accepted documents", durability=found.text
                )
            self._durability, self._durability_checked = found, now
        return self._durability

    def depths(self) -> dict[str, int]:
        names = depth_names()
        with self._client.pipeline(transaction=False) as pipeline:
            for name in names:
                (pipeline.zcard if name.endswith(DEAD) else pipeline.llen)(_key(name))
            depths = _execute(pipeline)
        return dict(zip(names, (int(depth) for depth in depths), strict=True))

    def dead_letters(self, limit: int, *, max_bytes: int) -> list[DeadLetter]:
        """The oldest `limit` of all queues by their scores (when they died); then the sizes of
        their bodies (HSTRLEN) say how many to fetch and decode."""
        with self._client.pipeline(transaction=False) as pipeline:
            for queue in QUEUES:
                pipeline.zrange(_key(queue + DEAD), 0, limit - 1, withscores=True)
            ranges = cast(list[list[tuple[bytes, float]]], _execute(pipeline))
        oldest = sorted(
            (score, queue, message_id)
            for queue, entries in zip(QUEUES, ranges, strict=True)
            for message_id, score in entries
        )[:limit]
        with self._client.pipeline(transaction=False) as pipeline:
            for _, queue, message_id in oldest:
                pipeline.hstrlen(_key(queue + DEAD) + ".msgs", message_id)
            sizes = cast(list[int], _execute(pipeline))
        present = [entry for entry, size in zip(oldest, sizes, strict=True) if size]
        shown = present[: fitting([size for size in sizes if size], max_bytes)]
        with self._client.pipeline(transaction=False) as pipeline:
            for _, queue, message_id in shown:
                pipeline.hget(_key(queue + DEAD) + ".msgs", message_id)
            bodies = cast(list[bytes | None], _execute(pipeline))
        letters = [
            _dead_letter(queue, message_id, score, body)
            for (score, queue, message_id), body in zip(shown, bodies, strict=True)
            if body is not None  # replayed meanwhile
        ]
        return oldest_first(letters, limit)

    def count_dead_letters(self) -> int:
        return dead_letter_total(self.depths())

    def requeue_dead_letters(self) -> int:
        """Each message back onto its own queue, its retries reset, atomically one by one."""
        moved = 0
        for queue in QUEUES:
            dead = _key(queue + DEAD)
            message_ids = cast(list[bytes], _call(self._client.zrange, dead, 0, -1))
            for message_id in message_ids:
                body = cast(bytes | None, _call(self._client.hget, dead + ".msgs", message_id))
                if body is None:
                    continue
                message = decode(body)
                fresh = message.copy(
                    queue_name=q_name(message.queue_name),
                    options={**message.options, "retries": 0},
                )
                with self._client.pipeline(transaction=True) as pipeline:
                    for command in _push(fresh, message_id.decode()):
                        pipeline.execute_command(*command)  # type: ignore[no-untyped-call]
                    pipeline.zrem(dead, message_id)
                    pipeline.hdel(dead + ".msgs", message_id)
                    _execute(pipeline)
                moved += 1
        return moved

    def carried(self, ids: set[str]) -> set[str] | None:
        """Which ids the documents queue's messages carry, waiting, in flight, delayed or dead,
        read by one script: atomic, so a message moving between those hashes meanwhile (a
        retry, a delay ending, a replay) is seen where it is. The script searches the bodies
        for the ids in Redis, without sending or decoding them; it runs only for the
        reconciler's old candidates, once per interval across all workers."""
        if not ids:
            return set()
        keys = [_key(DOCUMENTS_QUEUE + part) + ".msgs" for part in ("", DELAYED, DEAD)]
        found = cast(list[bytes], _call(self._carried, keys=keys, args=sorted(ids)))
        return {document_id.decode() for document_id in found}

    def queued_bytes(self) -> int | None:
        """MEMORY USAGE samples a few fields of each hash: an estimate in O(1)."""
        with self._client.pipeline(transaction=False) as pipeline:
            for part in ("", DELAYED):
                pipeline.memory_usage(_key(DOCUMENTS_QUEUE + part) + ".msgs")
            usages = _execute(pipeline)
        return sum(int(usage or 0) for usage in usages)

    def ping(self) -> None:
        _call(self._client.ping)

    def close(self) -> None:
        self._client.close()
        if self._broker is not None:
            self._broker.close()


def _push(message: dramatiq.Message[Any], message_id: str) -> list[tuple[Any, ...]]:
    """What Dramatiq's enqueue writes: the body, which names its Redis id (the consumer acks by
    it), into `.msgs`, the id onto the list."""
    body = encode(message.copy(options={"redis_message_id": message_id}))
    key = _key(message.queue_name)
    return [("HSET", key + ".msgs", message_id, body), ("RPUSH", key, message_id)]


def _transaction(connection: Any, commands: list[tuple[Any, ...]]) -> None:
    """Send `MULTI`, `commands`, `EXEC` in one write and read their replies.

    Redis runs a transaction only once it has read the whole `EXEC`: a failure to send, or a
    command refused while queueing (out of memory, a read-only replica: `EXECABORT`), means
    nothing ran. A failure while reading `EXEC`'s reply leaves it unknown.
    """
    try:
        connection.send_packed_command(connection.pack_commands([("MULTI",), *commands, ("EXEC",)]))
    except redis.RedisError as error:
        raise BrokerUnavailableError(str(error)) from error
    try:
        refused = None
        for _ in range(len(commands) + 1):  # +OK for MULTI, +QUEUED for each command
            try:
                connection.read_response()
            except redis.ResponseError as error:
                refused = refused or error
        try:
            replies = connection.read_response()
        except redis.ResponseError as error:  # EXECABORT: the transaction was discarded
            raise BrokerUnavailableError(str(refused or error)) from error
    except redis.RedisError as error:
        raise PublishUncertainError(str(error)) from error
    if not isinstance(replies, list) or any(isinstance(r, Exception) for r in replies):
        raise PublishUncertainError(f"EXEC ran with errors: {replies!r}")


def _dead_letter(queue: str, message_id: bytes, score: float, body: bytes) -> DeadLetter:
    message = decode(body)
    return DeadLetter(
        queue=queue,
        message_id=message_id.decode(),
        actor=message.actor_name,
        documents=document_count(message.args),
        retries=int(message.options.get("retries", 0)),
        dead_since=datetime.fromtimestamp(score / 1000, UTC) if score else None,
        bytes=len(body),
    )


class Durability(NamedTuple):
    text: str  # what a crash of Redis does to a 202
    wait: bool  # WAITAOF for the local append-only file before each 202
    waitaof: bool  # the server has WAITAOF (Redis >= 7.2)


def _durability(client: redis.Redis) -> Durability:
    """Ask the server how it persists writes. Managed services may hide CONFIG: then ask
    WAITAOF itself, which a server without an append-only file refuses."""
    waitaof = _supports_waitaof(client)
    try:
        config = cast(dict[str, str], client.config_get("append*"))
    except redis.ResponseError:
        config = {"appendonly": _probe_appendonly(client)} if waitaof else {}
    appendonly = config.get("appendonly")
    fsync = config.get("appendfsync")
    if appendonly == "yes" and fsync == "always":
        return Durability("append-only file, fsync always", False, waitaof)
    if waitaof and appendonly != "no":
        return Durability(
            f"append-only file, fsync {fsync or 'unknown'}, WAITAOF before each 202", True, waitaof
        )
    if appendonly == "no":
        return Durability(
            "none: appendonly is off, a Redis crash loses accepted documents", False, waitaof
        )
    if appendonly is None:
        return Durability(
            "unknown: CONFIG is hidden and WAITAOF is missing (Redis < 7.2)", False, waitaof
        )
    return Durability(
        f"append-only file, fsync {fsync}, no WAITAOF: a crash can lose ~2 s of 202s",
        False,
        waitaof,
    )


def _supports_waitaof(client: redis.Redis) -> bool:
    """WAITAOF came with Redis 7.2 (Valkey reports a compatible `redis_version`)."""
    version = str(client.info("server").get("redis_version", "0"))
    major, minor = (int(part) for part in [*version.split("."), "0"][:2])
    return (major, minor) >= (7, 2)


def _probe_appendonly(client: redis.Redis) -> str:
    """`WAITAOF 1 0 1` waits for nothing this client wrote; it errs when appendonly is off."""
    try:
        client.execute_command("WAITAOF", 1, 0, 1)  # type: ignore[no-untyped-call]
    except redis.ResponseError as error:
        if _aof_disabled(error):
            return "no"
        raise
    return "yes"


def _aof_disabled(error: redis.ResponseError) -> bool:
    """WAITAOF's refusal when the server has no append-only file (Redis and Valkey say
    "WAITAOF cannot be used when numlocal is set but appendonly is disabled")."""
    return "appendonly is disabled" in str(error)


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Redis errors as the queue's own: the callers answer 503 without knowing Redis."""
    try:
        return function(*args, **kwargs)
    except redis.RedisError as error:
        raise BrokerUnavailableError(str(error)) from error


def _execute(pipeline: Pipeline) -> list[Any]:
    return cast(list[Any], _call(pipeline.execute))
