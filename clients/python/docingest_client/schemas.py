"""The wire shapes of the docingest API: every body it takes or answers with, the query of
`GET /documents`, and the patterns and helpers they need.

The service validates requests and writes answers with these very classes (`docingest.schemas`
re-exports them), and the client parses answers with them: the two cannot disagree. pydantic
only, so that a client loads nothing of the service.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from docingest_client.ids import uuid7

__all__ = [
    "CATEGORY_PATTERN",
    "CONTENT_PATTERN",
    "CURSOR_PATTERN",
    "DEFAULT_MAX_DOCUMENT_CHARS",
    "MAX_CHARS_CONTEXT_KEY",
    "NO_NUL_PATTERN",
    "NUL",
    "REVIEW_CURSOR_PATTERN",
    "WEBHOOK_URL_PATTERN",
    "Activated",
    "Alternative",
    "BulkAccepted",
    "BulkItemResult",
    "Category",
    "ChangesData",
    "ChangesDelivery",
    "Content",
    "DeadLetterOut",
    "DocumentAccepted",
    "DocumentIn",
    "DocumentOut",
    "DocumentPage",
    "DocumentQuery",
    "DocumentStatus",
    "Drift",
    "FailureOut",
    "LabelChangeOut",
    "LabelHistory",
    "LabelIn",
    "LabelOut",
    "Lag",
    "MinuteCount",
    "ModelCard",
    "ModelDrift",
    "ModelSummary",
    "QueryTime",
    "ReviewPage",
    "Stats",
    "StatusCounts",
    "UTCDateTime",
    "WebhookCreated",
    "WebhookIn",
    "WebhookLag",
    "WebhookOut",
    "WebhookState",
    "WorkerTotals",
    "as_utc",
    "utcnow",
]

# The service's MAX_DOCUMENT_CHARS by default (docingest.settings): what a client may expect.
DEFAULT_MAX_DOCUMENT_CHARS = 1_000_000


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC, so say so."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]


# The key of the validation context under which the API passes its app's MAX_DOCUMENT_CHARS, as
# in `DocumentIn.model_validate_json(body, context=document_limits(settings))` (the service's
# `docingest.schemas`); without a context (clients, tests, tools), the default holds.
MAX_CHARS_CONTEXT_KEY = "max_document_chars"


# The characters `str.isspace` calls whitespace, spelled out as a regex class that Python and
# ECMAScript (JSON Schema's `pattern`) read alike: the check below and the declared pattern are
# one rule (tests/unit/test_schemas.py compares the class with `str.isspace`).
_SPACE = r"\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_NOT_SPACE = re.compile(f"[^{_SPACE}]")
# What PostgreSQL's text cannot hold: NUL. A value with one could never be stored (content) or
# matched (a filter), so the API refuses it in bodies and in parameters alike.
NUL = "\x00"
NO_NUL_PATTERN = r"^[^\u0000]*$"
# Non-blank content without NUL, as `_check_content` has it; the app adds `maxLength`.
CONTENT_PATTERN = rf"^[^\u0000]*[^{_SPACE}\u0000][^\u0000]*$"
# A page cursor: the url-safe base64 of a document id's 16 bytes, unpadded (the service's
# docingest/documents/browse.py).
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{22}$"
# The review queue's: a confidence's 8 bytes and an id's 16, 32 characters (docingest/labels/).
REVIEW_CURSOR_PATTERN = r"^[A-Za-z0-9_-]{32}$"


def _check_content(value: str, info: ValidationInfo) -> str:
    """Said in words rather than by the pattern: the message names what is wrong, and a
    backtracking regex would be quadratic on a long text ending in NUL."""
    if _NOT_SPACE.search(value) is None:
        raise ValueError("content must not be empty or only whitespace")
    if NUL in value:  # PostgreSQL text cannot hold it: the batch would never be stored
        raise ValueError("content must not contain NUL (U+0000) characters")
    limit = (info.context or {}).get(MAX_CHARS_CONTEXT_KEY, DEFAULT_MAX_DOCUMENT_CHARS)
    if len(value) > limit:
        raise ValueError(f"content is longer than {limit} characters")
    return value


Content = Annotated[
    str,
    AfterValidator(_check_content),
    Field(json_schema_extra={"pattern": CONTENT_PATTERN}, examples=["computers are awesome"]),
]


class DocumentIn(BaseModel):
    """What a client posts. The id is optional: posting an existing id updates that document;
    a document posted without one gets a time-ordered one (UUIDv7, `ids.uuid7`)."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(
        default_factory=uuid7,
        description="Optional. Without one the API assigns a UUIDv7 (time-ordered), "
        "returned in the answer.",
    )
    content: Content


class DocumentAccepted(BaseModel):
    id: uuid.UUID
    version: int
    status: str = "queued"


class Alternative(BaseModel):
    category: str
    probability: float


_CONTROL = r"\u0000-\u001f\u007f-\u009f"
# A category name: something besides whitespace, no control character; stored stripped.
CATEGORY_PATTERN = rf"^[^{_CONTROL}]*[^{_SPACE}{_CONTROL}][^{_CONTROL}]*$"
_CONTROL_CHARACTER = re.compile(f"[{_CONTROL}]")


def _check_category(value: str) -> str:
    if _CONTROL_CHARACTER.search(value):
        raise ValueError("category must not contain control characters")
    value = value.strip()
    if not value:
        raise ValueError("category must not be empty or only whitespace")
    return value


Category = Annotated[
    str,
    Field(max_length=200, json_schema_extra={"pattern": CATEGORY_PATTERN}),
    AfterValidator(_check_category),
]


class LabelIn(BaseModel):
    """A person's category for a document: any name, also one no model knows yet.

    `version`, when given, is the document version the person saw: the label is refused (409)
    if another version is stored now. Without it the label applies to the version stored.
    """

    model_config = ConfigDict(extra="forbid")

    category: Category
    version: int | None = Field(default=None, ge=1)


class LabelOut(BaseModel):
    """Who labelled the document (the API key's name), when, and which version they saw.

    `revision` names this label: send it as `If-Match` to replace or remove it (`409` once
    someone else changed it). None only from a service older than label revisions.
    """

    category: str
    by: str
    at: UTCDateTime
    version: int
    revision: int | None = None


class LabelChangeOut(BaseModel):
    """One change of a document's label: `set` (none before), `replaced` or `removed`.

    `revision` is the one the change gave the label (the `If-Match` that replaces it), `version`
    the document version it was made on, `category` the new label (null when removed) and
    `previous` the label it replaced.
    """

    # Read from a `label_history` row (its column names) and from an answer (the field names).
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    revision: int = Field(validation_alias="id")
    version: int = Field(validation_alias="document_version")
    action: Literal["set", "replaced", "removed"]
    category: str | None = Field(validation_alias="label")
    previous: str | None
    by: str = Field(validation_alias="changed_by")
    at: UTCDateTime = Field(validation_alias="changed_at")


class LabelHistory(BaseModel):
    """`GET /documents/{id}/label/history`: the document's label changes, newest first."""

    items: list[LabelChangeOut]


class DocumentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    content: str
    category: str | None
    confidence: float | None
    alternatives: list[Alternative] | None = None
    model_version: str | None
    version: int
    created_at: UTCDateTime
    updated_at: UTCDateTime
    deleted_at: UTCDateTime | None = None
    label: LabelOut | None = None

    @model_validator(mode="before")
    @classmethod
    def _nest_label(cls, row: Any) -> Any:
        """A stored row keeps its label in flat columns; the answer nests them."""
        if isinstance(row, dict):
            return row
        fields = {name: getattr(row, name) for name in cls.model_fields if name != "label"}
        label = None
        if row.label is not None:
            label = {
                "category": row.label,
                "by": row.label_by,
                "at": row.labelled_at,
                "version": row.label_version,
                "revision": row.label_revision,
            }
        return fields | {"label": label}


def _iso_8601(value: Any) -> Any:
    """Pydantic would read "0.5" as a Unix time; a query's times are ISO 8601 or refused."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError as error:
            raise ValueError("must be an ISO 8601 date-time, e.g. 2026-11-29T12:00:00Z") from error
    return value


QueryTime = Annotated[datetime, BeforeValidator(_iso_8601)]


class DocumentQuery(BaseModel):
    """The filters of `GET /documents`; time ranges are half-open: `after <= t < before`."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = None
    model_version: str | None = None
    created_after: QueryTime | None = None
    created_before: QueryTime | None = None
    updated_after: QueryTime | None = None
    updated_before: QueryTime | None = None
    status: Literal["stored", "deleted"] = Field(
        default="stored", description="`stored` documents, or `deleted` ones (tombstones)"
    )
    labelled: bool | None = Field(default=None, description="with a person's label, or without")
    max_confidence: float | None = Field(
        default=None, ge=0, le=1, description="the model's confidence at most this"
    )
    disagreement: bool | None = Field(
        default=None, description="labelled, and the label differs from (true) or is the category"
    )
    limit: int = Field(default=50, ge=1, le=1000)
    cursor: str | None = Field(
        default=None,
        pattern=CURSOR_PATTERN,
        description="`next_cursor` of the previous page; absent for the first page",
    )


class DocumentPage(BaseModel):
    """One page of `GET /documents`, in id order; `next_cursor` is null on the last page."""

    items: list[DocumentOut]
    next_cursor: str | None


class ReviewPage(BaseModel):
    """Unlabelled documents, least confident first, and the categories a reviewer can pick."""

    items: list[DocumentOut]
    next_cursor: str | None
    categories: list[str]


class DocumentStatus(BaseModel):
    """Where an accepted document is: `queued`, `stored`, `failed` (with the error) or `deleted`."""

    id: uuid.UUID
    status: Literal["queued", "stored", "failed", "deleted"]
    version: int
    error: str | None = None


# A position of the change feed: opaque, safe in a URL (today a number's decimal digits).
POSITION_PATTERN = "^[0-9]{1,19}$"
ChangeKind = Literal["stored", "deleted", "labelled", "unlabelled", "reclassified"]


class Change(BaseModel):
    """One change of a document in `GET /changes`: `stored` (a new document or version),
    `deleted`, `labelled`, `unlabelled` or `reclassified` (by a newer model), with the document's
    classification and label as that change left them."""

    model_config = ConfigDict(from_attributes=True)

    position: str = Field(description="Opaque; pass it as `after` to read what follows")
    document_id: uuid.UUID
    version: int
    kind: ChangeKind
    category: str | None = None
    confidence: float | None = None
    alternatives: list[Alternative] | None = None
    model_version: str | None = None
    label: str | None = None
    at: UTCDateTime


class ChangesPage(BaseModel):
    """Changes after the position asked, oldest first; `next` is the position to ask next (the
    same when nothing came), past every change scanned, filtered out or not."""

    items: list[Change]
    next: str


class ChangesHead(BaseModel):
    """The newest position of the feed ("0" before the first change)."""

    position: str


# --- webhooks: the feed delivered to endpoints -----------------------------------------------

# http(s), a host (no user name or password: deliveries are signed instead), any path and query;
# no fragment, which is never sent. `docingest.changes.webhooks.targets` checks where it leads.
WEBHOOK_URL_PATTERN = r"^https?://[^\s/?#@]+([/?][^\s#]*)?$"
WebhookState = Literal["active", "paused"]


def _unique(values: list[Any]) -> list[Any]:
    """Each once, in the order given."""
    return list(dict.fromkeys(values))


class WebhookIn(BaseModel):
    """An endpoint to deliver the feed to: its URL, and the kinds and categories it wants
    (empty or left out: all)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=10,
        max_length=2000,
        pattern=WEBHOOK_URL_PATTERN,
        examples=["https://example.com/hooks/docingest"],
        description="http or https; its host must resolve to public addresses only, unless "
        "the service runs with WEBHOOK_ALLOW_PRIVATE=true",
    )
    kinds: Annotated[list[ChangeKind], AfterValidator(_unique)] = Field(
        default_factory=list, max_length=5, description="Only these kinds (empty: every kind)"
    )
    categories: Annotated[list[Category], AfterValidator(_unique)] = Field(
        default_factory=list,
        max_length=100,
        description="Only changes of these categories (empty: any, also none)",
    )


class WebhookLag(BaseModel):
    """How far an endpoint is behind the feed's head."""

    changes: int = Field(description="Positions between the endpoint's and the head")
    seconds: float = Field(description="Age of the oldest change not delivered yet (0: none)")


class WebhookOut(BaseModel):
    """An endpoint as the service keeps it: where the feed goes, how far it got, how it fares.
    The secret is never shown again after creation."""

    id: uuid.UUID
    url: str
    kinds: list[ChangeKind]
    categories: list[str]
    state: WebhookState = Field(
        description="`paused` after failing longer than WEBHOOK_DISABLE_AFTER (or once its "
        "position was pruned): nothing is delivered until `POST /webhooks/{id}/resume`"
    )
    paused_reason: str | None = None
    paused_at: UTCDateTime | None = None
    position: str = Field(description="The feed position delivered up to (a 2xx received)")
    lag: WebhookLag
    last_error: str | None = None
    last_error_at: UTCDateTime | None = None
    failing_since: UTCDateTime | None = Field(
        default=None, description="The first of the failures in a row; null once one succeeds"
    )
    attempts: int = Field(description="Failed deliveries in a row")
    next_attempt_at: UTCDateTime | None = Field(
        default=None, description="While failing: when the next try is due"
    )
    delivered_at: UTCDateTime | None = None
    deliveries: int = Field(description="Deliveries answered with a 2xx, since created")
    failures: int = Field(description="Deliveries that failed, since created")
    created_at: UTCDateTime
    created_by: str | None = None


class WebhookCreated(WebhookOut):
    """A new endpoint, with its signing secret: shown this once, store it now."""

    secret: str = Field(
        description="Standard Webhooks' `whsec_` and base64: verify each delivery's "
        "`webhook-signature` with it (`docingest_client.verify`)"
    )


class ChangesData(BaseModel):
    items: list[Change]


class ChangesDelivery(BaseModel):
    """The body of a webhook delivery (Standard Webhooks' shape): changes of the feed, in order,
    as `GET /changes` gives them, after the endpoint's kinds and categories."""

    type: str = Field(description="`docingest.changes`")
    timestamp: UTCDateTime
    data: ChangesData


class FailureOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    version: int
    error: str
    attempts: int
    accepted_at: UTCDateTime
    failed_at: UTCDateTime


class DeadLetterOut(BaseModel):
    """A message given up on after its retries: `POST /failures/replay` queues it again."""

    queue: str
    message_id: str
    actor: str
    documents: int
    retries: int
    dead_since: UTCDateTime | None
    bytes: int | None = Field(default=None, description="the message's size")


class BulkItemResult(BaseModel):
    """The fate of one item of a bulk request, at the same index as in the request."""

    index: int
    status: int
    id: uuid.UUID | None = None
    version: int | None = None
    errors: list[dict[str, Any]] | None = None


class BulkAccepted(BaseModel):
    errors: bool = Field(description="True when at least one item was rejected")
    accepted: int
    rejected: int
    items: list[BulkItemResult]


# --- operations: `GET /stats` ------------------------------------------------------------------


class StatusCounts(BaseModel):
    stored: int
    queued: int
    failed: int


class MinuteCount(BaseModel):
    minute: datetime
    documents: int


class Lag(BaseModel):
    """Acceptance to storage, over every document the workers stored (cumulative)."""

    documents: int
    sum_seconds: float
    mean_seconds: float | None
    p50_seconds: float | None  # upper bound of the histogram bucket holding the median
    p95_seconds: float | None


class WorkerTotals(BaseModel):
    documents_processed: int
    documents_failed: int


class ModelDrift(BaseModel):
    """One model: how sure it was of what arrived (cumulative), and how often people agreed."""

    model_version: str
    documents: int  # classified by workers on their way in
    mean_confidence: float | None
    low_confidence_share: float | None  # under `Drift.low_confidence_threshold`
    labels: int  # its newest labels, at most `Drift.agreement_window`
    agreement: float | None  # the share of those equal to its category


class Drift(BaseModel):
    low_confidence_threshold: float
    agreement_window: int
    models: list[ModelDrift]


class Stats(BaseModel):
    generated_at: datetime
    categories: dict[str, int]
    statuses: StatusCounts
    queues: dict[str, int]
    throughput_per_minute: list[MinuteCount]
    lag: Lag
    workers: WorkerTotals
    drift: Drift


# --- the model registry: `GET /models`, `GET /model`, `GET /models/{version}` -------------------


class ModelSummary(BaseModel):
    version: str
    active: bool
    estimator: str | None
    source: str | None
    accuracy: float | None
    macro_f1: float | None
    created_at: UTCDateTime
    activated_at: UTCDateTime | None


class ModelCard(BaseModel):
    """A model's card as training wrote it (docs/models.md): the fields every card has, typed;
    the others (`estimator`, `source`, `label_counts`, `speed`, …) kept as they are, since cards
    of older versions, or of models trained elsewhere, hold fewer."""

    model_config = ConfigDict(extra="allow")

    version: str
    labels: list[str]
    metrics: dict[str, Any]


class Activated(BaseModel):
    version: str
    active: bool = True
    refresh_seconds: float
