"""Every statement on failures: a failed version is kept until a newer version of its id is
stored, and taken back out when it is replayed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    Engine,
    Row,
    Select,
    delete,
    func,
    or_,
    select,
    tuple_,
)

from docingest.tables import DOCUMENTS, FAILURES, Failure


def get_failure(engine: Engine, document_id: uuid.UUID) -> Failure | None:
    """The failure recorded for the id, superseded or not."""
    statement = select(FAILURES).where(FAILURES.c.id == document_id)
    with engine.connect() as connection:
        row = connection.execute(statement).one_or_none()
    return _as_failure(row) if row is not None else None


def _unsuperseded_failures() -> Select[Any]:
    """Failures with no stored version at least as new: the ones still worth replaying."""
    return (
        select(FAILURES)
        .select_from(FAILURES.outerjoin(DOCUMENTS, DOCUMENTS.c.id == FAILURES.c.id))
        .where(or_(DOCUMENTS.c.version.is_(None), DOCUMENTS.c.version < FAILURES.c.version))
        .order_by(FAILURES.c.failed_at, FAILURES.c.id)
    )


def list_failures(engine: Engine, *, limit: int, offset: int = 0) -> list[Failure]:
    """Unsuperseded failures, oldest first."""
    statement = _unsuperseded_failures().limit(limit).offset(offset)
    with engine.connect() as connection:
        return [_as_failure(row) for row in connection.execute(statement)]


def count_failures(engine: Engine) -> int:
    unsuperseded = _unsuperseded_failures().order_by(None).subquery()
    with engine.connect() as connection:
        statement = select(func.count()).select_from(unsuperseded)
        return int(connection.execute(statement).scalar_one())


def take_failures(
    engine: Engine, requeue: Callable[[Sequence[Failure]], None], *, batch: int = 500
) -> int:
    """Hand the unsuperseded failures found now to `requeue`, a batch at a time.

    The list is a snapshot: a document that fails again during the replay is not replayed
    again by it. Each batch is read, requeued and deleted in one transaction, and a row is
    deleted only as it was read (same version and attempts): a worker that failed the replayed
    document again meanwhile has rewritten the row, which then stays visible.
    """
    unsuperseded = _unsuperseded_failures().subquery()
    keys_statement = select(unsuperseded.c.id, unsuperseded.c.version, unsuperseded.c.attempts)
    with engine.connect() as connection:
        keys = [tuple(key) for key in connection.execute(keys_statement)]
    taken = 0
    for start in range(0, len(keys), batch):
        as_read = tuple_(FAILURES.c.id, FAILURES.c.version, FAILURES.c.attempts).in_(
            keys[start : start + batch]
        )
        with engine.begin() as connection:
            failures = [
                _as_failure(row) for row in connection.execute(select(FAILURES).where(as_read))
            ]
            if failures:
                connection.execute(delete(FAILURES).where(as_read))
                requeue(failures)
        taken += len(failures)
    return taken


def _as_failure(row: Row[Any]) -> Failure:
    return Failure(**row._mapping)
