"""Clearing pending entries that no worker will ever settle.

Leaks it repairs: a process that died between storing a batch and settling it, or between
reserving versions and publishing them; a `forget` that failed with the ledger unreachable; a
publish whose outcome was unknown and that did not happen. An entry older than the cut-off is
settled if the database holds its version (or a newer one), and dropped if no queued, delayed,
in-flight or dead-lettered message carries it (brokers that cannot tell keep it). Every worker
process runs this every RECONCILE_SECONDS (docingest/worker/middleware.py); it is idempotent,
and compare-and-delete makes it safe beside live traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine

from docingest.documents.store import stored_versions
from docingest.ledger import Ledger
from docingest.queue import MessageQueue
from docingest.schemas import utcnow


@dataclass(frozen=True, slots=True)
class Reconciled:
    settled: int
    dropped: int


def reconcile(
    ledger: Ledger,
    engine: Engine,
    queue: MessageQueue,
    *,
    older_than: timedelta,
    limit: int = 10_000,
) -> Reconciled:
    candidates = ledger.older_than(utcnow() - older_than, limit)
    if not candidates:
        return Reconciled(0, 0)
    stored = stored_versions(engine, [entry.id for entry in candidates])
    settled = [(e.id, e.version) for e in candidates if stored.get(e.id, -1) >= e.version]
    ledger.settle(settled)
    done = {document_id for document_id, _ in settled}
    waiting = [entry for entry in candidates if entry.id not in done]
    carried = queue.carried({str(entry.id) for entry in waiting}) if waiting else set()
    if carried is None:
        return Reconciled(len(settled), 0)
    dropped = [(e.id, e.version) for e in waiting if str(e.id) not in carried]
    ledger.forget(dropped)
    return Reconciled(len(settled), len(dropped))
