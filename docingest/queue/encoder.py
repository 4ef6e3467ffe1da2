"""Messages as JSON with orjson: several times faster than Dramatiq's encoder on large lists."""

from __future__ import annotations

from typing import Any

import dramatiq
import orjson
from dramatiq.errors import DecodeError


class OrjsonEncoder(dramatiq.Encoder):
    def encode(self, data: dict[str, Any]) -> bytes:
        return orjson.dumps(data)

    def decode(self, data: bytes) -> dict[str, Any]:
        try:
            decoded: dict[str, Any] = orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise DecodeError(f"failed to decode message {data!r}", data, error) from None
        return decoded


ENCODER = OrjsonEncoder()


def encode(message: dramatiq.Message[Any]) -> bytes:
    """Independent of Dramatiq's global encoder, which only the worker process sets."""
    return ENCODER.encode(message.asdict())


def decode(data: bytes) -> dramatiq.Message[Any]:
    return dramatiq.Message(**ENCODER.decode(data))
