"""The Dramatiq actors, as `dramatiq docingest.worker.actors` loads them.

Importing this module configures the process, which is what Dramatiq's command line expects:
logging, the orjson encoder, the broker of BROKER_URL as Dramatiq's global one, and the worker
middleware. Everything else a worker does lives in `docingest.worker.ingest`.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from docingest.logs import configure_logging
from docingest.queue import install, open_queue
from docingest.queue.names import (
    DOCUMENTS_QUEUE,
    INGEST_ACTOR,
    RECLASSIFY_ACTOR,
    RECLASSIFY_QUEUE,
)
from docingest.settings import get_settings
from docingest.worker.ingest import ingest, reclassify
from docingest.worker.middleware import WorkerMiddleware
from docingest.worker.resources import resources

configure_logging(get_settings())
broker = install(open_queue(get_settings()))
broker.add_middleware(WorkerMiddleware(get_settings(), resources))

RETRIES: dict[str, Any] = {"max_retries": 20, "min_backoff": 1_000, "max_backoff": 60_000}


@dramatiq.actor(actor_name=INGEST_ACTOR, queue_name=DOCUMENTS_QUEUE, **RETRIES)
def ingest_documents(documents: list[dict[str, Any]]) -> None:
    current = resources()
    ingest(
        documents,
        engine=current.connections.engine,
        classifier=current.models.active(),
        ledger=current.connections.ledger,
        low_confidence_threshold=get_settings().low_confidence_threshold,
    )


# Dramatiq runs lower priorities first: new documents (priority 0) go ahead.
@dramatiq.actor(actor_name=RECLASSIFY_ACTOR, queue_name=RECLASSIFY_QUEUE, priority=100, **RETRIES)
def reclassify_documents(ids: list[str], model_version: str) -> None:
    current = resources()
    reclassify(ids, engine=current.connections.engine, classifier=current.models.get(model_version))
