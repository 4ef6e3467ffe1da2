"""A batch's way through a worker: classify with one model call, store with one transaction,
settle in the ledger. Functions of their arguments only: `actors` supplies the engine, the model
and the ledger, so tests and tools import this module without configuring anything."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import structlog
from pydantic import TypeAdapter
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from docingest.documents.store import (
    content_digest,
    current_contents,
    resent_unchanged,
    store_batch,
    update_classifications,
)
from docingest.ledger import Ledger
from docingest.model.scoring import Prediction, Predictor
from docingest.model.selection import superseded_by
from docingest.observe import tracing
from docingest.observe.worker_metrics import worker_metrics
from docingest.schemas import QueuedDocument, utcnow
from docingest.settings import Settings

logger = structlog.get_logger(__name__)

# Errors about a row's values, not about reaching the database: worth bisecting for.
ROW_ERRORS = (DataError, IntegrityError)

T = TypeVar("T")
R = TypeVar("R")

_DEFAULT_THRESHOLD: float = Settings.model_fields["low_confidence_threshold"].default

# A message's documents validated in one call: ~35 % less CPU than one model_validate each.
QUEUED = TypeAdapter(list[QueuedDocument])


def ingest(
    documents: Sequence[dict[str, Any]],
    *,
    engine: Engine,
    classifier: Predictor,
    ledger: Ledger,
    low_confidence_threshold: float = _DEFAULT_THRESHOLD,
) -> None:
    """Classify a batch with one model call, store it with one transaction, then settle it.

    A document the classifier raises on, or whose row the database refuses, is recorded as
    failed; the rest of its batch is stored. Other database errors propagate, so Dramatiq
    retries the whole message with backoff. The confidences of the stored documents feed the
    drift metrics (`LOW_CONFIDENCE_THRESHOLD`), those of a text resent unchanged only once.
    """
    queued = QUEUED.validate_python(documents)
    started = time.perf_counter()
    with tracing.span("classify", {"docingest.model_version": classifier.version}) as span:
        outcomes = classify_isolating(classifier, [document.content for document in queued])
        classified = time.perf_counter()
        now = utcnow()
        stored, failed = build_rows(queued, outcomes, classifier.version, now)
        span.set_attribute("docingest.failed", len(failed))
    resent = resent_unchanged(engine, stored)
    with tracing.span("store", {"docingest.documents": len(stored)}, database=True) as span:
        refused = store_isolating(engine, stored, failed)
        if refused:
            sent = {(document.id, document.version): document for document in queued}
            refusals = [
                failure_row(sent[row["id"], row["version"]], _describe(error), now)
                for row, error in refused
            ]
            _store_refusals(engine, refusals)
            failed += refusals
        span.set_attribute("docingest.failed", len(failed))
    store_seconds = time.perf_counter() - classified
    with tracing.span("settle", {"docingest.documents": len(queued)}):
        ledger.settle([(document.id, document.version) for document in queued])
    worker_metrics.record_batch(
        [document.accepted_at for document in queued],
        failed=len(failed),
        classification_seconds=classified - started,
        database_seconds=store_seconds,
    )
    uncounted = resent | {row["id"] for row, _ in refused}
    worker_metrics.record_confidences(
        classifier.version,
        [row["confidence"] for row in stored if row["id"] not in uncounted],
        threshold=low_confidence_threshold,
    )
    if failed:
        failed_ids = [str(row["id"]) for row in failed]
        logger.warning("documents failed", failed_ids=failed_ids)


def build_rows(
    queued: Sequence[QueuedDocument],
    outcomes: Sequence[Prediction | Exception],
    model_version: str,
    now: datetime,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The document rows of the classified documents and the failure rows of the others."""
    stored, failed = [], []
    for document, outcome in zip(queued, outcomes, strict=True):
        if isinstance(outcome, Prediction):
            stored.append(_document_row(document, outcome, model_version, now))
        else:
            failed.append(failure_row(document, _describe(outcome), now))
    return stored, failed


def isolate(
    items: Sequence[T], attempt: Callable[[Sequence[T]], R], errors: tuple[type[Exception], ...]
) -> list[tuple[Sequence[T], R | Exception]]:
    """`attempt` the whole list; if it raises one of `errors`, bisect to find the items that
    cause it. k bad items in n cost about 2·k·log2(n) extra attempts, and only when there are
    any. Returns each part attempted last with its result or error."""
    try:
        return [(items, attempt(items))]
    except errors as error:
        if len(items) == 1:
            return [(items, error)]
        middle = len(items) // 2
        return isolate(items[:middle], attempt, errors) + isolate(items[middle:], attempt, errors)


def classify_isolating(classifier: Predictor, texts: Sequence[str]) -> list[Prediction | Exception]:
    """One model call for the batch; the documents it raises on become exceptions."""
    outcomes: list[Prediction | Exception] = []
    for part, result in isolate(texts, lambda part: list(classifier.predict(part)), (Exception,)):
        outcomes += [result] * len(part) if isinstance(result, Exception) else result
    return outcomes


def store_isolating(
    engine: Engine, documents: Sequence[dict[str, Any]], failures: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], Exception]]:
    """One transaction for the batch; if the database refuses a document's row, bisect to find
    it, store the rest, and return the refused rows with their errors."""
    if not documents:
        store_batch(engine, [], failures)
        return []
    refused: list[tuple[dict[str, Any], Exception]] = []
    first = True

    def attempt(part: Sequence[dict[str, Any]]) -> None:
        nonlocal first
        store_batch(engine, part, failures if first else [])
        first = False

    for part, result in isolate(documents, attempt, ROW_ERRORS):
        if isinstance(result, Exception):
            refused += [(row, result) for row in part]
    if first:
        store_batch(engine, [], failures)
    return refused


def _store_refusals(engine: Engine, failures: list[dict[str, Any]]) -> None:
    """Record as failed the documents whose rows the database refused. A failure row carries the
    same content, which the database may refuse too (PostgreSQL cannot hold NUL): then it is
    stored with those characters replaced, and its error says so."""
    try:
        store_batch(engine, [], failures)
    except ROW_ERRORS:
        store_batch(engine, [], [_storable(row) for row in failures])


def _storable(failure: dict[str, Any]) -> dict[str, Any]:
    if "\x00" not in failure["content"]:
        return failure
    return failure | {
        "content": failure["content"].replace("\x00", "\ufffd"),
        "error": failure["error"] + " (stored with its NUL characters replaced by U+FFFD)",
    }


def _describe(error: Exception) -> str:
    """The driver's own first line for database errors: SQLAlchemy's text would add the
    statement and its parameters, other documents' contents among them."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first_line}"


def _document_row(
    document: QueuedDocument, prediction: Prediction, model_version: str, now: datetime
) -> dict[str, Any]:
    return _classification(prediction, model_version, now) | {
        "id": document.id,
        "content": document.content,
        "content_sha256": content_digest(document.content),
        "version": document.version,
        "created_at": document.accepted_at,
    }


def _classification(prediction: Prediction, model_version: str, now: datetime) -> dict[str, Any]:
    return {
        "category": prediction.category,
        "confidence": prediction.confidence,
        "alternatives": prediction.alternatives,
        "model_version": model_version,
        "updated_at": now,
    }


def failure_row(document: QueuedDocument, error: str, now: datetime) -> dict[str, Any]:
    return {
        "id": document.id,
        "content": document.content,
        "version": document.version,
        "accepted_at": document.accepted_at,
        "error": error,
        "failed_at": now,
        "attempts": 1,
    }


def reclassify(ids: Sequence[str], *, engine: Engine, classifier: Predictor) -> int:
    """Classify stored documents again; returns how many were updated.

    Each update names the version it classified, so a newer version stored meanwhile is left
    alone (it was classified on its way in). A document the model raises on keeps its previous
    classification and is logged; `docingest reclassify` reports it as not done.
    """
    documents = current_contents(engine, ids)
    outcomes = classify_isolating(classifier, [content for _, _, content in documents])
    now = utcnow()
    updates = []
    for (document_id, version, _), outcome in zip(documents, outcomes, strict=True):
        if isinstance(outcome, Prediction):
            row = _classification(outcome, classifier.version, now)
            updates.append(row | {"id": document_id, "version": version})
        else:
            logger.warning(
                "document not reclassified", document_id=str(document_id), error=_describe(outcome)
            )
    return update_classifications(engine, updates, replaceable=superseded_by(classifier.version))
