"""Browsing stored documents a page at a time.

Pages are keyed on the primary key: `id > cursor ORDER BY id`. An id never changes, so a
document that exists for the whole walk is listed exactly once, however often it is updated
meanwhile (with its state when its page was read); a document that arrives meanwhile is listed
if its id sorts after the cursor. Ordering by `updated_at` instead would list an updated
document twice, and could skip one whose worker committed an older timestamp late.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Generator

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


# What an item's fields besides its content add to an answer, about (id, times, category,
# alternatives, label, as JSON).
ITEM_BYTES = 512


def answer_bytes(document: Document) -> int:
    """About what `document` adds to an answer: its content's UTF-8 size and its fields."""
    content = document.content
    return ITEM_BYTES + (len(content) if content.isascii() else len(content.encode()))


def fill_page(
    rows: Generator[Document, None, None], limit: int, max_bytes: int
) -> tuple[list[Document], bool]:
    """Up to `limit` of `rows` (fetched for `limit + 1`), no more than `max_bytes` of answer
    unless the first alone is larger (a page always holds one); and whether a row was left for
    the next page. A count alone bounds nothing: 1,000 documents of 1 M characters are 1 GB.
    Stops reading at the first row left out, and closes `rows`."""
    page: list[Document] = []
    size = 0
    with contextlib.closing(rows):
        for row in rows:
            size += answer_bytes(row)
            if len(page) == limit or (page and size > max_bytes):
                return page, True
            page.append(row)
    return page, False


def list_documents(
    engine: Engine, query: DocumentQuery, *, max_bytes: int
) -> tuple[list[Document], str | None]:
    """One page matching `query`, of at most `max_bytes` (`fill_page`), and the cursor of the
    next page (None after the last)."""
    after = decode_cursor(query.cursor) if query.cursor is not None else None
    found = store.find_documents(engine, query, after=after, limit=query.limit + 1)
    page, more = fill_page(found, query.limit, max_bytes)
    return page, encode_cursor(page[-1].id) if more else None
