"""The relay: the one writer of positions. It numbers committed changes, in one transaction at a
time, and prunes those older than the retention.

Why this makes the feed exact (docs/architecture.md, The change feed): a change row is inserted
in its document's transaction without a position; only committed rows are visible to the relay,
and one relay at a time (PostgreSQL: a transaction-level advisory lock; SQLite: one writer
anyway) gives them the positions after the highest one, in one commit. So a reader that saw
position P has seen every position up to P, and a change that commits late gets a later
position, never one a reader already went past.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import (
    Connection,
    Engine,
    Update,
    bindparam,
    case,
    delete,
    func,
    select,
    text,
    update,
)

from docingest.schemas import as_utc, utcnow
from docingest.tables import CHANGE_RELAY, CHANGES

# The advisory lock's key ("docchang" in ASCII): any other docingest lock uses another.
RELAY_LOCK: Final = 0x646F636368616E67
# Changes numbered by one pass at most: a backlog is numbered over several short transactions.
RELAY_BATCH: Final = 10_000
# Changes pruned by one pass at most.
PRUNE_BATCH: Final = 1_000


@dataclass(frozen=True, slots=True)
class Relayed:
    numbered: int
    pruned: int


# The newest position pruned (0: none): a cursor below it missed changes (410).
PRUNED: Final = select(CHANGE_RELAY.c.pruned).where(CHANGE_RELAY.c.id == 1).scalar_subquery()
# The newest position given; the newest pruned if none is kept (0: none ever).
HEAD: Final = func.coalesce(select(func.max(CHANGES.c.position)).scalar_subquery(), PRUNED)

# Every statement is built once: building one cost as much as running it, and a feed's read
# or an idle relay pass is a few of them (each worker process runs a pass every 0.2 s).
_HEAD_STATEMENT: Final = select(HEAD)
_PRUNED_STATEMENT: Final = select(PRUNED)
_LOCK: Final = text("SELECT pg_try_advisory_xact_lock(:key)")
_ANY_UNNUMBERED: Final = select(CHANGES.c.id).where(CHANGES.c.position.is_(None)).limit(1)


def _numbering() -> Update:
    """Positions head+1, head+2, … for the first RELAY_BATCH unnumbered rows by id, in one
    `UPDATE` that reads the head itself (an alias: not correlated to the row updated), so that
    reading it and numbering are one statement: on SQLite, whose driver runs a SELECT outside
    the transaction, two processes' passes still cannot give a position twice."""
    numbered = CHANGES.alias("numbered")
    newest = select(func.max(numbered.c.position)).scalar_subquery()
    start = select(func.coalesce(newest, PRUNED)).scalar_subquery()
    waiting = (
        select(
            CHANGES.c.id,
            func.row_number().over(order_by=CHANGES.c.id).label("number"),
        )
        .where(CHANGES.c.position.is_(None))
        .order_by(CHANGES.c.id)
        .limit(RELAY_BATCH)
        .subquery()
    )
    return (
        update(CHANGES)
        .where(CHANGES.c.id == waiting.c.id)
        .values(position=start + waiting.c.number)
    )


_NUMBER: Final = _numbering()
_KEPT: Final = CHANGES.c.position > bindparam("pruned")
_OLDEST_KEPT_AT: Final = select(CHANGES.c.at).where(_KEPT).order_by(CHANGES.c.position).limit(1)
_OLDEST_KEPT: Final = (
    select(CHANGES.c.position, CHANGES.c.at)
    .where(_KEPT)
    .order_by(CHANGES.c.position)
    .limit(PRUNE_BATCH)
)
_DELETE_UP_TO: Final = delete(CHANGES).where(_KEPT, CHANGES.c.position <= bindparam("last"))
# Never back: another process's pass may have pruned further meanwhile (SQLite).
_RECORD_PRUNED: Final = (
    update(CHANGE_RELAY)
    .where(CHANGE_RELAY.c.id == 1)
    .values(
        pruned=case(
            (CHANGE_RELAY.c.pruned < bindparam("last"), bindparam("last")),
            else_=CHANGE_RELAY.c.pruned,
        )
    )
)


def relay(engine: Engine, *, retention: timedelta | None = None) -> Relayed | None:
    """One pass: number the committed changes without a position, oldest id first, after the
    highest position; then prune up to PRUNE_BATCH changes older than `retention` (None: none).
    None when another process holds the relay's lock (its pass does the work)."""
    with engine.begin() as connection:
        if not _lock(connection):
            return None
        numbered = _number(connection)
        pruned = _prune(connection, utcnow() - retention) if retention is not None else 0
    return Relayed(numbered, pruned)


def _lock(connection: Connection) -> bool:
    """PostgreSQL: a transaction-level advisory lock, released at commit, not waited for.
    SQLite: none; each write statement holds the database's only write lock, and the numbering
    is one statement (`_number`)."""
    if connection.dialect.name != "postgresql":
        return True
    return bool(connection.execute(_LOCK, {"key": RELAY_LOCK}).scalar_one())


def _number(connection: Connection) -> int:
    """Give positions head+1, head+2, … to the first RELAY_BATCH unnumbered rows by id.

    By id: a document's later write takes its change row's id while it holds that document's
    row lock, which the earlier write released only at its commit, so for one document id
    order is version order (docs/architecture.md)."""
    if connection.execute(_ANY_UNNUMBERED).first() is None:
        return 0  # an idle pass reads one index entry and writes nothing (SQLite: no write lock)
    return int(connection.execute(_NUMBER).rowcount)


def head_position(connection: Connection) -> int:
    return int(connection.execute(_HEAD_STATEMENT).scalar_one())


def pruned_position(connection: Connection) -> int:
    return int(connection.execute(_PRUNED_STATEMENT).scalar_one())


def _prune(connection: Connection, cutoff: datetime) -> int:
    """Delete the oldest positions whose change is older than `cutoff`, a prefix of the feed
    (stopping at the first one that is not, so that every position up to the newest pruned is
    gone and every one after it kept), and remember the newest pruned."""
    kept = {"pruned": pruned_position(connection)}
    at = connection.execute(_OLDEST_KEPT_AT, kept).scalar()
    if at is None or as_utc(at) >= cutoff:
        return 0  # the usual pass: the oldest change kept is not old enough
    last = None
    for position, at in connection.execute(_OLDEST_KEPT, kept).all():
        if as_utc(at) >= cutoff:
            break
        last = int(position)
    if last is None:
        return 0
    deleted = connection.execute(_DELETE_UP_TO, kept | {"last": last}).rowcount
    connection.execute(_RECORD_PRUNED, {"last": last})
    return int(deleted)


@dataclass(frozen=True, slots=True)
class Lag:
    """What the relay has not numbered yet: how many changes, the oldest one's age."""

    waiting: int
    oldest_seconds: float


def relay_lag(engine: Engine) -> Lag:
    statement = select(func.count(), func.min(CHANGES.c.at)).where(CHANGES.c.position.is_(None))
    with engine.connect() as connection:
        waiting, oldest = connection.execute(statement).one()
    age = (utcnow() - as_utc(oldest)).total_seconds() if oldest is not None else 0.0
    return Lag(int(waiting), max(age, 0.0))
