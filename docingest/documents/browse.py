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
import uuid

from sqlalchemy import Engine

from docingest.documents import store
from docingest.ledger import Ledger
from docingest.schemas import DocumentQuery
from docingest.tables import Document


def encode_cursor(document_id: uuid.UUID) -> str:
    return pack_cursor(document_id.bytes)


def decode_cursor(cursor: str) -> uuid.UUID:
    """Any cursor of `schemas.CURSOR_PATTERN` (checked when the query is parsed) is a position:
    22 base64 characters are 16 bytes, and any 16 bytes are an id to start after."""
    return uuid.UUID(bytes=unpack_cursor(cursor))


def pack_cursor(key: bytes) -> str:
    """A page's key as URL-safe text: a document id here, the review queue's in `labels.py`."""
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def unpack_cursor(cursor: str) -> bytes:
    """`pack_cursor`'s bytes back, from text its pattern (in `schemas`) already checked."""
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


def list_documents(engine: Engine, query: DocumentQuery) -> tuple[list[Document], str | None]:
    """One page matching `query`, and the cursor of the next page (None after the last)."""
    after = decode_cursor(query.cursor) if query.cursor is not None else None
    found = store.find_documents(engine, query, after=after, limit=query.limit + 1)
    page = found[: query.limit]
    more = len(found) > query.limit
    return page, encode_cursor(page[-1].id) if more else None


def delete_document(engine: Engine, ledger: Ledger, document_id: uuid.UUID) -> bool:
    """Write a tombstone under a new version; False when there is nothing to delete.

    Something to delete: a stored (not deleted) row, a failure no row supersedes, or a version
    still queued. The ledger entry is settled even if the write fails, so that the id does not
    read as queued forever. Ledger unreachable: `LedgerUnavailableError` (a 503).
    """
    if not _deletable(engine, ledger, document_id):
        return False
    version, _ = ledger.reserve([document_id])
    try:
        store.store_tombstone(engine, document_id, version)
    finally:
        ledger.settle([(document_id, version)])
    return True


def _deletable(engine: Engine, ledger: Ledger, document_id: uuid.UUID) -> bool:
    document = store.get_document(engine, document_id)
    if document is not None and document.deleted_at is None:
        return True
    failure = store.get_failure(engine, document_id)
    if failure is not None and (document is None or document.version < failure.version):
        return True
    return ledger.pending_version(document_id) is not None
