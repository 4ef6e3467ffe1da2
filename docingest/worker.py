"""Where a document is classified and stored: the actors that `dramatiq docingest.worker` runs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import dramatiq
from sqlalchemy import Engine

from docingest.broker import INGEST_ACTOR, QUEUE_NAME, setup_broker
from docingest.classifier import Classifier, Prediction, get_classifier
from docingest.db import get_engine, store_batch
from docingest.ledger import Ledger, ledger_for
from docingest.models import QueuedDocument, utcnow
from docingest.settings import get_settings

logger = logging.getLogger(__name__)

broker = setup_broker(get_settings())
ledger = ledger_for(broker)


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
    outcomes = classify_isolating(classifier, [document.content for document in queued])
    now = utcnow()
    stored, failed = [], []
    for document, outcome in zip(queued, outcomes, strict=True):
        if isinstance(outcome, Prediction):
            stored.append(_document_row(document, outcome, classifier.version, now))
        else:
            failed.append(failure_row(document, f"{type(outcome).__name__}: {outcome}", now))
    store_batch(engine, stored, failed)
    ledger.settle([(document.id, document.version) for document in queued])
    if failed:
        logger.warning("%d of %d documents failed classification", len(failed), len(queued))


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
    return {
        "id": document.id,
        "content": document.content,
        "category": prediction.category,
        "confidence": prediction.confidence,
        "model_version": model_version,
        "version": document.version,
        "created_at": document.accepted_at,
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
    ingest(
        documents,
        engine=get_engine(),
        classifier=get_classifier(get_settings().model_path),
        ledger=ledger,
    )
