"""Every statement on people's labels: set against the version read, cleared, the review order
(least confident first), and the agreement of labels with the model's categories.
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
    or_,
    select,
    update,
)

from docingest.documents.store import LABEL_COLUMNS, stream_documents
from docingest.tables import DOCUMENTS, Document


def set_label(engine: Engine, document_id: uuid.UUID, version: int, label: dict[str, Any]) -> bool:
    """Label the document if `version` is the one stored (and not deleted); False otherwise.

    `label` holds the `LABEL_COLUMNS` and the content's digest, which rows stored before
    digests existed get here.
    """
    statement = (
        update(DOCUMENTS)
        .where(
            DOCUMENTS.c.id == document_id,
            DOCUMENTS.c.version == version,
            DOCUMENTS.c.deleted_at.is_(None),
        )
        .values(label)
    )
    with engine.begin() as connection:
        return bool(connection.execute(statement).rowcount)


def clear_label(engine: Engine, document_id: uuid.UUID) -> bool:
    """Remove the label of a stored document; False when no such document is stored."""
    statement = (
        update(DOCUMENTS)
        .where(DOCUMENTS.c.id == document_id, DOCUMENTS.c.deleted_at.is_(None))
        .values(dict.fromkeys(LABEL_COLUMNS))
    )
    with engine.begin() as connection:
        return bool(connection.execute(statement).rowcount)


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
