"""Webhook signatures: `docingest_client.webhooks` and the reference implementation of Standard
Webhooks (the `standardwebhooks` package) sign and verify each other's deliveries; a changed
body, another secret, an old or future timestamp, a missing header are refused."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime

import pytest
from docingest_client import ChangesDelivery, WebhookVerificationError, verify
from docingest_client.webhooks import SECRET_PREFIX, TOLERANCE_SECONDS, sign
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as ReferenceError

from docingest.changes.webhooks.endpoints import new_secret

BODY = (
    b'{"type":"docingest.changes","timestamp":"2026-12-06T10:00:00Z","data":{"items":[{'
    b'"position":"7","document_id":"' + str(uuid.UUID(int=7)).encode() + b'","version":3,'
    b'"kind":"stored","category":"tech","confidence":0.9,"alternatives":null,'
    b'"model_version":"m1","label":null,"at":"2026-12-06T09:59:59Z"}]}}'
)


def test_a_new_secret_is_standard_webhooks_format() -> None:
    secret = new_secret()
    assert secret.startswith(SECRET_PREFIX)
    assert len(base64.b64decode(secret.removeprefix(SECRET_PREFIX))) == 32
    assert new_secret() != secret
    Webhook(secret)  # the reference implementation reads it


def test_the_reference_implementation_verifies_what_docingest_signs() -> None:
    secret = new_secret()
    headers = sign(secret, "msg-1", int(time.time()), BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers)["data"]["items"][0]["position"] == "7"
    with pytest.raises(ReferenceError):
        Webhook(new_secret()).verify(BODY, headers)


def test_docingest_verifies_what_the_reference_implementation_signs() -> None:
    secret = new_secret()
    now = datetime.now(UTC)
    headers = {
        "Webhook-Id": "msg-2",  # any case
        "Webhook-Timestamp": str(int(now.timestamp())),
        "Webhook-Signature": Webhook(secret).sign("msg-2", now, BODY),
    }
    delivery = verify(BODY, headers, secret)
    assert isinstance(delivery, ChangesDelivery)
    assert delivery.type == "docingest.changes"
    [change] = delivery.data.items
    assert (change.position, change.version, change.kind) == ("7", 3, "stored")
    assert verify(BODY.decode(), headers, secret) == delivery  # text as well as bytes


def test_a_secret_without_its_prefix_or_padding_verifies_too() -> None:
    secret = new_secret()
    headers = sign(secret, "msg-3", int(time.time()), BODY)
    bare = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    assert verify(BODY, headers, bare).data.items


def test_one_matching_signature_among_several_is_enough() -> None:
    """While a secret rotates, a sender may sign with both."""
    secret = new_secret()
    timestamp = int(time.time())
    headers = sign(secret, "msg-4", timestamp, BODY)
    other = sign(new_secret(), "msg-4", timestamp, BODY)["webhook-signature"]
    headers["webhook-signature"] = f"v2,ignored {other} {headers['webhook-signature']}"
    assert verify(BODY, headers, secret).data.items


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("body", "no signature matches"),
        ("secret", "no signature matches"),
        ("id", "no signature matches"),
        ("old", "too old"),
        ("future", "in the future"),
        ("missing", "missing header webhook-signature"),
        ("not a number", "not a number"),
    ],
)
def test_a_delivery_not_signed_now_with_the_secret_is_refused(change: str, message: str) -> None:
    secret = new_secret()
    now = int(time.time())
    sent = {"old": now - TOLERANCE_SECONDS - 5, "future": now + TOLERANCE_SECONDS + 5}.get(change)
    headers = sign(secret, "msg-5", now if sent is None else sent, BODY)
    body, key = BODY, secret
    if change == "body":
        body = BODY.replace(b'"tech"', b'"sport"')
    elif change == "secret":
        key = new_secret()
    elif change == "id":
        headers["webhook-id"] = "msg-6"
    elif change == "missing":
        del headers["webhook-signature"]
    elif change == "not a number":
        headers["webhook-timestamp"] = "yesterday"
    with pytest.raises(WebhookVerificationError, match=message):
        verify(body, headers, key)
    # The reference implementation refuses the same deliveries.
    with pytest.raises(ReferenceError):
        Webhook(key).verify(body, headers)


def test_the_tolerance_can_be_set_and_the_clock_given() -> None:
    secret = new_secret()
    headers = sign(secret, "msg-7", 1_000_000, BODY)
    assert verify(BODY, headers, secret, now=1_000_000 + 299).data.items
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(BODY, headers, secret, now=1_000_000 + 301)
    assert verify(BODY, headers, secret, now=1_000_000 + 3000, tolerance=3600).data.items


def test_a_secret_that_is_not_base64_is_a_programming_error() -> None:
    headers = sign(new_secret(), "msg-8", int(time.time()), BODY)
    with pytest.raises(ValueError, match="not a webhook secret"):
        verify(BODY, headers, "whsec_not*base64")
