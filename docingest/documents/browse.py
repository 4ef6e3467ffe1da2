"""Browsing stored documents a page at a time.

Pages are keyed on the primary key: `id > cursor ORDER BY id`. An id never changes, so a
document that exists for the whole walk is listed exactly once, however often it is updated
meanwhile (with its state when its page was read); a document that arrives meanwhile is listed
if its id sorts after the cursor. Ordering by `updated_at` instead would list an updated
document twice, and could skip one whose worker committed an older timestamp late.
"""

from __future__ import annotations

import base64
import uuid

from sqlalchemy import Engine

from docingest.documents import store
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
