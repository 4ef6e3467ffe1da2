"""The endpoints as the API manages them: create, list, read, delete, resume, and how far each
is behind the feed. What a delivering process writes (leases, positions, failures) is
`leases.py`'s."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import orjson
from docingest_client.webhooks import SECRET_PREFIX
from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from docingest.changes.relay import head_position, pruned_position
from docingest.changes.webhooks.leases import database_now
from docingest.schemas import WebhookLag, WebhookOut, as_utc, utcnow
from docingest.tables import CHANGES, WEBHOOKS, Webhook

# Standard Webhooks' secrets are 24 to 64 random bytes.
SECRET_BYTES: Final = 32


class EndpointNotFoundError(LookupError):
    pass


class PositionPrunedError(Exception):
    """Resuming from the endpoint's position would skip changes pruned meanwhile."""

    def __init__(self, position: int, pruned: int) -> None:
        super().__init__(
            f"changes after position {position} were pruned (up to {pruned}) while the endpoint "
            "was behind: resume from the head (`?from=head`) and catch up with GET /documents "
            "(docs/changes.md)"
        )


@dataclass(frozen=True, slots=True)
class EndpointLag:
    changes: int
    seconds: float


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    endpoint: Webhook
    lag: EndpointLag


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@dataclass(frozen=True, slots=True)
class Created:
    status: EndpointStatus
    # Made by an earlier request with the same Idempotency-Key: this one made nothing.
    replayed: bool


class IdempotencyKeyReusedError(Exception):
    """The Idempotency-Key came before with another request (another URL, kinds, categories or
    key): the endpoint it names is not what this request asks for."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"the Idempotency-Key {key!r} was sent before with another request: a retry sends "
            "the same request with the same key, a new request a new key"
        )


def create(
    engine: Engine,
    url: str,
    *,
    kinds: Sequence[str] = (),
    categories: Sequence[str] = (),
    created_by: str | None = None,
    idempotency_key: str | None = None,
) -> Created:
    """A new active endpoint, delivered to from the head on: the changes committed from now.

    With `idempotency_key`, a retry of the request that made an endpoint with that key gets
    that endpoint (`replayed`), its secret included, and makes nothing; another request with
    the key raises `IdempotencyKeyReusedError`. The key lives as long as its endpoint."""
    digest = None
    if idempotency_key is not None:
        digest = _request_digest(url, kinds, categories, created_by)
        if (made := _made_with(engine, idempotency_key, digest)) is not None:
            return Created(made, replayed=True)
    try:
        with engine.begin() as connection:
            now = database_now(connection)  # the clock leases and retries are compared with
            endpoint = Webhook(
                id=uuid.uuid4(),
                url=url,
                kinds=list(kinds),
                categories=list(categories),
                secret=new_secret(),
                position=head_position(connection),
                state="active",
                created_at=now,
                created_by=created_by,
                next_attempt_at=now,
                attempts=0,
                deliveries=0,
                failures=0,
                idempotency_key=idempotency_key,
                request_digest=digest,
            )
            connection.execute(insert(WEBHOOKS).values(endpoint.model_dump()))
            return Created(_status(connection, endpoint, now), replayed=False)
    except IntegrityError:
        # Another try with the key committed first: its endpoint is the answer.
        if idempotency_key is None or digest is None:
            raise
        if (made := _made_with(engine, idempotency_key, digest)) is None:
            raise
        return Created(made, replayed=True)


def _request_digest(
    url: str, kinds: Sequence[str], categories: Sequence[str], created_by: str | None
) -> str:
    """What a retry must repeat: the URL, the filters (in any order) and whose key sent it."""
    request = [url, sorted(set(kinds)), sorted(set(categories)), created_by]
    return hashlib.sha256(orjson.dumps(request)).hexdigest()


def _made_with(engine: Engine, key: str, digest: str) -> EndpointStatus | None:
    with engine.connect() as connection:
        found = select(WEBHOOKS).where(WEBHOOKS.c.idempotency_key == key)
        row = connection.execute(found).first()
        if row is None:
            return None
        endpoint = Webhook(**row._mapping)
        if endpoint.request_digest != digest:
            raise IdempotencyKeyReusedError(key)
        return _status(connection, endpoint, utcnow())


def list_endpoints(engine: Engine) -> list[EndpointStatus]:
    """Every endpoint, oldest first, with its lag."""
    now = utcnow()
    statement = select(WEBHOOKS).order_by(WEBHOOKS.c.created_at, WEBHOOKS.c.id)
    with engine.connect() as connection:
        found = [Webhook(**row._mapping) for row in connection.execute(statement)]
        return [_status(connection, endpoint, now) for endpoint in found]


def get(engine: Engine, endpoint_id: uuid.UUID) -> EndpointStatus:
    with engine.connect() as connection:
        return _status(connection, _row(connection, endpoint_id), utcnow())


def remove(engine: Engine, endpoint_id: uuid.UUID) -> None:
    """A delivery under way to it stops at its next write (it finds no row)."""
    with engine.begin() as connection:
        deleted = connection.execute(delete(WEBHOOKS).where(WEBHOOKS.c.id == endpoint_id))
    if deleted.rowcount == 0:
        raise EndpointNotFoundError(endpoint_id)


def resume(engine: Engine, endpoint_id: uuid.UUID, *, from_head: bool = False) -> EndpointStatus:
    """Active again, due now, its failures forgotten: a paused endpoint delivers again, a
    failing one is tried at once instead of after its backoff. From its position, unless
    changes after it were pruned (`PositionPrunedError`), or from the head with `from_head`."""
    with engine.begin() as connection:
        now = database_now(connection)
        endpoint = _row(connection, endpoint_id)
        values: dict[str, object] = {
            "state": "active",
            "paused_at": None,
            "paused_reason": None,
            "attempts": 0,
            "failing_since": None,
            "next_attempt_at": now,
        }
        if from_head:
            values["position"] = head_position(connection)
        elif (pruned := pruned_position(connection)) > endpoint.position:
            raise PositionPrunedError(endpoint.position, pruned)
        connection.execute(update(WEBHOOKS).where(WEBHOOKS.c.id == endpoint_id).values(values))
        return _status(connection, _row(connection, endpoint_id), now)


def _row(connection: Connection, endpoint_id: uuid.UUID) -> Webhook:
    row = connection.execute(select(WEBHOOKS).where(WEBHOOKS.c.id == endpoint_id)).first()
    if row is None:
        raise EndpointNotFoundError(endpoint_id)
    return Webhook(**row._mapping)


def _status(connection: Connection, endpoint: Webhook, now: datetime) -> EndpointStatus:
    return EndpointStatus(endpoint, lag(connection, endpoint.position, now))


def lag(connection: Connection, position: int, now: datetime) -> EndpointLag:
    """Positions between `position` and the head (those the endpoint's filters leave out too:
    they are passed over, not waited for), and the age of the first change after it."""
    behind = max(head_position(connection) - position, 0)
    if behind == 0:
        return EndpointLag(0, 0.0)
    first = select(CHANGES.c.at).where(CHANGES.c.position > position).order_by(CHANGES.c.position)
    at = connection.execute(first.limit(1)).scalar()
    seconds = (now - as_utc(at)).total_seconds() if at is not None else 0.0
    return EndpointLag(behind, max(seconds, 0.0))


def describe(status: EndpointStatus) -> WebhookOut:
    """An endpoint as the API shows it: everything but its secret."""
    endpoint = status.endpoint
    failing = endpoint.failing_since is not None or endpoint.state == "paused"
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        kinds=endpoint.kinds,
        categories=endpoint.categories,
        state=endpoint.state,
        paused_reason=endpoint.paused_reason,
        paused_at=endpoint.paused_at,
        position=str(endpoint.position),
        lag=WebhookLag(changes=status.lag.changes, seconds=round(status.lag.seconds, 3)),
        last_error=endpoint.last_error,
        last_error_at=endpoint.last_error_at,
        failing_since=endpoint.failing_since,
        attempts=endpoint.attempts,
        next_attempt_at=endpoint.next_attempt_at if failing else None,
        delivered_at=endpoint.delivered_at,
        deliveries=endpoint.deliveries,
        failures=endpoint.failures,
        created_at=endpoint.created_at,
        created_by=endpoint.created_by,
    )
