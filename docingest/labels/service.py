"""People's labels, and the documents a reviewer sees first.

A label is the true category of one stored *version* of a document: set against the version
the person saw, so that a label for a text that changed meanwhile is refused rather than put on
the new text. The worker's upsert keeps a label across a new version only when the content is
the same (`store._upsert_statement`), and reclassification leaves labelled documents alone, so a
label always sits beside the classification it was given against. Their SQL is in `store.py`.
"""

from __future__ import annotations

import math
import struct
import uuid
from typing import Any

from sqlalchemy import Engine

from docingest.documents import store
from docingest.documents.browse import fill_page, pack_cursor, unpack_cursor
from docingest.labels.repository import label_names, least_confident, set_label
from docingest.model import registry
from docingest.schemas import LabelIn, utcnow
from docingest.tables import Document

# A newer version stored between reading the document and labelling it: read it again.
ATTEMPTS = 3


class LabelConflictError(Exception):
    """The label names a version that is not the one stored (older, or not stored yet), or
    newer versions kept arriving while labelling."""


def _conflict(sent: int, stored: int) -> LabelConflictError:
    relation = "older than" if sent < stored else "newer than"
    return LabelConflictError(
        f"version {sent} is {relation} the version stored ({stored}); read the document again "
        "and label what it says now"
    )


def put_label(engine: Engine, document_id: uuid.UUID, label: LabelIn, by: str) -> Document | None:
    """Label the stored version (the one `label.version` names, when it names one).

    Returns the labelled document, None when none is stored; LabelConflictError when the
    version sent is not the stored one. The content digest is taken here too, so that documents
    stored before digests existed keep their label across a resend of the same text.
    """
    for _ in range(ATTEMPTS):
        document = store.get_document(engine, document_id)
        if document is None or document.deleted_at is not None:
            return None
        if label.version is not None and label.version != document.version:
            raise _conflict(label.version, document.version)
        values: dict[str, Any] = {
            "label": label.category,
            "label_by": by,
            "labelled_at": utcnow(),
            "label_version": document.version,
            "content_sha256": store.content_digest(document.content),
        }
        if set_label(engine, document_id, document.version, values):
            for name, value in values.items():
                setattr(document, name, value)
            return document
    raise LabelConflictError(f"newer versions of {document_id} kept arriving; try again")


def review_queue(
    engine: Engine, cursor: str | None, limit: int, *, max_bytes: int
) -> tuple[list[Document], str | None]:
    """Unlabelled documents, least confident first, at most `max_bytes` of them
    (`browse.fill_page`), and the cursor of the next page."""
    after = _decode(cursor) if cursor is not None else None
    found = least_confident(engine, after, limit + 1)
    page, more = fill_page(found, limit, max_bytes)
    return page, _encode(page[-1]) if more else None


def categories(engine: Engine) -> list[str]:
    """What a reviewer may pick at once: the active model's categories and every label given."""
    try:
        known = set(registry.card(engine).get("labels", []))
    except registry.RegistryError:  # no model active yet
        known = set()
    return sorted(known | set(label_names(engine)))


def _encode(document: Document) -> str:
    return pack_cursor(struct.pack(">d", document.confidence) + document.id.bytes)


def _decode(cursor: str) -> tuple[float, uuid.UUID]:
    """Any cursor of `schemas.REVIEW_CURSOR_PATTERN` is a position: 8 bytes of confidence and
    16 of id. A NaN, which no page hands out, sorts after every confidence, as in PostgreSQL."""
    key = unpack_cursor(cursor)
    (confidence,) = struct.unpack(">d", key[:8])
    return (math.inf if math.isnan(confidence) else confidence), uuid.UUID(bytes=key[8:])
