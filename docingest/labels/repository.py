"""Every statement on people's labels: changed against the version and label revision read,
with a history row each, the review order (least confident first), and the agreement of labels
with the model's categories.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    case,
    func,
    insert,
    or_,
    select,
    update,
)

from docingest.changes.record import Kind, record_documents
from docingest.documents.store import LABEL_COLUMNS, stream_documents
from docingest.tables import DOCUMENTS, LABEL_HISTORY, Document, LabelChange


class _ChangedError(Exception):
    """The row changed between reading it and writing: roll the history row back."""


def change_label(
    engine: Engine,
    document_id: uuid.UUID,
    version: int,
    *,
    revision: int | None,
    history: dict[str, Any],
    columns: dict[str, Any] | None,
) -> int | None:
    """Write a label change and its history row in one transaction, only if the document is
    still stored at `version` and its label is still the one of `revision` (None: no label):
    two reviewers who read the same label cannot both replace it.

    `history` holds the `LABEL_HISTORY` columns but `id`; `columns` the document's label
    columns (and content digest) to set, None to remove the label. Returns the new revision
    (the history row's id), None when the row changed meanwhile: read it again.
    """
    values = dict.fromkeys(LABEL_COLUMNS) if columns is None else columns
    current = (
        DOCUMENTS.c.label.is_(None) if revision is None else DOCUMENTS.c.label_revision == revision
    )
    try:
        with engine.begin() as connection:
            added = insert(LABEL_HISTORY).values(history).returning(LABEL_HISTORY.c.id)
            new_revision = int(connection.execute(added).scalar_one())
            if columns is not None:
                values = values | {"label_revision": new_revision}
            statement = (
                update(DOCUMENTS)
                .where(
                    DOCUMENTS.c.id == document_id,
                    DOCUMENTS.c.version == version,
                    DOCUMENTS.c.deleted_at.is_(None),
                    current,
                )
                .values(values)
            )
            if not connection.execute(statement).rowcount:
                raise _ChangedError
            kind: Kind = "unlabelled" if columns is None else "labelled"
            record_documents(connection, kind, DOCUMENTS.c.id == document_id, history["changed_at"])
    except _ChangedError:
        return None
    return new_revision


def label_history(
    engine: Engine, document_id: uuid.UUID | None = None, *, limit: int | None = None
) -> list[LabelChange]:
    """Label changes, newest first (of one document, or all): who set, replaced or removed
    which label, when; what training or an audit reads to see past the current labels."""
    statement = select(LABEL_HISTORY).order_by(LABEL_HISTORY.c.id.desc()).limit(limit)
    if document_id is not None:
        statement = statement.where(LABEL_HISTORY.c.document_id == document_id)
    with engine.connect() as connection:
        return [LabelChange(**row._mapping) for row in connection.execute(statement)]


def labelled_documents(engine: Engine) -> list[tuple[str, str]]:
    """(content, label) of every labelled document, in id order: the same labels, same split."""
    statement = (
        select(DOCUMENTS.c.content, DOCUMENTS.c.label)
        .where(DOCUMENTS.c.label.is_not(None), DOCUMENTS.c.deleted_at.is_(None))
        .order_by(DOCUMENTS.c.id)
    )
    with engine.connect() as connection:
        return [(row.content, row.label) for row in connection.execute(statement)]


def label_names(engine: Engine) -> list[str]:
    """Every category a person has given, sorted."""
    statement = (
        select(DOCUMENTS.c.label).where(DOCUMENTS.c.label.is_not(None)).distinct()
    ).order_by(DOCUMENTS.c.label)
    with engine.connect() as connection:
        return list(connection.execute(statement).scalars())


def least_confident(
    engine: Engine, after: tuple[float, uuid.UUID] | None, limit: int
) -> Generator[Document, None, None]:
    """Unlabelled stored documents by rising confidence (then id), those after `after` only,
    streamed (`store.stream_documents`).

    No index serves this order: the upsert of every document would pay for one, while a
    reviewer asks for a page every few dozen labels (a top-N sort of the unlabelled rows).
    """
    confidence, id_ = DOCUMENTS.c.confidence, DOCUMENTS.c.id
    conditions: list[ColumnElement[bool]] = [
        DOCUMENTS.c.deleted_at.is_(None),
        DOCUMENTS.c.label.is_(None),
        confidence.is_not(None),
    ]
    if after is not None:
        conditions.append(or_(confidence > after[0], and_(confidence == after[0], id_ > after[1])))
    statement = select(DOCUMENTS).where(*conditions).order_by(confidence, id_).limit(limit)
    return stream_documents(engine, statement)


@dataclass(frozen=True, slots=True)
class Agreement:
    """Of a model's newest labelled documents, how many labels equal its category."""

    model_version: str
    labels: int
    agreeing: int


def label_agreement(engine: Engine, window: int) -> list[Agreement]:
    """Per model, over its `window` most recently labelled documents (a window function, on
    the labelled rows' index)."""
    newest = func.row_number().over(
        partition_by=DOCUMENTS.c.model_version, order_by=DOCUMENTS.c.labelled_at.desc()
    )
    recent = (
        select(
            DOCUMENTS.c.model_version,
            case((DOCUMENTS.c.label == DOCUMENTS.c.category, 1), else_=0).label("agrees"),
            newest.label("rank"),
        )
        .where(DOCUMENTS.c.label.is_not(None), DOCUMENTS.c.model_version.is_not(None))
        .subquery()
    )
    statement = (
        select(recent.c.model_version, func.count(), func.sum(recent.c.agrees))
        .where(recent.c.rank <= window)
        .group_by(recent.c.model_version)
        .order_by(recent.c.model_version)
    )
    with engine.connect() as connection:
        return [
            Agreement(str(version), int(labels), int(agreeing or 0))
            for version, labels, agreeing in connection.execute(statement)
        ]
