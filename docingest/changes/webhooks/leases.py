"""What a delivering process writes: leases on endpoints, then each outcome under its lease.

One process at a time delivers to an endpoint: it takes the endpoint's lease with a conditional
UPDATE (free, or expired, and due), renews every lease it holds in one statement while it
delivers, and gives them back when it is done. Every write of a delivery's outcome is
conditional on still holding the lease (and, for a position, on the position it started from),
so a process that lost its lease (stalled past its expiry, the endpoint deleted) changes
nothing, and whoever holds it now delivers again from the stored position: at least once.

Moments compared with a lease's expiry are the database's own clock on PostgreSQL, so that
hosts whose clocks disagree still agree on when a lease ends; SQLite runs on one host.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Update,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    update,
)

from docingest.changes.relay import HEAD
from docingest.db import autocommit
from docingest.schemas import as_utc, utcnow
from docingest.tables import WEBHOOKS, Webhook

# A failure's message is kept this long at most.
ERROR_CHARS = 1000


# A moment as a statement compares it: a value, or the database's clock read by the statement.
Moment = datetime | ColumnElement[datetime]
# PostgreSQL's clock, as the statement that reads it started.
_STATEMENT_TIME: Final = func.statement_timestamp(type_=DateTime(timezone=True))


def database_now(connection: Connection) -> datetime:
    if connection.dialect.name == "postgresql":
        return as_utc(connection.execute(select(_STATEMENT_TIME)).scalar_one())
    return utcnow()


def _now(connection: Connection) -> Moment:
    """`database_now` inside the statement that uses it (PostgreSQL): a round trip less."""
    return _STATEMENT_TIME if connection.dialect.name == "postgresql" else utcnow()


def take_due(
    engine: Engine, owner: str, seconds: float, *, exclude: Collection[uuid.UUID], limit: int
) -> list[Webhook]:
    """Up to `limit` endpoints leased to `owner` for `seconds`: active ones, due (not waiting
    for a retry), behind the head, whose lease is free or expired, not in `exclude`.

    Idle, this reads two index entries and a small table and writes nothing."""
    if limit <= 0:
        return []
    with engine.connect() as connection:
        now = _now(connection)
        candidates = select(WEBHOOKS.c.id).where(
            _free(now),
            WEBHOOKS.c.state == "active",
            WEBHOOKS.c.next_attempt_at <= now,
            WEBHOOKS.c.position < HEAD,
        )
        candidates = candidates.order_by(WEBHOOKS.c.next_attempt_at)
        found = [row.id for row in connection.execute(candidates)]
    taken = []
    for endpoint_id in found:
        if endpoint_id in exclude:
            continue
        if (endpoint := take(engine, endpoint_id, owner, seconds)) is not None:
            taken.append(endpoint)
            if len(taken) == limit:
                break
    return taken


def _free(now: Moment) -> Any:
    return or_(WEBHOOKS.c.lease_owner.is_(None), WEBHOOKS.c.lease_expires_at < now)


def take(engine: Engine, endpoint_id: uuid.UUID, owner: str, seconds: float) -> Webhook | None:
    """The endpoint, leased to `owner` until `seconds` from now; None when another process
    holds it (or it is paused, or not due)."""
    with engine.begin() as connection:
        now = _now(connection)
        statement = (
            update(WEBHOOKS)
            .where(
                WEBHOOKS.c.id == endpoint_id,
                _free(now),
                WEBHOOKS.c.state == "active",
                WEBHOOKS.c.next_attempt_at <= now,
            )
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=seconds))
            .returning(*WEBHOOKS.c)
        )
        row = connection.execute(statement).first()
    return None if row is None else Webhook(**row._mapping)


def renew(engine: Engine, owner: str, seconds: float) -> int:
    """Every lease `owner` holds, extended to `seconds` from now; how many."""
    with engine.begin() as connection:
        now = _now(connection)
        statement = (
            update(WEBHOOKS)
            .where(WEBHOOKS.c.lease_owner == owner)
            .values(lease_expires_at=now + timedelta(seconds=seconds))
        )
        return int(connection.execute(statement).rowcount)


def release(engine: Engine, owner: str, endpoint_id: uuid.UUID | None = None) -> int:
    """Give the lease of one endpoint back (None: every one `owner` holds), for another process
    to take at once instead of after its expiry."""
    conditions = [WEBHOOKS.c.lease_owner == owner]
    if endpoint_id is not None:
        conditions.append(WEBHOOKS.c.id == endpoint_id)
    statement = update(WEBHOOKS).where(*conditions).values(lease_owner=None, lease_expires_at=None)
    with engine.begin() as connection:
        return int(connection.execute(statement).rowcount)


def advance(
    bind: Engine | Connection,
    endpoint_id: uuid.UUID,
    owner: str,
    *,
    after: int,
    to: int,
    delivered: bool,
) -> bool:
    """Move the endpoint from `after` to `to`: after a 2xx (`delivered`, which also ends a run
    of failures), or past changes its filters leave out. False when `owner` no longer holds
    the lease or the position moved: nothing written."""
    values = {"endpoint": endpoint_id, "owner": owner, "after": after, "to": to, "now": utcnow()}
    with autocommit(bind) as connection:
        statement = _advance_statement(connection.dialect.name, delivered)
        return connection.execute(statement, values).rowcount == 1


@cache
def _advance_statement(dialect: str, delivered: bool) -> Update:
    """Built once a kind (a delivery's; building it cost as much as running it)."""
    now = (
        _STATEMENT_TIME
        if dialect == "postgresql"
        else bindparam("now", type_=DateTime(timezone=True))
    )
    values: dict[str, Any] = {"position": bindparam("to")}
    if delivered:
        values |= {
            "deliveries": WEBHOOKS.c.deliveries + 1,
            "delivered_at": now,
            "attempts": 0,
            "failing_since": None,
            "next_attempt_at": now,
        }
    return (
        update(WEBHOOKS)
        .where(
            WEBHOOKS.c.id == bindparam("endpoint"),
            WEBHOOKS.c.lease_owner == bindparam("owner"),
            WEBHOOKS.c.position == bindparam("after"),
        )
        .values(values)
    )


def record_failure(
    bind: Engine | Connection,
    endpoint_id: uuid.UUID,
    owner: str,
    *,
    error: str,
    retry_in: timedelta,
    disable_after: timedelta,
) -> str | None:
    """A failed delivery: counted, its error kept, the next try due after `retry_in`; paused
    instead when the failures in a row began more than `disable_after` ago. The endpoint's
    state afterwards (None: `owner` no longer holds the lease, nothing written)."""
    error = error[:ERROR_CHARS]
    with autocommit(bind) as connection:
        now = _now(connection)
        since = WEBHOOKS.c.failing_since
        pausing = and_(since.is_not(None), since <= now - disable_after)
        reason = literal(
            f"failing for longer than WEBHOOK_DISABLE_AFTER ({_duration(disable_after)}); "
            f"the last error: {error}"
        )
        statement = (
            update(WEBHOOKS)
            .where(WEBHOOKS.c.id == endpoint_id, WEBHOOKS.c.lease_owner == owner)
            .values(
                attempts=WEBHOOKS.c.attempts + 1,
                failures=WEBHOOKS.c.failures + 1,
                failing_since=func.coalesce(since, now),
                last_error=error,
                last_error_at=now,
                next_attempt_at=now + retry_in,
                state=case((pausing, "paused"), else_=WEBHOOKS.c.state),
                paused_at=case((pausing, now), else_=WEBHOOKS.c.paused_at),
                paused_reason=case((pausing, reason), else_=WEBHOOKS.c.paused_reason),
            )
            .returning(WEBHOOKS.c.state)
        )
        state = connection.execute(statement).scalar()
    return None if state is None else str(state)


def pause(bind: Engine | Connection, endpoint_id: uuid.UUID, owner: str, reason: str) -> bool:
    """Paused for `reason` (its position was pruned, say): nothing more is tried until resumed."""
    with autocommit(bind) as connection:
        now = _now(connection)
        statement = (
            update(WEBHOOKS)
            .where(WEBHOOKS.c.id == endpoint_id, WEBHOOKS.c.lease_owner == owner)
            .values(
                state="paused",
                paused_at=now,
                paused_reason=reason,
                last_error=reason[:ERROR_CHARS],
                last_error_at=now,
            )
        )
        return connection.execute(statement).rowcount == 1


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, size in (("days", 86_400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"
