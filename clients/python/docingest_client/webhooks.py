"""Webhook signatures as the Standard Webhooks specification has them: `sign` (the service's
side) and `verify` (a receiver's), with the standard library only.

A delivery carries three headers: `webhook-id` (the same on every try of one batch: a receiver
that keeps the ids it handled can drop a repeat), `webhook-timestamp` (Unix seconds of this try)
and `webhook-signature`: `v1,` and the base64 of the HMAC-SHA256, keyed with the secret's
base64-decoded bytes, of `{id}.{timestamp}.{body}`. The secret is `whsec_` and base64, as
`POST /webhooks` showed it once.

Written here rather than taken from the `standardwebhooks` package, so that the client still
needs httpx and pydantic only; the suite signs with that package and verifies here, and the
other way round (tests/unit/test_webhook_signatures.py), so both read the same format.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from docingest_client.client import DocingestError
from docingest_client.schemas import ChangesDelivery

__all__ = [
    "SECRET_PREFIX",
    "TOLERANCE_SECONDS",
    "WebhookVerificationError",
    "sign",
    "signature",
    "verify",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, no secret)
# A delivery older (or newer) than this is refused: a replay of a captured one.
TOLERANCE_SECONDS = 300


class WebhookVerificationError(DocingestError):
    """The delivery is not one the secret's owner signed now: a signature that does not match,
    a timestamp outside the tolerance, or a header missing. Answer it with a 4xx, use nothing
    of it."""


def _key(secret: str) -> bytes:
    """The secret's bytes; its base64 may come without padding, as the specification allows."""
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as error:
        raise ValueError(f"not a webhook secret ({SECRET_PREFIX} and base64): {error}") from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the secret's bytes."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a delivery of `body`."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }


def verify(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> ChangesDelivery:
    """The delivery's body parsed, once its headers prove that the holder of `secret` sent it
    within `tolerance` seconds of `now` (default: the clock); `WebhookVerificationError`
    otherwise. `payload` is the body exactly as received (bytes, or text decoded as UTF-8):
    parse nothing before this. Any mapping of headers, whatever their case."""
    body = payload.encode() if isinstance(payload, str) else payload
    found = {name.lower(): value for name, value in headers.items()}
    names = ("webhook-id", "webhook-timestamp", "webhook-signature")
    missing = [name for name in names if name not in found]
    if missing:
        raise WebhookVerificationError(f"missing header {', '.join(missing)}")
    message_id, sent = found["webhook-id"], found["webhook-timestamp"]
    try:
        timestamp = int(sent)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not a number: {sent!r}") from None
    age = (time.time() if now is None else now) - timestamp
    allowed = f"(tolerance {tolerance:g} s)"
    if age > tolerance:
        raise WebhookVerificationError(f"too old: signed {age:.0f} s ago {allowed}")
    if age < -tolerance:
        raise WebhookVerificationError(f"signed {-age:.0f} s in the future {allowed}")
    expected = signature(secret, message_id, timestamp, body).encode()
    # Several space-separated signatures while a secret rotates; versions other than v1 skipped.
    offered = [s.encode() for s in found["webhook-signature"].split() if s.startswith("v1,")]
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise WebhookVerificationError("no signature matches: wrong secret, or a changed body")
    return ChangesDelivery.model_validate_json(body)
