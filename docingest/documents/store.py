"""Where a document is stored and read back: every statement on documents and failures.

One home, one style (SQLAlchemy Core on the typed handles of `docingest.tables`), so that what
the workers write and what the API, the CLI, the stats and a reclassification read agree on
versions, tombstones and superseded failures. The callers keep their own logic (cursors, figures,
pacing, replay, status) and ask this module for rows.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)

from docingest.db import insert_for, newest_per_id
from docingest.schemas import DocumentQuery, as_utc, utcnow
from docingest.tables import DOCUMENTS, FAILURES, VERSION_FLOORS, Document, Failure

# --- storing ------------------------------------------------------------------------------------

# The columns of a person's label, kept or cleared together.
LABEL_COLUMNS = ("label", "label_by", "labelled_at", "label_version")


def content_digest(content: str) -> str:
    """What decides whether a new version keeps a label: the same text, the same digest."""
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()


def store_batch(
    engine: Engine,
    documents: Sequence[dict[str, Any]],
    failures: Sequence[dict[str, Any]] = (),
) -> None:
    """Store a classified batch and its failures in one transaction.

    Rows are column dicts of `Document` and `Failure`. Redelivered messages and out-of-order
    versions are harmless: each upsert only replaces a row with a *newer* version
    (`DO UPDATE … WHERE version < excluded.version`), so the newest always wins.
    """
    rows = [*documents, *failures]
    if not rows:
        return
    with engine.begin() as connection:
        for table, table_rows in ((DOCUMENTS, documents), (FAILURES, failures)):
            if table_rows:
                statement = _upsert_statement(connection.dialect.name, table)
                connection.execute(statement, _sorted_newest(table_rows))
        raise_floor(connection, max(row["version"] for row in rows))


def _sorted_newest(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each id once, in id order: concurrent batches sharing ids then lock their rows in the same
    order, so PostgreSQL never has two of them wait for each other (a deadlock)."""
    return sorted(newest_per_id(rows), key=lambda row: row["id"])


@cache
def _upsert_statement(dialect_name: str, table: Table) -> Insert:
    """Built once per process: constructing the statement costs more than running a small batch.

    A document row is replaced only by a newer version. A failure row also by the same version
    (a replay that failed again), and it counts the attempts. Every column is replaced, so a
    column a row leaves out becomes NULL: a worker's row (no `deleted_at`) that is newer than a
    tombstone brings the document back.

    A document's label stays only if the new version's content digest is the stored one (a
    resend of the same text): decided inside the statement, so a batch is still one statement.
    A tombstone has no digest, so a deletion drops the label.
    """
    insert = insert_for(dialect_name, table)
    newer = insert.excluded.version
    kept = {"id", "created_at"} if table is DOCUMENTS else {"id", "attempts"}
    updates = {c.name: insert.excluded[c.name] for c in table.columns if c.name not in kept}
    if table is DOCUMENTS:
        same_content = table.c.content_sha256 == insert.excluded.content_sha256
        for name in LABEL_COLUMNS:
            updates[name] = case((same_content, table.c[name]), else_=None)
        where = table.c.version < newer
    else:
        updates["attempts"] = table.c.attempts + 1
        where = table.c.version <= newer
    statement: Insert = insert.on_conflict_do_update(
        index_elements=[table.c.id], set_=updates, where=where
    )
    return statement


def store_tombstone(engine: Engine, document_id: uuid.UUID, version: int) -> None:
    """Delete a document by storing, under `version`, a row with its content emptied and its
    classification cleared (the columns left out are stored NULL): the versioned upsert keeps
    older queued versions from bringing it back."""
    now = utcnow()
    row = {
        "id": document_id,
        "content": "",
        "version": version,
        "created_at": now,
        "updated_at": now,
        "deleted_at": now,
    }
    store_batch(engine, [row])


def update_classifications(engine: Engine, updates: Sequence[dict[str, Any]]) -> int:
    """Replace the classification of each (id, version) still stored at that version and still
    unlabelled: a person's label was given against the classification it has.

    Rows are `Document` column dicts with `id` and `version`; returns how many were updated.
    """
    if not updates:
        return 0
    fields = [name for name in updates[0] if name not in {"id", "version"}]
    statement = (
        update(DOCUMENTS)
        .where(
            DOCUMENTS.c.id == bindparam("_id"),
            DOCUMENTS.c.version == bindparam("_version"),
            DOCUMENTS.c.label.is_(None),
        )
        .values({name: bindparam(name) for name in fields})
    )
    rows = [
        {name: row[name] for name in fields} | {"_id": row["id"], "_version": row["version"]}
        for row in updates
    ]
    with engine.begin() as connection:
        return connection.execute(statement, rows).rowcount


# --- versions -----------------------------------------------------------------------------------


def raise_floor(connection: Connection, version: int) -> None:
    """Record in the storing transaction how high this process's stored versions went."""
    statement = _floor_statement(connection.dialect.name)
    row = {"writer": _writer(os.getpid()), "version": version, "updated_at": utcnow()}
    connection.execute(statement, row)


@cache
def _floor_statement(dialect_name: str) -> Any:
    """Built once per process, like the batch upsert: building costs more than running it."""
    insert = insert_for(dialect_name, VERSION_FLOORS)
    return insert.on_conflict_do_update(
        index_elements=[VERSION_FLOORS.c.writer],
        set_={"version": insert.excluded.version, "updated_at": insert.excluded.updated_at},
        where=VERSION_FLOORS.c.version < insert.excluded.version,
    )


@cache
def _writer(pid: int) -> str:
    """This process's row; by pid, so that a forked worker process gets its own."""
    return f"{socket.gethostname()}:{pid}"


def version_floor(engine: Engine) -> int:
    """The highest version ever stored (0 on a new database)."""
    with engine.connect() as connection:
        statement = select(func.max(VERSION_FLOORS.c.version))
        return int(connection.execute(statement).scalar() or 0)


def stored_versions(engine: Engine, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Each id's highest version stored, as a document (or tombstone) or as a failure."""
    found: dict[uuid.UUID, int] = {}
    with engine.connect() as connection:
        for table in (DOCUMENTS, FAILURES):
            statement = select(table.c.id, table.c.version).where(table.c.id.in_(ids))
            for document_id, version in connection.execute(statement):
                found[document_id] = max(found.get(document_id, -1), int(version))
    return found


# --- reading documents --------------------------------------------------------------------------


def get_document(engine: Engine, document_id: uuid.UUID) -> Document | None:
    """The stored row of the id, tombstones included."""
    statement = select(DOCUMENTS).where(DOCUMENTS.c.id == document_id)
    with engine.connect() as connection:
        row = connection.execute(statement).one_or_none()
    return _as_document(row) if row is not None else None


def find_documents(
    engine: Engine, query: DocumentQuery, *, after: uuid.UUID | None, limit: int
) -> list[Document]:
    """Up to `limit` documents matching `query`, in id order, those after `after` only."""
    conditions = _query_conditions(query)
    if after is not None:
        conditions.append(DOCUMENTS.c.id > after)
    statement = select(DOCUMENTS).where(*conditions).order_by(DOCUMENTS.c.id).limit(limit)
    with engine.connect() as connection:
        return [_as_document(row) for row in connection.execute(statement)]


def _query_conditions(query: DocumentQuery) -> list[ColumnElement[bool]]:
    deleted = DOCUMENTS.c.deleted_at
    conditions: list[ColumnElement[bool]] = [
        deleted.is_not(None) if query.status == "deleted" else deleted.is_(None)
    ]
    if query.category is not None:
        conditions.append(DOCUMENTS.c.category == query.category)
    if query.model_version is not None:
        conditions.append(DOCUMENTS.c.model_version == query.model_version)
    conditions += _label_conditions(query)
    for column, after, before in (
        (DOCUMENTS.c.created_at, query.created_after, query.created_before),
        (DOCUMENTS.c.updated_at, query.updated_after, query.updated_before),
    ):
        # Stored times are UTC and SQLite compares them as text: bind UTC (naive means UTC).
        if after is not None:
            conditions.append(column >= as_utc(after))
        if before is not None:
            conditions.append(column < as_utc(before))
    return conditions


def _label_conditions(query: DocumentQuery) -> list[ColumnElement[bool]]:
    label = DOCUMENTS.c.label
    conditions: list[ColumnElement[bool]] = []
    if query.labelled is not None:
        conditions.append(label.is_not(None) if query.labelled else label.is_(None))
    if query.max_confidence is not None:
        conditions.append(DOCUMENTS.c.confidence <= query.max_confidence)
    if query.disagreement is not None:
        # A row without a category (none yet) disagrees with any label.
        agrees = label == func.coalesce(DOCUMENTS.c.category, "")
        conditions += [label.is_not(None), ~agrees if query.disagreement else agrees]
    return conditions


def current_contents(engine: Engine, ids: Sequence[str]) -> list[tuple[uuid.UUID, int, str]]:
    """(id, version, content) of the stored, not deleted documents among `ids`."""
    statement = select(DOCUMENTS.c.id, DOCUMENTS.c.version, DOCUMENTS.c.content).where(
        DOCUMENTS.c.id.in_([uuid.UUID(value) for value in ids]),
        DOCUMENTS.c.deleted_at.is_(None),
    )
    with engine.connect() as connection:
        return [(row.id, row.version, row.content) for row in connection.execute(statement)]


def _as_document(row: Row[Any]) -> Document:
    return Document(**row._mapping)


# --- labels -------------------------------------------------------------------------------------


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
) -> list[Document]:
    """Unlabelled stored documents by rising confidence (then id), those after `after` only.

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
    with engine.connect() as connection:
        return [_as_document(row) for row in connection.execute(statement)]


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


# --- failures -----------------------------------------------------------------------------------


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


# --- figures ------------------------------------------------------------------------------------


def count_categories(engine: Engine) -> dict[str, int]:
    """Stored documents per category, tombstones left out."""
    statement = (
        select(DOCUMENTS.c.category, func.count())
        .where(DOCUMENTS.c.deleted_at.is_(None))
        .group_by(DOCUMENTS.c.category)
        .order_by(DOCUMENTS.c.category)
    )
    with engine.connect() as connection:
        return {str(category): int(count) for category, count in connection.execute(statement)}


def stored_per_minute(engine: Engine, since: datetime) -> dict[datetime, int]:
    """Documents stored (not deleted) since `since` per UTC minute; minutes without any left out."""
    with engine.connect() as connection:
        minute = _minute_of(DOCUMENTS.c.updated_at, connection.dialect.name)
        statement = (
            select(minute, func.count())
            .where(DOCUMENTS.c.updated_at >= since, DOCUMENTS.c.deleted_at.is_(None))
            .group_by(minute)
        )
        return {_as_minute(value): int(count) for value, count in connection.execute(statement)}


def _minute_of(column: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.date_trunc("minute", column)
    return func.strftime("%Y-%m-%d %H:%M:00", column)


def _as_minute(value: datetime | str) -> datetime:
    """PostgreSQL answers a timestamp, SQLite text; both are UTC."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return as_utc(parsed)


# --- selections (reclassification) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selection:
    """Stored documents to reclassify: not deleted, not labelled, not on `model_version` yet,
    and matching."""

    model_version: str
    category: str | None = None
    classified_before: datetime | None = None

    def where(self) -> list[ColumnElement[bool]]:
        conditions = [
            DOCUMENTS.c.deleted_at.is_(None),
            DOCUMENTS.c.label.is_(None),
            or_(
                DOCUMENTS.c.model_version.is_(None), DOCUMENTS.c.model_version != self.model_version
            ),
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
