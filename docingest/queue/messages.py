"""The two kinds of message docingest sends, built by name so the API never imports an actor."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import dramatiq

from docingest.queue.names import (
    DOCUMENTS_QUEUE,
    INGEST_ACTOR,
    RECLASSIFY_ACTOR,
    RECLASSIFY_QUEUE,
)

# The option naming the requests a message's documents came from, when traced (W3C
# traceparents, docingest/observe/tracing.py); untraced messages have no options.
TRACEPARENTS = "traceparents"


def ingest_message(
    documents: Sequence[dict[str, Any]], traceparents: Sequence[str] = ()
) -> dramatiq.Message[None]:
    """One message, a list of queued documents (`QueuedDocument.to_message()` dicts)."""
    options = {TRACEPARENTS: list(traceparents)} if traceparents else {}
    return _message(DOCUMENTS_QUEUE, INGEST_ACTOR, (list(documents),), options)


def reclassify_message(ids: Sequence[uuid.UUID], model_version: str) -> dramatiq.Message[None]:
    return _message(
        RECLASSIFY_QUEUE,
        RECLASSIFY_ACTOR,
        ([str(document_id) for document_id in ids], model_version),
    )


def _message(
    queue: str, actor: str, args: tuple[Any, ...], options: dict[str, Any] | None = None
) -> dramatiq.Message[None]:
    return dramatiq.Message(
        queue_name=queue,
        actor_name=actor,
        args=args,
        kwargs={},
        options=options or {},
    )


def document_count(args: Sequence[Any]) -> int:
    """Documents (or ids) a message carries: its first argument is always their list."""
    first = args[0] if args else []
    return len(first) if isinstance(first, list) else 0
