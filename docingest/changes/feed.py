"""Reading the feed: changes by position, after a cursor, with the kind and category filters.

Positions are numbers here; on the wire they are opaque strings (their decimal digits today).
Every position up to the head is committed and stays where it is until pruned, so a page read
up to the head read in the same snapshot (or up to a position below it) is complete: the next
page starts after it. Items are plain values serialised as the wire `Change` is (`dump`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Select,
    Text,
    bindparam,
    cast,
    func,
    select,
    true,
)

from docingest.changes.relay import HEAD, PRUNED, head_position
from docingest.db import autocommit
from docingest.tables import CHANGES

# Where a UUID's 32 hex digits split into its 5 dashed groups: (start, length), from 1.
_UUID_PARTS: Final = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
# The largest cursor a page's statement can take: it adds `limit` (at most 1,000) to it in 64
# bits. A larger one (up to 19 digits on the wire) is read as this one: past the head, gone.
MAX_CURSOR: Final = 2**63 - 1 - 1000


def _columns(dialect: str) -> tuple[ColumnElement[Any], ...]:
    """A change as the feed shows it (the wire `Change`), in its fields' order, read as the text
    the wire has where it has text: the alternatives as the JSON text stored (orjson, compact),
    embedded as they are; the id; the time, in UTC (`wire_time`). A datetime a change was
    half of a page's CPU: parsed, checked for its zone, serialised (5.2 against 2.6 µs a change
    read and serialised, with the time as a datetime or as text, in one process)."""
    if dialect == "postgresql":
        document_id: ColumnElement[Any] = cast(CHANGES.c.document_id, Text)
        at = cast(func.timezone("UTC", CHANGES.c.at), Text)
    else:  # SQLite stores the id as 32 hex digits and the time as UTC text
        hex_id = cast(CHANGES.c.document_id, Text)
        parts = [func.substr(hex_id, start, size) for start, size in _UUID_PARTS]
        document_id = func.printf("%s-%s-%s-%s-%s", *parts, type_=Text)
        at = cast(CHANGES.c.at, Text)
    return (
        CHANGES.c.position,
        document_id,
        CHANGES.c.version,
        CHANGES.c.kind,
        CHANGES.c.category,
        CHANGES.c.confidence,
        cast(CHANGES.c.alternatives, Text),
        CHANGES.c.model_version,
        CHANGES.c.label,
        at,
    )


def wire_time(text: str) -> str:
    """A UTC time as the database writes it, `YYYY-MM-DD HH:MM:SS[.f…]`, as the wire does
    (pydantic, orjson): a `T`, six digits of fraction (none when zero), `Z`."""
    stamp = text.replace(" ", "T", 1)
    if len(stamp) > 19:
        stamp = stamp.ljust(26, "0")
        if stamp.endswith(".000000"):
            stamp = stamp[:19]
    return stamp + "Z"


class ChangesGoneError(Exception):
    """The cursor is older than the oldest change kept (changes after it were pruned), or newer
    than the head: no position this database handed out (a database restored from a backup
    gives positions again to other changes), so what it missed is unknown."""

    def __init__(self, after: int, pruned: int, head: int) -> None:
        reason = (
            f"changes up to position {pruned} were pruned"
            if after < pruned
            else f"the newest position is {head}"
        )
        super().__init__(f"{reason}; the cursor is {after}")
        self.after = after
        self.pruned = pruned
        self.head = head


@dataclass(frozen=True, slots=True)
class ChangePage:
    # As the feed shows them (the wire `Change`, positions opaque strings), plain values for
    # `dump`: no model a change. A page of 1,000 cost 85 ms of CPU through the table's model
    # and a validation, 18 through the wire model, 3 so (benchmarks/feed_page.py).
    items: list[dict[str, Any]]
    # The position to read after next: past every change scanned, filtered out or not.
    next: int


def dump(value: Any) -> bytes:
    """JSON as the feed serialises it: a page, a change, a delivery (UTC times end in Z, as
    pydantic writes them)."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


def _item(row: Sequence[Any]) -> dict[str, Any]:
    """A page's row (its two first columns the bounds) as the feed shows it."""
    (
        _,
        _,
        position,
        document_id,
        version,
        kind,
        category,
        confidence,
        alternatives,
        model,
        label,
        at,
    ) = row
    return {
        "position": str(position),
        "document_id": document_id,
        "version": version,
        "kind": kind,
        "category": category,
        "confidence": confidence,
        "alternatives": None if alternatives is None else orjson.Fragment(alternatives),
        "model_version": model,
        "label": label,
        "at": wire_time(at),
    }


def _position(row: Sequence[Any]) -> int:
    return row[2] or 0


def read_changes(
    bind: Engine | Connection,
    *,
    after: int | None,
    limit: int,
    kinds: Sequence[str] = (),
    categories: Sequence[str] = (),
) -> ChangePage:
    """Up to `limit` changes after `after` (None: after the newest pruned, the oldest kept),
    oldest first, of the given kinds and categories (empty: any).

    `ChangesGoneError` when `after` is below the newest pruned position or above the head.
    `next` is the last item's position when the page is full, else the end of the positions
    scanned: the head, or, unfiltered, `limit` positions on.

    One statement, so one snapshot: the head, the newest pruned and the changes between them
    are read together (a change pruned or numbered meanwhile is in none or all of them), and
    with no transaction around it (a statement of its own is one; `BEGIN` and `ROLLBACK` were
    two round trips more).
    """
    statement = _page_statement(bind.dialect.name, bool(kinds), bool(categories))
    cursor = None if after is None else min(after, MAX_CURSOR)
    values: dict[str, Any] = {"after": cursor, "limit": limit}
    values |= {"kinds": list(kinds)} if kinds else {}
    values |= {"categories": list(categories)} if categories else {}
    with autocommit(bind) as connection:
        rows = connection.execute(statement, values).all()
    head, pruned = int(rows[0][0]), int(rows[0][1])
    if after is not None and not pruned <= after <= head:
        raise ChangesGoneError(after, pruned, head)
    # In the page's order: a join's is the plan's, which sorting here (rows already in order,
    # the usual case, are checked in one pass) spares the database's sort of the whole page.
    items = [_item(row) for row in sorted(rows, key=_position) if row[2] is not None]
    if len(items) == limit:
        return ChangePage(items, int(items[-1]["position"]))
    start = pruned if after is None else after
    until = head if kinds or categories else min(head, start + limit)
    return ChangePage(items, max(start, until))  # start > head: no `after`, all pruned


@cache
def _page_statement(dialect: str, kinds: bool, categories: bool) -> Select[Any]:
    """A page's statement, with or without each filter, built once (as the relay's reads).

    The bounds left-joined to the page: one row of them with no change when the page is empty.
    Positions follow one another (the relay gives head+1, head+2, …; pruning takes a prefix),
    so an unfiltered page is the next `limit` of them: a scan of that many rows whatever plan
    the database picks (on stale statistics PostgreSQL scanned every position up to the head
    and sorted them to keep 1,000)."""
    bounds = select(HEAD.label("head"), PRUNED.label("pruned")).subquery("bounds")
    start = func.coalesce(bindparam("after", type_=BigInteger), PRUNED)
    conditions = [CHANGES.c.position > start, CHANGES.c.position <= HEAD]
    if not kinds and not categories:
        conditions.append(CHANGES.c.position <= start + bindparam("limit", type_=BigInteger))
    if kinds:
        conditions.append(CHANGES.c.kind.in_(bindparam("kinds", expanding=True)))
    if categories:
        conditions.append(CHANGES.c.category.in_(bindparam("categories", expanding=True)))
    page = (
        select(*_columns(dialect))
        .where(*conditions)
        .order_by(CHANGES.c.position)
        .limit(bindparam("limit", type_=BigInteger))
        .subquery("page")
    )
    return select(bounds.c.head, bounds.c.pruned, *page.c).select_from(
        bounds.outerjoin(page, true())
    )


def head(engine: Engine) -> int:
    """The newest position (0 before the first change)."""
    with autocommit(engine) as connection:
        return head_position(connection)
