"""The shapes a document takes on its way in (API), through the queue, and out again.

The wire shapes (every body the API takes or answers with, the query of `GET /documents`, and
the patterns and helpers they need) belong to the Python client's distribution,
`docingest_client.schemas` (clients/python), which parses answers with the same classes; they
are re-exported here, so that the service imports every shape from `docingest.schemas`. What is
the service's own stays here: a document inside a queue message, and the validation context
built from the app's settings.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from docingest_client.schemas import _SPACE as _SPACE  # tests/unit/test_schemas.py checks it
from docingest_client.schemas import (
    CATEGORY_PATTERN,
    CONTENT_PATTERN,
    CURSOR_PATTERN,
    DEFAULT_MAX_DOCUMENT_CHARS,
    MAX_CHARS_CONTEXT_KEY,
    NO_NUL_PATTERN,
    NUL,
    POSITION_PATTERN,
    REVIEW_CURSOR_PATTERN,
    WEBHOOK_URL_PATTERN,
    Activated,
    Alternative,
    BulkAccepted,
    BulkItemResult,
    Category,
    Change,
    ChangeKind,
    ChangesData,
    ChangesDelivery,
    ChangesHead,
    ChangesPage,
    Content,
    DeadLetterOut,
    DocumentAccepted,
    DocumentIn,
    DocumentOut,
    DocumentPage,
    DocumentQuery,
    DocumentStatus,
    Drift,
    FailureOut,
    LabelChangeOut,
    LabelHistory,
    LabelIn,
    LabelOut,
    Lag,
    MinuteCount,
    ModelCard,
    ModelDrift,
    ModelSummary,
    QueryTime,
    ReviewPage,
    Stats,
    StatusCounts,
    UTCDateTime,
    WebhookCreated,
    WebhookIn,
    WebhookLag,
    WebhookOut,
    WebhookState,
    WorkerTotals,
    as_utc,
    utcnow,
)
from pydantic import BaseModel

if TYPE_CHECKING:
    from docingest.settings import Settings

__all__ = [
    "CATEGORY_PATTERN",
    "CONTENT_PATTERN",
    "CURSOR_PATTERN",
    "DEFAULT_MAX_DOCUMENT_CHARS",
    "MAX_CHARS_CONTEXT_KEY",
    "NO_NUL_PATTERN",
    "NUL",
    "POSITION_PATTERN",
    "REVIEW_CURSOR_PATTERN",
    "WEBHOOK_URL_PATTERN",
    "Activated",
    "Alternative",
    "BulkAccepted",
    "BulkItemResult",
    "Category",
    "Change",
    "ChangeKind",
    "ChangesData",
    "ChangesDelivery",
    "ChangesHead",
    "ChangesPage",
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
    "QueuedDocument",
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
    "document_limits",
    "utcnow",
]


def document_limits(settings: Settings) -> dict[str, int]:
    """The validation context holding the limits of the app's settings, not the process's:
    `DocumentIn.model_validate_json(body, context=document_limits(settings))`."""
    return {MAX_CHARS_CONTEXT_KEY: settings.max_document_chars}


class QueuedDocument(BaseModel):
    """One document inside a queue message: what the API accepted, stamped with its version."""

    id: uuid.UUID
    content: str
    version: int
    accepted_at: UTCDateTime

    def to_message(self) -> dict[str, Any]:
        """By hand: the hot path builds one per accepted document, model_dump is 3x slower."""
        return {
            "id": str(self.id),
            "content": self.content,
            "version": self.version,
            "accepted_at": self.accepted_at.isoformat(),
        }
