"""Deleting a document: a new version of it, taken from the ledger like any update.

A tombstone row (content emptied, classification cleared, `deleted_at` set) is written with the
workers' versioned upsert. An older version still queued cannot bring the document back; a newer
POST replaces the tombstone, and its row, which has no `deleted_at`, revives it.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Engine

from docingest.documents import store
from docingest.failures.repository import get_failure
from docingest.ledger import Ledger


def delete_document(engine: Engine, ledger: Ledger, document_id: uuid.UUID) -> bool:
    """Write a tombstone under a new version; False when there is nothing to delete.

    Something to delete: a stored (not deleted) row, a failure no row supersedes, or a version
    still queued. The ledger entry is settled even if the write fails, so that the id does not
    read as queued forever. Ledger unreachable: `LedgerUnavailableError` (a 503).
    """
    if not _deletable(engine, ledger, document_id):
        return False
    version, _ = ledger.reserve([document_id])
    try:
        store.store_tombstone(engine, document_id, version)
    finally:
        ledger.settle([(document_id, version)])
    return True


def _deletable(engine: Engine, ledger: Ledger, document_id: uuid.UUID) -> bool:
    document = store.get_document(engine, document_id)
    if document is not None and document.deleted_at is None:
        return True
    failure = get_failure(engine, document_id)
    if failure is not None and (document is None or document.version < failure.version):
        return True
    return ledger.pending_version(document_id) is not None
