"""The tables: what the database stores, and one typed handle per table for SQL Core statements."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    text,
)
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel


class Document(SQLModel, table=True):
    """A classified document. `version` orders the updates of one id: the highest one wins.

    A deleted document stays as a tombstone (`deleted_at` set, content emptied) holding the
    version of its deletion, so that an older version still in the queue cannot bring it back.

    A person's label (the true category) sits beside the model's: who set it (the key's name),
    when, and for which version. A new version keeps it only when its content digest is the
    same (`store._upsert_statement`); reclassification never touches labelled documents.
    """

    __tablename__ = "documents"
    __table_args__ = (
        # Labelled rows only: the newest labels (drift), the labelled ones (training), cheaply;
        # unlabelled rows, nearly all of them, cost the upsert nothing here.
        Index(
            "ix_documents_labelled_at",
            "labelled_at",
            postgresql_where=text("label IS NOT NULL"),
            sqlite_where=text("label IS NOT NULL"),
        ),
    )

    id: uuid.UUID = SQLField(primary_key=True)
    content: str = SQLField(sa_column=Column(Text, nullable=False))
    category: str | None = SQLField(default=None, index=True)
    confidence: float | None = None
    # The top labels with their probabilities, best first: [{"category": ..., "probability": ...}]
    alternatives: list[dict[str, Any]] | None = SQLField(default=None, sa_column=Column(JSON))
    model_version: str | None = None
    version: int = SQLField(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = SQLField(
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )
    deleted_at: datetime | None = SQLField(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # sha256 of `content`, hex: a resend of the same text keeps the label.
    content_sha256: str | None = SQLField(default=None, sa_column=Column(String(64)))
    label: str | None = SQLField(default=None, sa_column=Column(String(200)))
    label_by: str | None = SQLField(default=None, sa_column=Column(String(64)))
    labelled_at: datetime | None = SQLField(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    label_version: int | None = SQLField(default=None, sa_column=Column(BigInteger))
    # The `label_history` row that set the label: the precondition for replacing or removing it.
    label_revision: int | None = SQLField(default=None, sa_column=Column(BigInteger))


# SQLite numbers rows only for an INTEGER primary key.
_ROW_NUMBER = BigInteger().with_variant(Integer(), "sqlite")


class LabelChange(SQLModel, table=True):
    """One change of a document's label through the API: set (none before), replaced, removed.

    Its `id` is the revision of the label it set, which a reviewer sends back to replace or
    remove that label (`If-Match`); `previous` is the label it replaced. A label cleared by a
    new version with other content (the worker's upsert) leaves no row: that is the text
    changing, not a person.
    """

    __tablename__ = "label_history"

    id: int | None = SQLField(
        default=None, sa_column=Column(_ROW_NUMBER, primary_key=True, autoincrement=True)
    )
    document_id: uuid.UUID = SQLField(index=True)
    document_version: int = SQLField(sa_column=Column(BigInteger, nullable=False))
    action: str = SQLField(sa_column=Column(String(10), nullable=False))
    label: str | None = SQLField(default=None, sa_column=Column(String(200)))
    previous: str | None = SQLField(default=None, sa_column=Column(String(200)))
    changed_by: str = SQLField(sa_column=Column(String(64), nullable=False))
    changed_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))


class RegisteredModel(SQLModel, table=True):
    """A registered classifier. The artifact lives in the database so that every process, on
    any machine, loads the same bytes; the checksum is taken at registration and checked at load.
    Workers load its `scoring` form instead (`model.scoring`: numpy arrays, no scikit-learn),
    made from the artifact at registration and checksummed the same way; NULL only for a model
    registered before migration 0014 whose artifact that migration could not convert.

    The active model is the one with the highest `activation`, a number the database assigns
    (never a host's clock), so activating an older version rolls back.
    """

    __tablename__ = "models"

    version: str = SQLField(sa_column=Column(String(200), primary_key=True))
    sha256: str = SQLField(sa_column=Column(String(64), nullable=False))
    artifact: bytes = SQLField(sa_column=Column(LargeBinary, nullable=False))
    card: dict[str, Any] = SQLField(sa_column=Column(JSON, nullable=False))
    scoring: bytes | None = SQLField(default=None, sa_column=Column(LargeBinary, nullable=True))
    scoring_sha256: str | None = SQLField(default=None, sa_column=Column(String(64), nullable=True))
    created_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))
    activated_at: datetime | None = SQLField(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True, index=True)
    )
    activation: int | None = SQLField(
        default=None, sa_column=Column(BigInteger, nullable=True, unique=True, index=True)
    )


class ModelEnvironment(SQLModel, table=True):
    """An environment worker processes run, as far as it decides whether a model's scoring form
    loads (Python, numpy, docingest: `model.environment.fingerprint`), and when one of them last
    said so, by the database's clock, every MODEL_REFRESH_SECONDS (theirs)."""

    __tablename__ = "model_environments"

    environment: str = SQLField(sa_column=Column(String(300), primary_key=True))
    seen_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))
    refresh_seconds: float = SQLField(sa_column=Column(Float, nullable=False))


class ModelCheck(SQLModel, table=True):
    """Whether workers running `environment` can load and use model `version`: asked for by an
    activation (`loaded` NULL), answered by the first such worker (`loaded`, `error`)."""

    __tablename__ = "model_checks"

    environment: str = SQLField(sa_column=Column(String(300), primary_key=True))
    version: str = SQLField(sa_column=Column(String(200), primary_key=True))
    loaded: bool | None = SQLField(default=None, sa_column=Column(Boolean, nullable=True))
    error: str | None = SQLField(default=None, sa_column=Column(Text, nullable=True))
    requested_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))
    checked_at: datetime | None = SQLField(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class Failure(SQLModel, table=True):
    """A document version that could not be classified, kept with its error until replayed.

    A newer stored version of the same id supersedes it (see `failures.repository.list_failures`).
    """

    __tablename__ = "failures"

    id: uuid.UUID = SQLField(primary_key=True)
    content: str = SQLField(sa_column=Column(Text, nullable=False))
    version: int = SQLField(sa_column=Column(BigInteger, nullable=False))
    accepted_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))
    error: str = SQLField(sa_column=Column(Text, nullable=False))
    attempts: int = 1
    failed_at: datetime = SQLField(
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )


class VersionFloor(SQLModel, table=True):
    """The highest version each writer (a worker process, an API process deleting) stored.

    Written in the transaction that stores the rows, so it is as durable as they are; the Redis
    ledger reads max(version) to notice a counter that went back (docingest/ledger/redis.py).
    """

    __tablename__ = "version_floors"

    writer: str = SQLField(sa_column=Column(String(200), primary_key=True))
    version: int = SQLField(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))


class VersionCounter(SQLModel, table=True):
    """The SQL ledger's version authority: one row, raised by each reservation."""

    __tablename__ = "version_counter"

    name: str = SQLField(sa_column=Column(String(50), primary_key=True))
    value: int = SQLField(sa_column=Column(BigInteger, nullable=False))


class PendingDocument(SQLModel, table=True):
    """The SQL ledger's pending set: every accepted version of an id not yet settled."""

    __tablename__ = "pending_documents"

    id: uuid.UUID = SQLField(primary_key=True)
    version: int = SQLField(sa_column=Column(BigInteger, primary_key=True))
    reserved_at: datetime = SQLField(
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )
    # The broker confirmed it holds the message: the reconciler never abandons it, only settles.
    published: bool | None = SQLField(default=None, sa_column=Column(Boolean, nullable=True))


class WorkerMetric(SQLModel, table=True):
    """The workers' metrics summed, when they have no Redis to add them up in."""

    __tablename__ = "worker_metrics"

    field: str = SQLField(sa_column=Column(String(200), primary_key=True))
    value: float = SQLField(sa_column=Column(Float, nullable=False))


class Change(SQLModel, table=True):
    """One change of a document, written in the transaction of the write that made it: what
    `GET /changes` serves (docingest/changes/).

    `id` is taken at insert and only orders the rows not yet numbered; `position`, the order of
    the feed, is given by the relay (`changes.relay`) to committed rows only, so a reader that saw
    a position has seen every smaller one (docs/architecture.md, The change feed).
    """

    __tablename__ = "changes"
    __table_args__ = (
        # The relay's work: the few rows not numbered yet, by id; numbered rows cost it nothing.
        Index(
            "ix_changes_unnumbered",
            "id",
            postgresql_where=text("position IS NULL"),
            sqlite_where=text("position IS NULL"),
        ),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(_ROW_NUMBER, primary_key=True, autoincrement=True)
    )
    position: int | None = SQLField(
        default=None, sa_column=Column(BigInteger, nullable=True, unique=True)
    )
    document_id: uuid.UUID = SQLField(nullable=False)
    version: int = SQLField(sa_column=Column(BigInteger, nullable=False))
    # stored | deleted | labelled | unlabelled | reclassified
    kind: str = SQLField(sa_column=Column(String(12), nullable=False))
    category: str | None = SQLField(default=None, sa_column=Column(String(200)))
    confidence: float | None = None
    alternatives: list[dict[str, Any]] | None = SQLField(default=None, sa_column=Column(JSON))
    model_version: str | None = SQLField(default=None, sa_column=Column(String(200)))
    label: str | None = SQLField(default=None, sa_column=Column(String(200)))
    at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))


class ChangeRelay(SQLModel, table=True):
    """The relay's one row: the newest position pruned (0: none), so that a cursor older than
    the oldest change kept is told so (410) exactly."""

    __tablename__ = "change_relay"

    id: int = SQLField(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    pruned: int = SQLField(sa_column=Column(BigInteger, nullable=False))


class Webhook(SQLModel, table=True):
    """An endpoint that changes are delivered to (`docingest.changes.webhooks`): where it is,
    what it wants, how far it got, how it fares, and who delivers to it now.

    `secret` signs every delivery, so it is kept as it was made (`whsec_…`): a secret at rest,
    like the database's own password, readable by whoever reads this table or its backups; the
    API shows it once, at creation. `position` moves only after a receiver's 2xx. The lease
    (`lease_owner` until `lease_expires_at`) makes one process at a time deliver to an endpoint.
    """

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_idempotency_key", "idempotency_key", unique=True),)

    id: uuid.UUID = SQLField(primary_key=True)
    url: str = SQLField(sa_column=Column(Text, nullable=False))
    # Empty: every kind, every category.
    kinds: list[str] = SQLField(sa_column=Column(JSON, nullable=False))
    categories: list[str] = SQLField(sa_column=Column(JSON, nullable=False))
    secret: str = SQLField(sa_column=Column(String(100), nullable=False))
    position: int = SQLField(sa_column=Column(BigInteger, nullable=False))
    # active | paused
    state: str = SQLField(sa_column=Column(String(10), nullable=False))
    created_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))
    created_by: str | None = SQLField(default=None, sa_column=Column(String(64)))
    # When a delivery may be tried next (now, or after a failure's backoff).
    next_attempt_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))
    # Failures in a row since the last success; the first of them.
    attempts: int = SQLField(sa_column=Column(Integer, nullable=False))
    failing_since: datetime | None = SQLField(
        default=None, sa_column=Column(DateTime(timezone=True))
    )
    last_error: str | None = SQLField(default=None, sa_column=Column(Text))
    last_error_at: datetime | None = SQLField(
        default=None, sa_column=Column(DateTime(timezone=True))
    )
    paused_at: datetime | None = SQLField(default=None, sa_column=Column(DateTime(timezone=True)))
    paused_reason: str | None = SQLField(default=None, sa_column=Column(Text))
    delivered_at: datetime | None = SQLField(
        default=None, sa_column=Column(DateTime(timezone=True))
    )
    # Deliveries answered 2xx, and failed, since created: the metrics' counters.
    deliveries: int = SQLField(sa_column=Column(BigInteger, nullable=False))
    failures: int = SQLField(sa_column=Column(BigInteger, nullable=False))
    lease_owner: str | None = SQLField(default=None, sa_column=Column(String(200)))
    lease_expires_at: datetime | None = SQLField(
        default=None, sa_column=Column(DateTime(timezone=True))
    )
    # The `Idempotency-Key` of the POST that made it (None: none sent), and the digest of that
    # request: a retry with the key gets this endpoint again, another request with it a 422.
    idempotency_key: str | None = SQLField(default=None, sa_column=Column(String(255)))
    request_digest: str | None = SQLField(default=None, sa_column=Column(String(64)))


def _handle(model: type[SQLModel]) -> Table:
    """The model's table, typed: SQLModel leaves `__table__` untyped, its metadata does not."""
    return SQLModel.metadata.tables[str(model.__tablename__)]


# The handles Core statements use.
DOCUMENTS = _handle(Document)
FAILURES = _handle(Failure)
MODELS = _handle(RegisteredModel)
VERSION_FLOORS = _handle(VersionFloor)
VERSION_COUNTER = _handle(VersionCounter)
PENDING = _handle(PendingDocument)
WORKER_METRICS = _handle(WorkerMetric)
LABEL_HISTORY = _handle(LabelChange)
CHANGES = _handle(Change)
CHANGE_RELAY = _handle(ChangeRelay)
MODEL_ENVIRONMENTS = _handle(ModelEnvironment)
MODEL_CHECKS = _handle(ModelCheck)
WEBHOOKS = _handle(Webhook)
