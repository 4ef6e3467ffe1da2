"""The queue: a Dramatiq broker built from BROKER_URL, and the names both sides agree on."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import orjson
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import DecodeError

from docingest.settings import Settings

QUEUE_NAME = "documents"
INGEST_ACTOR = "documents.ingest"
# Reclassification has its own queue, so a large run never sits in front of new documents.
RECLASSIFY_QUEUE = "reclassify"
RECLASSIFY_ACTOR = "documents.reclassify"


class OrjsonEncoder(dramatiq.Encoder):
    """Dramatiq's default JSON encoder, several times faster on messages of many documents."""

    def encode(self, data: dict[str, Any]) -> bytes:
        return orjson.dumps(data)

    def decode(self, data: bytes) -> dict[str, Any]:
        try:
            decoded: dict[str, Any] = orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise DecodeError(f"failed to decode message {data!r}", data, error) from None
        return decoded


class RecoveringRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, recovering a dead worker's messages within seconds.

    Dramatiq requeues the unacknowledged messages of a worker whose heartbeat is older than
    `heartbeat_timeout` during "maintenance", which it runs on a random 0.1 % of commands: on a
    quiet queue that can take many minutes. Here every process also runs it at least once per
    `maintenance_interval` seconds.
    """

    def __init__(self, *, maintenance_interval: float, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self._maintenance_interval = maintenance_interval
        self._next_maintenance = 0.0

    def _should_do_maintenance(self, command: str) -> int:
        now = time.monotonic()
        if command in ("fetch", "enqueue") and now >= self._next_maintenance:
            self._next_maintenance = now + self._maintenance_interval
            return 1
        return int(super()._should_do_maintenance(command))


def make_broker(settings: Settings) -> dramatiq.Broker:
    url = settings.broker_url
    if url.startswith(("redis://", "rediss://", "unix://")):
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=settings.broker_timeout_seconds,
            socket_timeout=settings.broker_timeout_seconds,
            health_check_interval=30,
        )
        return RecoveringRedisBroker(
            client=client,
            heartbeat_timeout=int(settings.worker_heartbeat_timeout_seconds * 1000),
            maintenance_interval=settings.worker_heartbeat_timeout_seconds / 3,
        )
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url, confirm_delivery=True)
    raise ValueError(f"BROKER_URL must start with redis://, rediss://, unix:// or amqp://: {url!r}")


def setup_broker(settings: Settings) -> dramatiq.Broker:
    """Make the process-wide broker; the worker's actors and the API's messages go through it."""
    from docingest.metrics import WorkerMetricsMiddleware  # it imports this module's names

    broker = make_broker(settings)
    broker.add_middleware(WorkerMetricsMiddleware(settings.metrics_flush_seconds))
    dramatiq.set_encoder(OrjsonEncoder())
    dramatiq.set_broker(broker)
    broker.declare_queue(QUEUE_NAME)
    return broker
