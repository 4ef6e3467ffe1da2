"""The figures of `GET /stats` and `docingest stats`: what is stored, waiting, failing, how fast.

Counts come from the database (documents per category, tombstones left out; failures not
superseded), waiting documents from the ledger, queue depths from the queue, throughput from
`updated_at` (documents stored per minute), and the end-to-end lag from the workers' metrics
store (cumulative sum and count: a client polling twice gets the mean lag between its polls).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from docingest import store
from docingest.connections import Connections
from docingest.metrics import FAILED, LAG_SECONDS, PROCESSED, HistogramSpec
from docingest.schemas import Lag, MinuteCount, Stats, StatusCounts, WorkerTotals, utcnow

THROUGHPUT_MINUTES = 15


def collect_stats(connections: Connections) -> Stats:
    """Every figure, read now: a few indexed queries, the queue, the ledger, the workers' totals."""
    now = utcnow()
    engine = connections.engine
    categories = store.count_categories(engine)
    return Stats(
        generated_at=now,
        categories=categories,
        statuses=StatusCounts(
            stored=sum(categories.values()),
            queued=connections.ledger.pending_count(),
            failed=store.count_failures(engine),
        ),
        queues=connections.queue.depths(),
        throughput_per_minute=stored_per_minute(engine, now),
        **worker_figures(connections.metrics.read()),
    )


def stored_per_minute(engine: Engine, now: datetime) -> list[MinuteCount]:
    """Documents stored in each of the last THROUGHPUT_MINUTES minutes, oldest first, zeros in."""
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=THROUGHPUT_MINUTES - 1)
    counts = store.stored_per_minute(engine, first)
    minutes = [first + timedelta(minutes=i) for i in range(THROUGHPUT_MINUTES)]
    return [MinuteCount(minute=m, documents=counts.get(m, 0)) for m in minutes]


def worker_figures(values: dict[str, float]) -> dict[str, Any]:
    count = int(values.get(f"{LAG_SECONDS.name}|count", 0))
    total = values.get(f"{LAG_SECONDS.name}|sum", 0.0)
    lag = Lag(
        documents=count,
        sum_seconds=total,
        mean_seconds=total / count if count else None,
        p50_seconds=quantile_bound(LAG_SECONDS, values, 0.5),
        p95_seconds=quantile_bound(LAG_SECONDS, values, 0.95),
    )
    workers = WorkerTotals(
        documents_processed=int(values.get(PROCESSED.name, 0)),
        documents_failed=int(values.get(FAILED.name, 0)),
    )
    return {"lag": lag, "workers": workers}


def quantile_bound(spec: HistogramSpec, values: dict[str, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile q (None if empty or in the +Inf bucket)."""
    count = values.get(f"{spec.name}|count", 0.0)
    if not count:
        return None
    cumulative = 0.0
    for le in spec.buckets:
        cumulative += values.get(f"{spec.name}|{le}", 0.0)
        if cumulative >= q * count:
            return float(le)
    return None
