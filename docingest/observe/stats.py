"""The figures of `GET /stats` and `docingest stats`: what is stored, waiting, failing, how fast.

Counts come from the database (documents per category, tombstones left out; failures not
superseded), waiting documents from the ledger, queue depths from the queue, throughput from
`updated_at` (documents stored per minute), and the end-to-end lag from the workers' metrics
store (cumulative sum and count: a client polling twice gets the mean lag between its polls).
Drift, per model: the workers' confidence figures (metrics store) and the agreement of people's
labels with the model's categories over its newest labels (database).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from docingest.connections import Connections
from docingest.failures.repository import count_failures
from docingest.labels.repository import Agreement, label_agreement
from docingest.observe import counts
from docingest.observe.collector import label_values
from docingest.observe.counts import count_categories
from docingest.observe.worker_metrics import (
    CONFIDENCE,
    FAILED,
    LAG_SECONDS,
    LOW_CONFIDENCE,
    PROCESSED,
    HistogramSpec,
)
from docingest.schemas import (
    Drift,
    Lag,
    MinuteCount,
    ModelDrift,
    Stats,
    StatusCounts,
    WorkerTotals,
    utcnow,
)

THROUGHPUT_MINUTES = 15


def collect_stats(connections: Connections) -> Stats:
    """Every figure, read now: a few indexed queries, the queue, the ledger, the workers' totals."""
    now = utcnow()
    engine = connections.engine
    settings = connections.settings
    categories = count_categories(engine)
    values = connections.metrics.read()
    agreements = label_agreement(engine, settings.agreement_window)
    return Stats(
        generated_at=now,
        categories=categories,
        statuses=StatusCounts(
            stored=sum(categories.values()),
            queued=connections.ledger.pending_count(),
            failed=count_failures(engine),
        ),
        queues=connections.queue.depths(),
        throughput_per_minute=stored_per_minute(engine, now),
        drift=Drift(
            low_confidence_threshold=settings.low_confidence_threshold,
            agreement_window=settings.agreement_window,
            models=model_drift(values, agreements),
        ),
        **worker_figures(values),
    )


def model_drift(values: dict[str, float], agreements: list[Agreement]) -> list[ModelDrift]:
    """Every model the workers classified with or people labelled the documents of."""
    by_version = {agreement.model_version: agreement for agreement in agreements}
    versions = sorted(set(label_values(CONFIDENCE, values)) | set(by_version))
    drift = []
    for version in versions:
        documents = int(values.get(f"{CONFIDENCE.name}|{version}|count", 0))
        low = values.get(f"{LOW_CONFIDENCE.name}|{version}", 0.0)
        total = values.get(f"{CONFIDENCE.name}|{version}|sum", 0.0)
        agreement = by_version.get(version)
        drift.append(
            ModelDrift(
                model_version=version,
                documents=documents,
                mean_confidence=total / documents if documents else None,
                low_confidence_share=low / documents if documents else None,
                labels=agreement.labels if agreement else 0,
                agreement=agreement.agreeing / agreement.labels if agreement else None,
            )
        )
    return drift


def stored_per_minute(engine: Engine, now: datetime) -> list[MinuteCount]:
    """Documents stored in each of the last THROUGHPUT_MINUTES minutes, oldest first, zeros in."""
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=THROUGHPUT_MINUTES - 1)
    stored = counts.stored_per_minute(engine, first)
    minutes = [first + timedelta(minutes=i) for i in range(THROUGHPUT_MINUTES)]
    return [MinuteCount(minute=m, documents=stored.get(m, 0)) for m in minutes]


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
