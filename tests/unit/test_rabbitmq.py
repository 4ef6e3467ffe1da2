"""The RabbitMQ broker's own bookkeeping, without a node."""

from __future__ import annotations

from docingest.queue.rabbitmq import QuorumRabbitmqBroker


class _Closing:
    """A channel whose close lets another thread's new channel land mid-close."""

    def __init__(self, broker: QuorumRabbitmqBroker) -> None:
        self.broker = broker
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.broker.channels.add(object())  # type: ignore[arg-type]


def test_close_survives_a_channel_opened_while_it_closes() -> None:
    """Dramatiq's close iterated the live sets: RuntimeError, Set changed size during iteration
    (seen in CI as the API shut down while its enqueuer reconnected)."""
    broker = QuorumRabbitmqBroker(url="amqp://127.0.0.1:1", max_queued_bytes=1)
    channels = [_Closing(broker) for _ in range(3)]
    broker.channels.update(channels)  # type: ignore[arg-type]
    broker.close()
    assert all(channel.closed for channel in channels)
