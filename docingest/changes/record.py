"""Every statement that writes a change row, each run inside the transaction of the document
write that made it: the change commits, or rolls back, with the write.

The writers (`documents/store.py`, `labels/repository.py`) call these with their connection;
the rows get no position here: only the relay numbers them, once committed (`relay.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Insert,
    bindparam,
    case,
    insert,
    literal,
    select,
)

from docingest.tables import CHANGES, DOCUMENTS

Kind = Literal["stored", "deleted", "labelled", "unlabelled", "reclassified"]
KINDS: Final[tuple[Kind, ...]] = ("stored", "deleted", "labelled", "unlabelled", "reclassified")

# What a change tells of its document, beside its id and version: a consumer needs no second call.
DOCUMENT_FIELDS: Final = ("category", "confidence", "alternatives", "model_version", "label")
# The documents' columns a writer's RETURNING (or a select) gives to make its changes.
RETURNED: Final = (
    DOCUMENTS.c.id,
    DOCUMENTS.c.version,
    DOCUMENTS.c.deleted_at,
    *(DOCUMENTS.c[name] for name in DOCUMENT_FIELDS),
)


# The bound parameter that carries a change's time in `with_changes`' statement.
CHANGED_AT: Final = "changed_at"


def with_changes(upsert: Insert) -> Insert:
    """PostgreSQL: `upsert` (explicit values, run with executemany) and the changes of the rows
    it wrote as one statement, `WITH written AS (INSERT … RETURNING …) INSERT INTO changes
    SELECT … FROM written`: a row the upsert's condition refused returns nothing, so makes no
    change. One statement per batch as before the feed; each row passes its CHANGED_AT."""
    written = upsert.returning(*RETURNED).cte("written")
    kind = case((written.c.deleted_at.is_not(None), literal("deleted")), else_=literal("stored"))
    rows = select(
        written.c.id,
        written.c.version,
        kind,
        *(written.c[name] for name in DOCUMENT_FIELDS),
        bindparam(CHANGED_AT, type_=DateTime(timezone=True)),
    ).order_by(written.c.id)  # the changes' ids in the documents' order, as the rows were locked
    names = ("document_id", "version", "kind", *DOCUMENT_FIELDS, "at")
    statement: Insert = insert(CHANGES).from_select(names, rows).add_cte(written)
    return statement


def record_written(connection: Connection, written: Sequence[Any], at: datetime) -> None:
    """One change per row an upsert wrote (its RETURNING rows, `RETURNED`): `deleted` for a
    tombstone, `stored` for a new document or version. One statement, none if nothing won.
    Where DML cannot sit in a CTE (SQLite); PostgreSQL runs `with_changes`."""
    if not written:
        return
    rows = [
        {
            "document_id": row.id,
            "version": row.version,
            "kind": "deleted" if row.deleted_at is not None else "stored",
            **{name: getattr(row, name) for name in DOCUMENT_FIELDS},
            "at": at,
        }
        for row in written
    ]
    connection.execute(insert(CHANGES), rows)


def record_documents(
    connection: Connection, kind: Kind, where: ColumnElement[bool], at: datetime
) -> None:
    """A change of `kind` for each document `where` selects, as the transaction now sees it:
    `INSERT … SELECT`, after the statement that changed them (whose row locks it holds)."""
    names = ("document_id", "version", "kind", *DOCUMENT_FIELDS, "at")
    columns = (
        DOCUMENTS.c.id,
        DOCUMENTS.c.version,
        literal(kind),
        *(DOCUMENTS.c[name] for name in DOCUMENT_FIELDS),
        literal(at, DateTime(timezone=True)),
    )
    connection.execute(
        insert(CHANGES).from_select(names, select(*columns).where(where).order_by(DOCUMENTS.c.id))
    )
