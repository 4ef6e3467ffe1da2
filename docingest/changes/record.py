"""Every statement that writes a change row, each run inside the transaction of the document
write that made it: the change commits, or rolls back, with the write.

The writers (`documents/store.py`, `labels/repository.py`) call these with their connection;
the rows get no position here: only the relay numbers them, once committed (`relay.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import ColumnElement, Connection, DateTime, insert, literal, select

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


def record_written(connection: Connection, written: Sequence[Any], at: datetime) -> None:
    """One change per row an upsert wrote (its RETURNING rows, `RETURNED`): `deleted` for a
    tombstone, `stored` for a new document or version. One statement, none if nothing won."""
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
