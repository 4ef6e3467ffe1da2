"""Where a document is stored and read back: every statement on the documents table.

SQLAlchemy Core on the typed handles of `docingest.tables`, so that what the workers write and
what the API, the CLI and a reclassification read agree on versions and tombstones. Each other
table's statements live with the package that owns it (`failures/repository.py`,
`labels/repository.py`, `ledger/floor.py`, `observe/counts.py`, `model/selection.py`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Generator, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_dumps
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    Insert,
    MetaData,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    case,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from docingest.changes.record import (
    CHANGED_AT,
    RETURNED,
    record_documents,
    record_written,
    with_changes,
)
from docingest.db import insert_for, newest_per_id
from docingest.ledger.floor import raise_floor
from docingest.schemas import DocumentQuery, as_utc, utcnow
from docingest.tables import DOCUMENTS, FAILURES, Document

# --- storing ------------------------------------------------------------------------------------

# The columns of a person's label, kept or cleared together.
LABEL_COLUMNS = ("label", "label_by", "labelled_at", "label_version", "label_revision")
# The classification a label was given against: kept beside a label that is kept.
CLASSIFICATION_COLUMNS = ("category", "confidence", "alternatives", "model_version")


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

    The document rows the upsert wrote (a row the condition refused is not written) each get a
    change (`changes.record`): on PostgreSQL in the upsert's own statement (a CTE), on SQLite
    from its RETURNING rows, in one more statement.
    """
    rows = [*documents, *failures]
    if not rows:
        return
    with engine.begin() as connection:
        if documents:
            _store_documents(connection, _sorted_newest(documents))
        if failures:
            statement = _upsert_statement(connection.dialect.name, FAILURES)
            connection.execute(statement, _sorted_newest(failures))
        raise_floor(connection, max(row["version"] for row in rows))


# PostgreSQL: batches of at least this many documents are written with COPY into a staging
# table and one INSERT … SELECT (`_copy_documents`); smaller ones with one executemany of the
# upsert. COPY costs more a batch (a round trip, a statement, the staging table's truncation at
# commit) and ~40 µs of worker CPU less a document: the two cost the same at ~15 documents a
# batch (docs/benchmark.md, The store step).
COPY_MIN_ROWS = 20


def _store_documents(connection: Connection, rows: list[dict[str, Any]]) -> None:
    now = utcnow()
    if connection.dialect.name == "postgresql":
        if len(rows) >= COPY_MIN_ROWS:
            _copy_documents(connection, rows, now)
            return
        names = DOCUMENTS.columns.keys()
        params = [{name: row.get(name) for name in names} | {CHANGED_AT: now} for row in rows]
        connection.execute(_documents_with_changes(), params)
    else:
        written = connection.execute(_documents_returning(connection.dialect.name), rows).all()
        record_written(connection, written, now)


@cache
def _documents_returning(dialect_name: str) -> Insert:
    """The upsert of documents returning the rows it wrote (a row refused returns nothing)."""
    statement: Insert = _upsert_statement(dialect_name, DOCUMENTS).returning(*RETURNED)
    return statement


@cache
def _documents_with_changes() -> Insert:
    """PostgreSQL's upsert of documents, each column a bound parameter (a row leaves none out:
    the statement is no plain INSERT that SQLAlchemy would complete), with its changes."""
    upsert = _upsert_statement("postgresql", DOCUMENTS).values(
        {column.name: bindparam(column.name, type_=column.type) for column in DOCUMENTS.columns}
    )
    return with_changes(upsert)


# --- PostgreSQL's COPY path ---------------------------------------------------------------------

# A temporary table per connection: the documents' columns and NOT NULLs, no key nor index;
# emptied by each commit that wrote to it (ON COMMIT DELETE ROWS: a truncation in place, and
# none for the connection's other transactions). Created once per connection, in a transaction
# of its own: a batch that rolls back cannot take it away.
STAGING = Table(
    "docingest_staging",
    MetaData(),
    *(Column(column.name, column.type) for column in DOCUMENTS.columns),
    prefixes=["TEMPORARY"],
)
_STAGING_DDL = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS docingest_staging"
    " (LIKE documents INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_STAGED = "docingest.staging"  # set in the pooled connection's `info` once the table exists
_COPY = f"COPY docingest_staging ({', '.join(STAGING.columns.keys())}) FROM STDIN (FORMAT BINARY)"


def _copy_type(column: Column[Any]) -> str:
    """The PostgreSQL type psycopg dumps a column's values as, in COPY's binary format."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    name = column.type.compile(dialect=dialect).lower()
    aliases = {"float": "float8", "bigint": "int8", "timestamp with time zone": "timestamptz"}
    return aliases.get(name, name.split("(")[0])


_COPY_TYPES = [_copy_type(column) for column in STAGING.columns]
_DATETIMES = [index for index, kind in enumerate(_COPY_TYPES) if kind == "timestamptz"]


def _copy_documents(connection: Connection, rows: list[dict[str, Any]], now: datetime) -> None:
    """The batch's rows into the staging table with binary COPY, then one `INSERT … SELECT …
    ON CONFLICT` (the same conditions as `_upsert_statement`) that writes their changes too
    (`with_changes`). Rows go in id order, so the upsert locks them in that order."""
    pooled = connection.connection
    driver: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
    names = STAGING.columns.keys()
    try:
        if not pooled.info.get(_STAGED):
            pooled.info[_STAGED] = _create_staging(driver)
        with driver.cursor() as cursor:
            set_json_dumps(orjson.dumps, context=cursor)
            with cursor.copy(_COPY) as copy:
                copy.set_types(_COPY_TYPES)
                for row in rows:
                    values = [row.get(name) for name in names]
                    for index in _DATETIMES:  # naive means UTC, as SQLAlchemy's binds take it
                        value = values[index]
                        if value is not None and value.tzinfo is None:
                            values[index] = value.replace(tzinfo=UTC)
                    copy.write_row(values)
    except psycopg.Error as error:
        if isinstance(error, psycopg.errors.UndefinedTable):  # gone (DISCARD TEMP): made again
            pooled.info.pop(_STAGED, None)
        raise _wrapped(connection, error, _COPY) from error
    connection.execute(_copy_upsert(), {CHANGED_AT: now})


_IDLE = psycopg.pq.TransactionStatus.IDLE


def _create_staging(driver: psycopg.Connection[Any]) -> bool:
    """In a transaction of its own when none is open, committed at once (a batch that rolls
    back keeps it): then True. Else inside the caller's, to be made again next time: False."""
    idle = driver.info.transaction_status == _IDLE
    driver.execute(_STAGING_DDL)
    if idle:
        driver.commit()
    return idle


def _wrapped(connection: Connection, error: psycopg.Error, statement: str) -> DBAPIError:
    """A driver error as SQLAlchemy raises it (`DataError`, `OperationalError`…), the
    connection invalidated if it is gone, as SQLAlchemy would for a statement of its own."""
    dbapi: Any = connection.connection.dbapi_connection
    gone = connection.dialect.is_disconnect(error, dbapi, None)  # type: ignore[arg-type]
    if gone:
        connection.invalidate()
    wrapped: DBAPIError = DBAPIError.instance(  # type: ignore[assignment]
        statement,
        None,
        error,
        psycopg.Error,
        hide_parameters=True,
        connection_invalidated=gone,
        dialect=connection.dialect,
    )
    return wrapped


@cache
def _copy_upsert() -> Insert:
    """`INSERT INTO documents SELECT … FROM docingest_staging ORDER BY id ON CONFLICT …`, with
    its changes: one statement whatever the batch's size, its only parameter CHANGED_AT."""
    names = DOCUMENTS.columns.keys()
    rows = select(*(STAGING.c[name] for name in names)).order_by(STAGING.c.id)
    insert = postgresql.insert(DOCUMENTS).from_select(names, rows)
    return with_changes(_on_conflict(insert, DOCUMENTS))


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
    A tombstone has no digest, so a deletion drops the label. A label that stays keeps the
    classification it was given against: otherwise a model trained on the label would classify
    its resent text and be measured against its own training label (docs/models.md, Drift).
    """
    return _on_conflict(insert_for(dialect_name, table), table)


def _on_conflict(insert: Any, table: Table) -> Insert:
    """`_upsert_statement`'s conflict clause on `insert` (VALUES, or a SELECT)."""
    newer = insert.excluded.version
    kept = {"id", "created_at"} if table is DOCUMENTS else {"id", "attempts"}
    updates = {c.name: insert.excluded[c.name] for c in table.columns if c.name not in kept}
    if table is DOCUMENTS:
        same_content = table.c.content_sha256 == insert.excluded.content_sha256
        for name in LABEL_COLUMNS:
            updates[name] = case((same_content, table.c[name]), else_=None)
        kept_label = and_(same_content, table.c.label.is_not(None))
        for name in CLASSIFICATION_COLUMNS:
            updates[name] = case((kept_label, table.c[name]), else_=insert.excluded[name])
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


def update_classifications(
    engine: Engine, updates: Sequence[dict[str, Any]], *, replaceable: ColumnElement[bool]
) -> int:
    """Replace the classification of each (id, version) still stored at that version, still
    unlabelled (a person's label was given against the classification it has) and still
    `replaceable` (classified by an older model: a newer one may have been activated meanwhile).

    Rows are `Document` column dicts with `id` and `version` (and the `updated_at` they set);
    returns how many were updated. Each row updated gets a `reclassified` change: those of `ids`
    whose `updated_at` is one this call set (a redelivered call sets another, and the rows it
    leaves alone get none).
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
            replaceable,
        )
        .values({name: bindparam(name) for name in fields})
    )
    rows = [
        {name: row[name] for name in fields} | {"_id": row["id"], "_version": row["version"]}
        for row in updates
    ]
    changed = and_(
        DOCUMENTS.c.id.in_([row["id"] for row in updates]),
        DOCUMENTS.c.updated_at.in_({as_utc(row["updated_at"]) for row in updates}),
    )
    with engine.begin() as connection:
        count = int(connection.execute(statement, rows).rowcount)
        if count:
            record_documents(connection, "reclassified", changed, utcnow())
        return count


def resent_unchanged(engine: Engine, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
    """The ids among `rows` (document rows with `content_sha256`) whose stored text is the same:
    resends, which the drift figures must not count again (one confident text sent many times
    would dilute the low-confidence share)."""
    digests = {row["id"]: row["content_sha256"] for row in rows}
    if not digests:
        return set()
    statement = select(DOCUMENTS.c.id, DOCUMENTS.c.content_sha256).where(
        DOCUMENTS.c.id.in_(list(digests)), DOCUMENTS.c.deleted_at.is_(None)
    )
    with engine.connect() as connection:
        found = connection.execute(statement)
        return {row.id for row in found if digests[row.id] == row.content_sha256}


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
    return as_document(row) if row is not None else None


# Rows a streamed read fetches from the database at a time: a page bounded by bytes stops
# reading once full, holding at most this many rows (of up to MAX_DOCUMENT_CHARS each) beyond it.
STREAM_ROWS = 8


def stream_documents(engine: Engine, statement: Select[Any]) -> Generator[Document, None, None]:
    """The documents `statement` selects, fetched a few rows at a time as they are taken (a
    server-side cursor on PostgreSQL, whose driver would otherwise load every row at once).
    Close the generator to stop early: the connection goes back to the pool."""
    with engine.connect() as connection:
        for row in connection.execution_options(yield_per=STREAM_ROWS).execute(statement):
            yield as_document(row)


def find_documents(
    engine: Engine, query: DocumentQuery, *, after: uuid.UUID | None, limit: int
) -> Generator[Document, None, None]:
    """Up to `limit` documents matching `query`, in id order, those after `after` only,
    streamed (`stream_documents`)."""
    conditions = _query_conditions(query)
    if after is not None:
        conditions.append(DOCUMENTS.c.id > after)
    statement = select(DOCUMENTS).where(*conditions).order_by(DOCUMENTS.c.id).limit(limit)
    return stream_documents(engine, statement)


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


def as_document(row: Row[Any]) -> Document:
    return Document(**row._mapping)
