"""Reading the feed: changes by position, after a cursor, with the kind and category filters.

Positions are numbers here; on the wire they are opaque strings (their decimal digits today).
Every position up to the head is committed and stays where it is until pruned, so a page read
up to the head it read first (or up to a position below it) is complete: the next page starts
after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import orjson
from sqlalchemy import Engine, Select, Text, bindparam, cast, select

from docingest.changes.relay import bounds, head_position, pruned_position
from docingest.schemas import as_utc
from docingest.tables import CHANGES

# A change as the feed shows it (the wire `Change`), in its fields' order. The alternatives
# are read as the JSON text stored (orjson, compact) and embedded as they are.
_COLUMNS: Final = (
    CHANGES.c.position,
    CHANGES.c.document_id,
    CHANGES.c.version,
    CHANGES.c.kind,
    CHANGES.c.category,
    CHANGES.c.confidence,
    cast(CHANGES.c.alternatives, Text),
    CHANGES.c.model_version,
    CHANGES.c.label,
    CHANGES.c.at,
)


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
    (position, document_id, version, kind, category, confidence, alternatives, model, label, at) = (
        row
    )
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
        "at": as_utc(at),
    }


def read_changes(
    engine: Engine,
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
    scanned: the head read before the page, or, unfiltered, `limit` positions on.
    """
    statement = _page_statement(bool(kinds), bool(categories))
    with engine.connect() as connection:
        head, pruned = bounds(connection)
        start = pruned if after is None else after
        # Positions follow one another (the relay gives head+1, head+2, …; pruning takes a
        # prefix), so an unfiltered page is the next `limit` of them: a scan of that many rows
        # whatever plan the database picks (on stale statistics PostgreSQL scanned every
        # position up to the head and sorted them to keep 1,000).
        until = head if kinds or categories else min(head, start + limit)
        values: dict[str, Any] = {"start": start, "until": until, "limit": limit}
        values |= {"kinds": list(kinds)} if kinds else {}
        values |= {"categories": list(categories)} if categories else {}
        items = [_item(row) for row in connection.execute(statement, values).all()]
        # Read after the page: pruning only moves forward, so a cursor not below it now was not
        # below it when the page was read, and the page missed nothing.
        pruned = pruned_position(connection)
    if after is not None and not pruned <= after <= head:
        raise ChangesGoneError(after, pruned, head)
    if len(items) == limit:
        return ChangePage(items, int(items[-1]["position"]))
    return ChangePage(items, max(start, until))  # start > head: no `after`, all pruned


@cache
def _page_statement(kinds: bool, categories: bool) -> Select[Any]:
    """A page's statement, with or without each filter, built once (as the relay's reads)."""
    conditions = [
        CHANGES.c.position > bindparam("start"),
        CHANGES.c.position <= bindparam("until"),
    ]
    if kinds:
        conditions.append(CHANGES.c.kind.in_(bindparam("kinds", expanding=True)))
    if categories:
        conditions.append(CHANGES.c.category.in_(bindparam("categories", expanding=True)))
    page = select(*_COLUMNS).where(*conditions).order_by(CHANGES.c.position)
    return page.limit(bindparam("limit"))


def head(engine: Engine) -> int:
    """The newest position (0 before the first change)."""
    with engine.connect() as connection:
        return head_position(connection)
