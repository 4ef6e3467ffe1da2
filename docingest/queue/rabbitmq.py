"""The queue on RabbitMQ: quorum queues, publisher confirms, dead letters that never expire.

Dramatiq declares classic queues (`RabbitmqBroker._build_queue_arguments` and
`_declare_xq_queue`, whose dead letters expire after 7 days). `QuorumRabbitmqBroker` overrides
those two methods, which exist with these signatures in Dramatiq 1.x and 2.x (pinned in
pyproject.toml: `dramatiq>=2.0,<3`), so that every queue is a replicated quorum queue, a full
queue refuses publishes (`x-overflow: reject-publish`, which `x-dead-letter-strategy:
at-least-once` requires) instead of dropping messages, and dead letters stay until replayed.
A queue first declared by an older docingest as a classic queue must be deleted (once empty)
before this declaration succeeds: RabbitMQ refuses to change a queue's type.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import q_name, xq_name
from dramatiq.errors import ConnectionClosed

from docingest.queue.base import (
    BrokerUnavailableError,
    DeadLetter,
    PublishUncertainError,
    QueueFullError,
    dead_letter_total,
    oldest_first,
)
from docingest.queue.encoder import decode, encode
from docingest.queue.messages import document_count
from docingest.queue.names import DEAD, QUEUES, depth_names
from docingest.settings import Settings

_AMQP_ERRORS = (pika.exceptions.AMQPError, ConnectionClosed, OSError)


class QuorumRabbitmqBroker(RabbitmqBroker):
    def __init__(self, *, max_queued_bytes: int, **options: Any) -> None:
        super().__init__(**options)
        self._max_queued_bytes = max_queued_bytes
        # Which thread made each connection: Dramatiq keeps one per thread and never closes
        # those of threads that ended (a web server's pool retires idle threads).
        self._owners: dict[Any, weakref.ref[threading.Thread]] = {}
        self._owners_lock = threading.Lock()

    @property
    def connection(self) -> Any:
        """This thread's connection; a thread making one first closes those of threads that
        have ended, so open connections never outnumber the threads alive that used one."""
        connection = getattr(self.state, "connection", None)
        if connection is not None:
            return connection
        self._close_orphans()
        connection = RabbitmqBroker.connection.fget(self)  # type: ignore[attr-defined]
        with self._owners_lock:
            self._owners[connection] = weakref.ref(threading.current_thread())
        return connection

    @connection.deleter
    def connection(self) -> None:
        connection = getattr(self.state, "connection", None)
        RabbitmqBroker.connection.fdel(self)  # type: ignore[attr-defined]
        with self._owners_lock:
            self._owners.pop(connection, None)

    def _close_orphans(self) -> None:
        """Close the connections (and channels) of ended threads: no thread uses them any more."""
        with self._owners_lock:
            orphans = [
                connection
                for connection, owner in self._owners.items()
                if (thread := owner()) is None or not thread.is_alive()
            ]
            for connection in orphans:
                del self._owners[connection]
        for connection in orphans:
            self.channels.difference_update(
                [channel for channel in list(self.channels) if channel.connection is connection]
            )
            self.connections.discard(connection)
            with contextlib.suppress(Exception):  # already dead of missed heartbeats, often
                connection.close()

    def close(self) -> None:
        """Close copies of the sets: Dramatiq's `close` iterates the live ones, which a thread
        connecting meanwhile grows (RuntimeError: Set changed size during iteration)."""
        for channel_or_connection in [*self.channels.copy(), *self.connections.copy()]:
            with contextlib.suppress(Exception):  # closing what is already dead
                channel_or_connection.close()

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": xq_name(queue_name),
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-max-length-bytes": self._max_queued_bytes,
        }

    def _declare_xq_queue(self, queue_name: str) -> Any:
        return self.channel.queue_declare(
            queue=xq_name(queue_name), durable=True, arguments={"x-queue-type": "quorum"}
        )


def with_timeouts(url: str, seconds: float) -> str:
    """Bound every wait on the broker: connecting, and a peer gone silent (heartbeats, which
    also end a publish waiting for its confirmation). The URL's own values win."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    whole = max(1, round(seconds))
    defaults = {
        "heartbeat": str(whole),
        "socket_timeout": str(whole),
        "stack_timeout": str(whole * 2),
        "blocked_connection_timeout": str(whole),
        "connection_attempts": "1",
    }
    return urlunsplit(parts._replace(query=urlencode(defaults | query)))


class RabbitmqQueue:
    """`MessageQueue` on RabbitMQ. Publishing waits for the broker's confirmation of every
    message: with quorum queues, a confirmed message is on a majority of the nodes."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._broker: QuorumRabbitmqBroker | None = None
        # The API's threads (the enqueuer's, the request pool's) may build it at the same time.
        self._building = threading.Lock()

    @property
    def broker(self) -> dramatiq.Broker:
        return self._rabbit()

    def _rabbit(self) -> QuorumRabbitmqBroker:
        with self._building:
            if self._broker is None:
                # pika logs every connection's life at INFO: one reconnect is a dozen lines.
                logging.getLogger("pika").setLevel(logging.WARNING)
                settings = self._settings
                self._broker = QuorumRabbitmqBroker(
                    url=with_timeouts(settings.broker_url, settings.broker_timeout_seconds),
                    confirm_delivery=True,
                    max_queued_bytes=settings.max_queued_bytes,
                )
                for queue in QUEUES:
                    self._broker.declare_queue(queue)
            return self._broker

    @property
    def durability(self) -> str:
        return "quorum queues with publisher confirms: a 202 survives a minority of nodes lost"

    def publish(self, messages: Sequence[dramatiq.Message[Any]]) -> None:
        if not messages:
            return
        broker = self._rabbit()
        channel = self._ready_channel({message.queue_name for message in messages})
        published = 0
        try:
            for message in messages:
                _publish(channel, message.queue_name, encode(message))
                published += 1
        except pika.exceptions.NackError as error:
            # The nacked message is not queued (the channel stays usable); those before it are.
            if published == 0:
                raise QueueFullError("the queue is full (x-max-length-bytes)") from error
            raise PublishUncertainError(f"{published} of {len(messages)} confirmed") from error
        except pika.exceptions.UnroutableError as error:
            # The queue is gone (deleted by hand): declare it again before the next publish.
            broker.queues_pending.add(q_name(messages[published].queue_name))
            if published == 0:
                raise BrokerUnavailableError(f"queue missing: {error}") from error
            raise PublishUncertainError(f"{published} of {len(messages)} confirmed") from error
        except _AMQP_ERRORS as error:
            del broker.connection
            raise PublishUncertainError(f"{published} of {len(messages)} confirmed") from error

    def _ready_channel(self, queues: set[str]) -> Any:
        """This thread's channel with the queues declared: failing here, nothing was sent.

        A thread's connection may have died while it was idle: the broker restarted, or
        dropped it for missed heartbeats (an idle thread sends none). Reading what the broker
        sent meanwhile finds out without a round trip, and then a fresh connection is made
        once (only then: a new connection that fails means the broker is unreachable), before
        anything is published on the dead one, which would leave the outcome unknown."""
        broker = self._rabbit()
        retry = getattr(broker.state, "connection", None) is not None  # an old one may be dead
        while True:
            try:
                broker.connection.process_data_events(time_limit=0)
                for queue in sorted(queues):
                    broker.declare_queue(queue, ensure=True)
                return broker.channel
            except _AMQP_ERRORS as error:
                del broker.connection
                if not retry:
                    raise BrokerUnavailableError(str(error)) from error
                retry = False

    def depths(self) -> dict[str, int]:
        """Passive declarations: they read the counts whatever arguments the queues were
        declared with (Dramatiq's would fail on a queue declared with another MAX_QUEUED_BYTES)."""
        channel = self._ready_channel(set(QUEUES))
        broker = self._rabbit()
        try:
            return {
                name: channel.queue_declare(name, passive=True).method.message_count
                for name in depth_names()
            }
        except _AMQP_ERRORS as error:
            del broker.connection
            raise BrokerUnavailableError(str(error)) from error

    def dead_letters(self, limit: int, *, max_bytes: int) -> list[DeadLetter]:
        """Read by moving, never by returning: each dead letter is fetched, published again
        (confirmed, same body and headers) at the back of its queue, then acknowledged.

        A message fetched and handed back counts as a delivery, and quorum queues drop a
        message past their delivery limit (RabbitMQ >= 4.0: 20 by default; the dead-letter
        queues have no dead-letter target): listing used to lose them. The copy starts with no
        delivery counted; a whole turn of the queue (as many messages as it held) keeps its
        order. A crash between publishing and acknowledging leaves one dead letter twice,
        which versions make harmless. Up to `limit` of each queue are kept, queue after queue,
        until their bodies pass `max_bytes` (the others are moved, not decoded); then the oldest
        deaths of all, as on Redis."""
        held = self.depths()
        kept: list[tuple[str, pika.BasicProperties, bytes]] = []
        size, full = 0, False
        with self._side_channel() as channel:
            for queue in QUEUES:
                dead = xq_name(queue)
                taken = 0
                for _ in range(held[queue + DEAD]):
                    method, properties, body = channel.basic_get(dead, auto_ack=False)
                    if method is None:
                        break
                    _publish(channel, dead, body, _without_delivery_count(properties.headers))
                    channel.basic_ack(method.delivery_tag)
                    full = full or (bool(kept) and size + len(body) > max_bytes)
                    if not full and taken < limit:
                        kept.append((queue, properties, body))
                        size, taken = size + len(body), taken + 1
        letters = [_dead_letter(queue, properties, body) for queue, properties, body in kept]
        return oldest_first(letters, limit)

    def count_dead_letters(self) -> int:
        return dead_letter_total(self.depths())

    def requeue_dead_letters(self) -> int:
        """Each dead letter is published (confirmed) to its queue, then acknowledged: a crash in
        between queues it twice, which versions make harmless."""
        moved = 0
        with self._side_channel() as channel:
            for queue in QUEUES:
                while True:
                    method, _, body = channel.basic_get(xq_name(queue), auto_ack=False)
                    if method is None:
                        break
                    message = decode(body)
                    fresh = message.copy(
                        queue_name=q_name(message.queue_name),
                        options={**message.options, "retries": 0},
                    )
                    _publish(channel, fresh.queue_name, encode(fresh))
                    channel.basic_ack(method.delivery_tag)
                    moved += 1
        return moved

    def _side_channel(self) -> _SideChannel:
        return _SideChannel(self._rabbit())

    def carried(self, ids: set[str]) -> set[str] | None:
        return None  # reading every queued message would mean consuming it

    def queued_bytes(self) -> int | None:
        return None  # the queues enforce MAX_QUEUED_BYTES themselves (x-max-length-bytes)

    def ping(self) -> None:
        """A round trip: a connection that merely looks open says nothing of the broker."""
        self.depths()

    def close(self) -> None:
        """The connections of threads long idle are usually dead already (missed heartbeats):
        closing them is expected to fail, and pika would log each failure as an error."""
        if self._broker is not None:
            logging.getLogger("pika").setLevel(logging.CRITICAL)
            self._broker.close()


def _publish(channel: Any, queue: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=body,
        properties=pika.BasicProperties(delivery_mode=2, headers=headers),
        mandatory=True,
    )


def _without_delivery_count(headers: dict[str, Any] | None) -> dict[str, Any]:
    """A dead letter's headers for its copy: `x-death` (when it died) kept, the count of
    deliveries RabbitMQ added dropped (the copy has had none)."""
    return {k: v for k, v in (headers or {}).items() if k != "x-delivery-count"}


def _dead_letter(queue: str, properties: pika.BasicProperties, body: bytes) -> DeadLetter:
    message = decode(body)
    return DeadLetter(
        queue=queue,
        message_id=message.message_id,
        actor=message.actor_name,
        documents=document_count(message.args),
        retries=int(message.options.get("retries", 0)),
        dead_since=_death_time(properties),
        bytes=len(body),
    )


def _death_time(properties: pika.BasicProperties) -> datetime | None:
    """When RabbitMQ dead-lettered the message: its `x-death` header, newest death first
    (pika reads AMQP timestamps as naive UTC)."""
    deaths = (properties.headers or {}).get("x-death") or []
    moment = deaths[0].get("time") if deaths else None
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _SideChannel:
    """A confirming channel on a connection of its own, closed on exit (unacknowledged
    messages go back to their queues); AMQP errors read as `BrokerUnavailableError`."""

    def __init__(self, broker: QuorumRabbitmqBroker) -> None:
        self._broker = broker
        self._connection: Any = None

    def __enter__(self) -> Any:
        try:
            for queue in QUEUES:
                self._broker.declare_queue(queue, ensure=True)
            self._connection = pika.BlockingConnection(self._broker.parameters)
            channel = self._connection.channel()
            channel.confirm_delivery()
        except _AMQP_ERRORS as error:
            raise BrokerUnavailableError(str(error)) from error
        return channel

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if self._connection is not None and self._connection.is_open:
            with contextlib.suppress(*_AMQP_ERRORS):
                self._connection.close()
        if isinstance(error, _AMQP_ERRORS):
            raise BrokerUnavailableError(str(error)) from error
