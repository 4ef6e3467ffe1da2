"""Which stored documents a reclassification still has to bring up to date with a model."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Engine,
    func,
    or_,
    select,
)

from docingest.tables import DOCUMENTS, MODELS


def superseded_by(target: str) -> ColumnElement[bool]:
    """Documents whose classification `target` may replace: none yet, or one by any model but
    `target` and those activated after it (a model missing from the registry included). A run
    for an older target must not rewrite documents back while a newer model is active."""
    target_activation = (
        select(MODELS.c.activation).where(MODELS.c.version == target).scalar_subquery()
    )
    newer = select(MODELS.c.version).where(
        or_(MODELS.c.version == target, MODELS.c.activation > target_activation)
    )
    return or_(DOCUMENTS.c.model_version.is_(None), DOCUMENTS.c.model_version.not_in(newer))


@dataclass(frozen=True, slots=True)
class Selection:
    """Stored documents to reclassify: not deleted, not labelled, classified by a model older
    than `model_version`, and matching."""

    model_version: str
    category: str | None = None
    classified_before: datetime | None = None

    def where(self) -> list[ColumnElement[bool]]:
        conditions = [
            DOCUMENTS.c.deleted_at.is_(None),
            DOCUMENTS.c.label.is_(None),
            superseded_by(self.model_version),
        ]
        if self.category is not None:
            conditions.append(DOCUMENTS.c.category == self.category)
        if self.classified_before is not None:
            conditions.append(DOCUMENTS.c.updated_at < self.classified_before)
        return conditions


def count_selected(engine: Engine, selection: Selection) -> int:
    """How many documents the selection still holds: a run is done at 0."""
    statement = select(func.count()).select_from(DOCUMENTS).where(*selection.where())
    with engine.connect() as connection:
        return int(connection.execute(statement).scalar_one())


def selected_ids(
    engine: Engine, selection: Selection, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """Keyset pagination by id: stable while the run changes the rows it has passed."""
    conditions = selection.where()
    if after is not None:
        conditions.append(DOCUMENTS.c.id > after)
    statement = select(DOCUMENTS.c.id).where(*conditions).order_by(DOCUMENTS.c.id).limit(limit)
    with engine.connect() as connection:
        return list(connection.execute(statement).scalars())
