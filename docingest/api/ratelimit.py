"""Per-key request rate limit: a token bucket per key, in the API process's memory.

In-process rather than in Redis: the check is a few arithmetic operations with no network round
trip on the hot path and no new failure mode when Redis is slow. The cost is that each API
process counts alone, so with WEB_CONCURRENCY=N a key may make up to N times its limit; set the
limit per process accordingly (docs/security.md). Memory is one small entry per configured key.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Up to `per_minute` requests at once, refilled evenly over the minute.

    Not locked: every call runs on the event loop thread and never awaits.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def retry_after(self, name: str, per_minute: int) -> int | None:
        """Take one request from `name`'s bucket: None if allowed, else seconds to wait."""
        now = time.monotonic()
        bucket = self._buckets.setdefault(name, _Bucket(float(per_minute), now))
        rate = per_minute / 60
        bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return max(1, math.ceil((1 - bucket.tokens) / rate))
