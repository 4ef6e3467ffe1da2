"""Time-ordered ids: UUIDv7 (RFC 9562, section 5.7), for documents posted without one.

A random id (v4) lands anywhere in the primary key's B-tree, so each insert dirties a random
leaf page and the index splits pages all over; a v7 id starts with the time in milliseconds, so
new ids go to the index's right edge, as a sequence's would (docs/architecture.md, Decisions).

By hand, as CPython 3.14's `uuid.uuid7` does it (this package supports 3.11 and depends on
httpx and pydantic only): 48 bits of Unix time in milliseconds, the version, a 42-bit counter
(RFC 9562 section 6.2, method 1: 12 bits in `rand_a`, 30 in `rand_b`) started at a random value
with its top bit clear in each new millisecond and incremented within one, the variant, then 32
random bits. So the ids one process makes increase strictly, even many in one millisecond or
with the clock set back (the last timestamp is then kept, and advanced when the counter runs
out); ids of different processes are ordered by their millisecond.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["uuid7"]

_VERSION_AND_VARIANT = (7 << 76) | (0b10 << 62)
_COUNTER_MAX = (1 << 42) - 1

_lock = threading.Lock()
_last_ms = -1
_last_counter = 0


def _fresh_counter_and_tail() -> tuple[int, int]:
    random = int.from_bytes(os.urandom(10), "big")
    return (random >> 32) & (_COUNTER_MAX >> 1), random & 0xFFFF_FFFF


def uuid7() -> uuid.UUID:
    """A new UUIDv7, greater than every other this process made."""
    global _last_ms, _last_counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            counter, tail = _fresh_counter_and_tail()
        else:
            ms = _last_ms  # the same millisecond, or the clock went back
            counter = _last_counter + 1
            if counter > _COUNTER_MAX:
                ms += 1
                counter, tail = _fresh_counter_and_tail()
            else:
                tail = int.from_bytes(os.urandom(4), "big")
        _last_ms, _last_counter = ms, counter
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | (counter >> 30) << 64
        | (counter & 0x3FFF_FFFF) << 32
        | tail
        | _VERSION_AND_VARIANT
    )
    return uuid.UUID(int=value)
