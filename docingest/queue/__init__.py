"""Where an accepted document waits: the only code that knows how a broker stores messages.

`open_queue(settings)` returns the `MessageQueue` of BROKER_URL; each broker is one module
(`redis.py`, `rabbitmq.py`). Nothing outside this package imports a Dramatiq broker class or
spells a broker key.
"""

from __future__ import annotations

import dramatiq

from docingest.queue.base import (
    BrokerUnavailableError,
    DeadLetter,
    MessageQueue,
    PublishUncertainError,
    QueueFullError,
)
from docingest.queue.encoder import ENCODER
from docingest.settings import Settings

__all__ = [
    "BrokerUnavailableError",
    "DeadLetter",
    "MessageQueue",
    "PublishUncertainError",
    "QueueFullError",
    "install",
    "open_queue",
]


def open_queue(settings: Settings) -> MessageQueue:
    url = settings.broker_url
    if url.startswith(("redis://", "rediss://", "unix://")):
        from docingest.queue.redis import RedisQueue

        return RedisQueue(settings)
    if url.startswith(("amqp://", "amqps://")):
        from docingest.queue.rabbitmq import RabbitmqQueue

        return RabbitmqQueue(settings)
    raise ValueError(f"BROKER_URL must start with redis://, rediss://, unix:// or amqp://: {url!r}")


def install(queue: MessageQueue) -> dramatiq.Broker:
    """Make the queue's broker Dramatiq's global one (orjson-encoded): the worker's actors and
    `dramatiq`'s command line find it there. Only the worker's actors module calls this."""
    dramatiq.set_encoder(ENCODER)
    broker = queue.broker
    dramatiq.set_broker(broker)
    return broker
