"""What became of a document: the newest version known (stored, failed or queued) decides."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine

from docingest.documents import store
from docingest.failures.repository import get_failure
from docingest.ledger import Ledger
from docingest.schemas import DocumentStatus


def document_status(
    engine: Engine, ledger: Ledger, document_id: uuid.UUID
) -> DocumentStatus | None:
    """The newest known version decides; at equal versions stored (or deleted: a tombstone is a
    stored version) beats failed beats queued.

    The ledger is read first: a worker that stores and settles a version between the two reads
    then shows up in the database read. Read the other way round, the database answered the
    older version and the ledger no longer knew the new one: an answer behind a 202.
    """
    candidates: list[tuple[int, int, DocumentStatus]] = []
    pending = ledger.pending_version(document_id)
    if document := store.get_document(engine, document_id):
        stored = "stored" if document.deleted_at is None else "deleted"
        candidates.append((document.version, 2, _status(document_id, stored, document.version)))
    if failure := get_failure(engine, document_id):
        status = _status(document_id, "failed", failure.version, failure.error)
        candidates.append((failure.version, 1, status))
    if pending is not None:
        candidates.append((pending, 0, _status(document_id, "queued", pending)))
    return max(candidates, key=lambda c: c[:2])[2] if candidates else None


def _status(
    document_id: uuid.UUID, status: str, version: int, error: str | None = None
) -> DocumentStatus:
    return DocumentStatus.model_validate(
        {"id": document_id, "status": status, "version": version, "error": error}
    )
