"""People's labels, and the documents a reviewer sees first.

A label is the true category of one stored *version* of a document: set against the version
the person saw, so that a label for a text that changed meanwhile is refused rather than put on
the new text. The worker's upsert keeps a label across a new version only when the content is
the same (`store._upsert_statement`), and reclassification leaves labelled documents alone, so a
label always sits beside the classification it was given against. Their SQL is in `store.py`.

A label is changed against its revision (the id of the history row that set it): replacing or
removing it needs the revision read, so a second reviewer cannot silently overwrite the first;
every change leaves a history row (`labels.repository.label_history`).
"""

from __future__ import annotations

import math
import struct
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from docingest.documents import store
from docingest.documents.browse import fill_page, pack_cursor, unpack_cursor
from docingest.labels.repository import (
    change_label,
    label_history,
    label_names,
    least_confident,
)
from docingest.model import registry
from docingest.schemas import LabelIn, utcnow
from docingest.tables import Document, LabelChange

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


class LabelPreconditionError(LabelConflictError):
    """The label to replace or remove is not the one the person read (`If-Match`)."""


def _check_revision(document: Document, revision: int | None) -> None:
    """Replacing or removing a label needs its revision; a first label needs none, so two
    reviewers racing on one unlabelled document cannot both win."""
    if revision == document.label_revision:
        return
    if revision is None:
        raise LabelPreconditionError(
            f"the document is labelled {document.label!r} by {document.label_by} (revision "
            f'{document.label_revision}): send If-Match: "{document.label_revision}" to change it'
        )
    now = "no label" if document.label is None else f"revision {document.label_revision}"
    raise LabelPreconditionError(
        f"revision {revision} is not the document's label ({now} now): read it again"
    )


def put_label(
    engine: Engine, document_id: uuid.UUID, label: LabelIn, by: str, revision: int | None = None
) -> Document | None:
    """Label the stored version (the one `label.version` names, when it names one), replacing
    the label of `revision` (None: the document has no label).

    Returns the labelled document, None when none is stored; LabelConflictError when the
    version sent is not the stored one or the label is not the one of `revision`. The content
    digest is taken here too, so that documents stored before digests existed keep their label
    across a resend of the same text.
    """
    for _ in range(ATTEMPTS):
        document = _stored(engine, document_id)
        if document is None:
            return None
        if label.version is not None and label.version != document.version:
            raise _conflict(label.version, document.version)
        _check_revision(document, revision)
        now = utcnow()
        columns: dict[str, Any] = {
            "label": label.category,
            "label_by": by,
            "labelled_at": now,
            "label_version": document.version,
            "content_sha256": store.content_digest(document.content),
        }
        action = "set" if document.label is None else "replaced"
        new = _change(engine, document, revision, action, label.category, by, now, columns)
        if new is not None:
            for name, value in (columns | {"label_revision": new}).items():
                setattr(document, name, value)
            return document
    raise _kept_changing(document_id)


def remove_label(
    engine: Engine, document_id: uuid.UUID, by: str, revision: int | None = None
) -> bool:
    """Remove the label of `revision`; True when the document is stored (labelled or not),
    LabelPreconditionError when its label is not the one of `revision`."""
    for _ in range(ATTEMPTS):
        document = _stored(engine, document_id)
        if document is None:
            return False
        if document.label is None:
            return True
        _check_revision(document, revision)
        if _change(engine, document, revision, "removed", None, by, utcnow(), None) is not None:
            return True
    raise _kept_changing(document_id)


def history(engine: Engine, document_id: uuid.UUID, limit: int) -> list[LabelChange] | None:
    """The document's label changes, newest first; None when no document is stored."""
    if store.get_document(engine, document_id) is None:
        return None
    return label_history(engine, document_id, limit=limit)


def _stored(engine: Engine, document_id: uuid.UUID) -> Document | None:
    document = store.get_document(engine, document_id)
    return None if document is None or document.deleted_at is not None else document


def _change(
    engine: Engine,
    document: Document,
    revision: int | None,
    action: str,
    category: str | None,
    by: str,
    at: datetime,
    columns: dict[str, Any] | None,
) -> int | None:
    history = {
        "document_id": document.id,
        "document_version": document.version,
        "action": action,
        "label": category,
        "previous": document.label,
        "changed_by": by,
        "changed_at": at,
    }
    return change_label(
        engine, document.id, document.version, revision=revision, history=history, columns=columns
    )


def _kept_changing(document_id: uuid.UUID) -> LabelConflictError:
    return LabelConflictError(f"{document_id} or its label kept changing; try again")


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
