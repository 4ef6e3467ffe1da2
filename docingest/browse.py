"""Browsing stored documents a page at a time, and deleting them with tombstones.

Pages are keyed on the primary key: `id > cursor ORDER BY id`. An id never changes, so a
document that exists for the whole walk is listed exactly once, however often it is updated
meanwhile (with its state when its page was read); a document that arrives meanwhile is listed
if its id sorts after the cursor. Ordering by `updated_at` instead would list an updated
document twice, and could skip one whose worker committed an older timestamp late.

A delete is a new version of the document, taken from the ledger like any update: a tombstone
row (content emptied, classification cleared, `deleted_at` set) written with the workers'
versioned upsert. An older version still queued cannot bring the document back; a newer POST
replaces the tombstone, and its row, which has no `deleted_at`, revives it.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine
from sqlmodel import Session, col, select

from docingest.db import get_document, get_failure, store_batch
from docingest.ledger import Ledger
from docingest.schemas import DocumentQuery, as_utc, utcnow
from docingest.tables import Document


class InvalidCursorError(ValueError):
    """The cursor is not one this API handed out."""


def encode_cursor(document_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(document_id.bytes).decode().rstrip("=")


def decode_cursor(cursor: str) -> uuid.UUID:
    try:
        return uuid.UUID(bytes=base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidCursorError(cursor) from None


def list_documents(session: Session, query: DocumentQuery) -> tuple[Sequence[Document], str | None]:
    """One page matching `query`, and the cursor of the next page (None after the last)."""
    statement = select(Document).where(*_conditions(query))
    if query.cursor is not None:
        statement = statement.where(col(Document.id) > decode_cursor(query.cursor))
    found = session.exec(statement.order_by(col(Document.id)).limit(query.limit + 1)).all()
    page = found[: query.limit]
    more = len(found) > query.limit
    return page, encode_cursor(page[-1].id) if more else None


def _conditions(query: DocumentQuery) -> list[ColumnElement[bool]]:
    deleted = col(Document.deleted_at)
    conditions: list[ColumnElement[bool]] = [
        deleted.is_not(None) if query.status == "deleted" else deleted.is_(None)
    ]
    if query.category is not None:
        conditions.append(col(Document.category) == query.category)
    if query.model_version is not None:
        conditions.append(col(Document.model_version) == query.model_version)
    for column, after, before in (
        (col(Document.created_at), query.created_after, query.created_before),
        (col(Document.updated_at), query.updated_after, query.updated_before),
    ):
        # Stored times are UTC and SQLite compares them as text: bind UTC (naive means UTC).
        if after is not None:
            conditions.append(column >= as_utc(after))
        if before is not None:
            conditions.append(column < as_utc(before))
    return conditions


def is_tombstone(session: Session, document_id: uuid.UUID) -> bool:
    document = get_document(session, document_id)
    return document is not None and document.deleted_at is not None


def delete_document(engine: Engine, ledger: Ledger, document_id: uuid.UUID) -> bool:
    """Write a tombstone under a new version; False when there is nothing to delete.

    Something to delete: a stored (not deleted) row, a failure no row supersedes, or a version
    still queued. The ledger entry is settled even if the write fails, so that the id does not
    read as queued forever. Ledger unreachable: `LedgerUnavailableError` (a 503).
    """
    with Session(engine) as session:
        if not _deletable(session, ledger, document_id):
            return False
    version, _ = ledger.reserve([document_id])
    try:
        store_batch(engine, [tombstone(document_id, version, utcnow())])
    finally:
        ledger.settle([(document_id, version)])
    return True


def _deletable(session: Session, ledger: Ledger, document_id: uuid.UUID) -> bool:
    document = get_document(session, document_id)
    if document is not None and document.deleted_at is None:
        return True
    failure = get_failure(session, document_id)
    if failure is not None and (document is None or document.version < failure.version):
        return True
    return ledger.pending_version(document_id) is not None


def tombstone(document_id: uuid.UUID, version: int, now: datetime) -> dict[str, Any]:
    """The row of a deletion; the columns left out (category, confidence…) are stored NULL."""
    return {
        "id": document_id,
        "content": "",
        "version": version,
        "created_at": now,
        "updated_at": now,
        "deleted_at": now,
    }
