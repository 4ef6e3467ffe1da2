"""Clearing pending entries that no worker will ever settle.

Leaks it repairs: a process that died between storing a batch and settling it, or between
reserving versions and publishing them; a `forget` that failed with the ledger unreachable; a
publish whose outcome was unknown and that did not happen. An entry older than the cut-off is
settled if the database holds its version (or a newer one), and dropped if no queued, delayed,
in-flight or dead-lettered message carries it. Brokers that cannot tell (RabbitMQ) keep an entry
whose publish the broker confirmed until it is settled, however long its message waits (a
database outage, dead letters awaiting replay), and any other until RECONCILE_ABANDON_SECONDS,
past which it is taken for a publish that never happened (else such leaks would add up to a
permanent 429). Every worker process tries every RECONCILE_SECONDS
(docingest/worker/middleware.py), and one of them runs it (a claim that expires): the scan of
the queue is done once per interval, not once per process. It is idempotent, and
compare-and-delete makes it safe beside live traffic.
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
    abandon_after: timedelta,
    every: timedelta | None = None,
    limit: int = 10_000,
) -> Reconciled | None:
    """`abandon_after`: where the broker cannot tell what its messages carry (RabbitMQ), the
    age past which an entry is dropped anyway. `every`: run only if no process has run it
    within that time (a claim on the ledger); None when another did."""
    if every is not None and not ledger.claim("reconcile", every.total_seconds()):
        return None
    now = utcnow()
    candidates = ledger.older_than(now - older_than, limit)
    if not candidates:
        return Reconciled(0, 0)
    stored = stored_versions(engine, [entry.id for entry in candidates])
    settled = [(e.id, e.version) for e in candidates if stored.get(e.id, -1) >= e.version]
    ledger.settle(settled)
    done = {document_id for document_id, _ in settled}
    waiting = [entry for entry in candidates if entry.id not in done]
    carried = queue.carried({str(entry.id) for entry in waiting}) if waiting else set()
    if carried is None:
        cutoff = now - abandon_after
        dropped = [(e.id, e.version) for e in waiting if not e.published and e.reserved_at < cutoff]
    else:
        dropped = [(e.id, e.version) for e in waiting if str(e.id) not in carried]
    ledger.forget(dropped)
    return Reconciled(len(settled), len(dropped))
