"""Where a document is classified and stored: the actors that `dramatiq docingest.worker` runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dramatiq
from sqlalchemy import Engine

from docingest.broker import INGEST_ACTOR, QUEUE_NAME, setup_broker
from docingest.classifier import Classifier, get_classifier
from docingest.db import get_engine, upsert_documents
from docingest.models import QueuedDocument, utcnow
from docingest.settings import get_settings

broker = setup_broker(get_settings())


def ingest(documents: Sequence[dict[str, Any]], *, engine: Engine, classifier: Classifier) -> None:
    """Classify a batch with one model call and store it with one upsert."""
    queued = [QueuedDocument.model_validate(document) for document in documents]
    predictions = classifier.predict([document.content for document in queued])
    stored_at = utcnow()
    upsert_documents(
        engine,
        [
            {
                "id": document.id,
                "content": document.content,
                "category": prediction.category,
                "confidence": prediction.confidence,
                "model_version": classifier.version,
                "version": document.version,
                "created_at": document.accepted_at,
                "updated_at": stored_at,
            }
            for document, prediction in zip(queued, predictions, strict=True)
        ],
    )


@dramatiq.actor(
    actor_name=INGEST_ACTOR,
    queue_name=QUEUE_NAME,
    max_retries=20,
    min_backoff=1_000,
    max_backoff=60_000,
)
def ingest_documents(documents: list[dict[str, Any]]) -> None:
    ingest(documents, engine=get_engine(), classifier=get_classifier(get_settings().model_path))
