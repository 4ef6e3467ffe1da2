"""The queues and actors both sides agree on, importable without any broker library."""

from __future__ import annotations

DOCUMENTS_QUEUE = "documents"
INGEST_ACTOR = "documents.ingest"
# Reclassification has its own queue, so a large run never sits in front of new documents.
RECLASSIFY_QUEUE = "reclassify"
RECLASSIFY_ACTOR = "documents.reclassify"
QUEUES = (DOCUMENTS_QUEUE, RECLASSIFY_QUEUE)

# Dramatiq's suffixes: a queue's retries wait in `<queue>.DQ`, its dead letters in `<queue>.XQ`.
DELAYED = ".DQ"
DEAD = ".XQ"


def depth_names() -> list[str]:
    """Every queue's waiting, delayed and dead parts, in the order depths are reported."""
    return [f"{queue}{suffix}" for queue in QUEUES for suffix in ("", DELAYED, DEAD)]
