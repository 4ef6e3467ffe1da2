"""Where a document is classified and stored: the actors that `dramatiq docingest.worker` runs."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

import dramatiq
from sqlalchemy import Engine

from docingest.broker import (
    INGEST_ACTOR,
    QUEUE_NAME,
    RECLASSIFY_ACTOR,
    RECLASSIFY_QUEUE,
    setup_broker,
)
from docingest.classifier import Classifier, Prediction
from docingest.db import current_contents, get_engine, store_batch, update_classifications
from docingest.ledger import Ledger, ledger_for
from docingest.logs import configure_logging
from docingest.metrics import worker_metrics
from docingest.registry import ModelCache
from docingest.schemas import QueuedDocument, utcnow
from docingest.settings import get_settings

logger = logging.getLogger(__name__)

configure_logging(get_settings())
broker = setup_broker(get_settings())
ledger = ledger_for(broker)


@cache
def model_cache() -> ModelCache:
    """Created on first use, in the worker process (not in Dramatiq's parent)."""
    settings = get_settings()
    return ModelCache(
        get_engine(),
        seed=settings.model_path,
        refresh_seconds=settings.model_refresh_seconds,
    )


def ingest(
    documents: Sequence[dict[str, Any]],
    *,
    engine: Engine,
    classifier: Classifier,
    ledger: Ledger,
) -> None:
    """Classify a batch with one model call, store it with one transaction, then settle it.

    A document the classifier raises on is recorded as failed; the rest of its batch is stored.
    Database errors propagate, so Dramatiq retries the whole message with backoff.
    """
    queued = [QueuedDocument.model_validate(document) for document in documents]
    started = time.perf_counter()
    outcomes = classify_isolating(classifier, [document.content for document in queued])
    classified = time.perf_counter()
    now = utcnow()
    stored, failed = [], []
    for document, outcome in zip(queued, outcomes, strict=True):
        if isinstance(outcome, Prediction):
            stored.append(_document_row(document, outcome, classifier.version, now))
        else:
            failed.append(failure_row(document, f"{type(outcome).__name__}: {outcome}", now))
    store_started = time.perf_counter()
    store_batch(engine, stored, failed)
    store_seconds = time.perf_counter() - store_started
    ledger.settle([(document.id, document.version) for document in queued])
    worker_metrics.record_batch(
        [document.accepted_at for document in queued],
        failed=len(failed),
        classification_seconds=classified - started,
        database_seconds=store_seconds,
    )
    if failed:
        failed_ids = [str(row["id"]) for row in failed]
        logger.warning("documents failed classification", extra={"failed_ids": failed_ids})


def classify_isolating(
    classifier: Classifier, texts: Sequence[str]
) -> list[Prediction | Exception]:
    """One call for the batch; if it raises, bisect to find the documents that cause it.

    k bad documents in n cost about 2·k·log2(n) extra calls, and only when there are any.
    """
    try:
        return list(classifier.predict(texts))
    except Exception as error:
        if len(texts) == 1:
            return [error]
        middle = len(texts) // 2
        return classify_isolating(classifier, texts[:middle]) + classify_isolating(
            classifier, texts[middle:]
        )


def _document_row(
    document: QueuedDocument, prediction: Prediction, model_version: str, now: datetime
) -> dict[str, Any]:
    return _classification(prediction, model_version, now) | {
        "id": document.id,
        "content": document.content,
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


@dramatiq.actor(
    actor_name=INGEST_ACTOR,
    queue_name=QUEUE_NAME,
    max_retries=20,
    min_backoff=1_000,
    max_backoff=60_000,
)
def ingest_documents(documents: list[dict[str, Any]]) -> None:
    ingest(documents, engine=get_engine(), classifier=model_cache().active(), ledger=ledger)


def reclassify(ids: Sequence[str], *, engine: Engine, classifier: Classifier) -> int:
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
            logger.warning("document %s not reclassified: %r", document_id, outcome)
    return update_classifications(engine, updates)


@dramatiq.actor(
    actor_name=RECLASSIFY_ACTOR,
    queue_name=RECLASSIFY_QUEUE,
    priority=100,  # Dramatiq runs lower numbers first: new documents (priority 0) go ahead
    max_retries=20,
    min_backoff=1_000,
    max_backoff=60_000,
)
def reclassify_documents(ids: list[str], model_version: str) -> None:
    engine = get_engine()
    reclassify(ids, engine=engine, classifier=model_cache().get(model_version))
