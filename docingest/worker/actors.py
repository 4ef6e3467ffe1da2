"""The Dramatiq actors, as `dramatiq docingest.worker.actors` loads them.

Importing this module configures the process, which is what Dramatiq's command line expects:
logging, the orjson encoder, the broker of BROKER_URL as Dramatiq's global one, and the worker
middleware. Everything else a worker does lives in `docingest.worker.ingest`.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import structlog

from docingest.observe import tracing
from docingest.observe.logs import configure_logging
from docingest.queue import install, open_queue
from docingest.queue.names import (
    DOCUMENTS_QUEUE,
    INGEST_ACTOR,
    RECLASSIFY_ACTOR,
    RECLASSIFY_QUEUE,
)
from docingest.settings import get_settings
from docingest.worker.coalesce import Coalescer
from docingest.worker.ingest import ingest, reclassify
from docingest.worker.middleware import TracingMiddleware, WorkerMiddleware, use_durable_retries
from docingest.worker.resources import resources

configure_logging(get_settings())
broker = install(open_queue(get_settings()))
use_durable_retries(broker)
broker.add_middleware(WorkerMiddleware(get_settings(), resources))
if tracing.configure("docingest-worker", get_settings()) is not None:
    broker.add_middleware(TracingMiddleware())
logger = structlog.get_logger(__name__)

RETRIES: dict[str, Any] = {"max_retries": 20, "min_backoff": 1_000, "max_backoff": 60_000}


def ingest_batch(documents: list[dict[str, Any]], messages: int, links: list[str]) -> None:
    """`links`: the requests the batch's messages name, when traced."""
    started = time.perf_counter()
    current = resources()
    with tracing.processing(links, messages=messages, documents=len(documents)):
        ingest(
            documents,
            engine=current.connections.engine,
            classifier=current.models.active(),
            ledger=current.connections.ledger,
            low_confidence_threshold=get_settings().low_confidence_threshold,
        )
    seconds = round(time.perf_counter() - started, 4)
    logger.info("batch processed", documents=len(documents), messages=messages, seconds=seconds)


coalescer = Coalescer(ingest_batch, max_documents=get_settings().worker_max_batch, lanes=2)


@dramatiq.actor(actor_name=INGEST_ACTOR, queue_name=DOCUMENTS_QUEUE, **RETRIES)
def ingest_documents(documents: list[dict[str, Any]]) -> None:
    coalescer.submit(documents, tracing.message_traceparents())


# Dramatiq runs lower priorities first: new documents (priority 0) go ahead.
@dramatiq.actor(actor_name=RECLASSIFY_ACTOR, queue_name=RECLASSIFY_QUEUE, priority=100, **RETRIES)
def reclassify_documents(ids: list[str], model_version: str) -> None:
    current = resources()
    reclassify(ids, engine=current.connections.engine, classifier=current.models.get(model_version))
