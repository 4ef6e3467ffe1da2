"""What the API reads at each scrape besides its own metrics: the workers' totals from the
metrics store, which workers were seen, the queues' depths, the pending documents (the ledger),
the agreement of people's labels with the model's categories, the change relay's lag and each
webhook endpoint's deliveries and lag (the database).

A part that cannot be read now is left out of the scrape (and logged), not reported as 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from docingest.changes.relay import Lag, relay_lag
from docingest.changes.webhooks.endpoints import EndpointStatus, list_endpoints
from docingest.labels.repository import Agreement, label_agreement
from docingest.ledger import Ledger, LedgerUnavailableError
from docingest.observe.metrics_store import MetricsStore, MetricsStoreUnavailableError
from docingest.observe.worker_metrics import COUNTERS, HISTOGRAMS, HistogramSpec
from docingest.queue import BrokerUnavailableError, MessageQueue
from docingest.schemas import as_utc, utcnow

WORKER_LAST_SEEN = "docingest_worker_last_seen_timestamp_seconds"


# How long a worker that stopped flushing without saying goodbye (killed, its host lost) stays
# in /metrics, where the WorkerMissing alert sees it; then it is forgotten.
WORKER_SEEN_RETENTION_SECONDS = 3600.0


logger = structlog.get_logger(__name__)


class DeploymentCollector(Collector):
    """At each scrape: the workers' totals, each queue's depth, the pending documents and the
    agreement of labels with categories over each model's `agreement_window` newest labels.

    A part that cannot be read now is left out of the scrape (and logged), not reported as 0.
    """

    def __init__(
        self,
        queue: MessageQueue,
        ledger: Ledger,
        store: MetricsStore,
        engine: Engine,
        agreement_window: int,
    ) -> None:
        self._queue = queue
        self._ledger = ledger
        self._store = store
        self._engine = engine
        self._agreement_window = agreement_window

    def collect(self) -> Iterator[Any]:
        with _logged("worker metrics"):
            yield from worker_families(self._store.read())
        with _logged("workers seen"):
            yield self._workers_seen()
        with _logged("queue depths"):
            yield queue_family(self._queue.depths())
        with _logged("pending documents"):
            yield GaugeMetricFamily(
                "docingest_queue_pending_documents",
                "Documents accepted and not yet stored or failed (the ledger's pending set).",
                value=self._ledger.pending_count(),
            )
        with _logged("label agreement"):
            yield from agreement_families(label_agreement(self._engine, self._agreement_window))
        with _logged("change relay"):
            yield from relay_families(relay_lag(self._engine))
        with _logged("webhooks"):
            yield from webhook_families(list_endpoints(self._engine))

    def _workers_seen(self) -> GaugeMetricFamily:
        """Workers seen within WORKER_SEEN_RETENTION_SECONDS; older ones are forgotten here."""
        family = GaugeMetricFamily(
            WORKER_LAST_SEEN,
            "Unix time of each worker process's last metrics flush (every METRICS_FLUSH_SECONDS); "
            "a worker that stops cleanly is removed, one that died stays until forgotten.",
            labels=["worker"],
        )
        horizon = time.time() - WORKER_SEEN_RETENTION_SECONDS
        seen = self._store.seen()
        if forgotten := [worker for worker, at in seen.items() if at < horizon]:
            self._store.forget(forgotten)
        for worker, at in sorted(seen.items()):
            if at >= horizon:
                family.add_metric([worker], at)
        return family


@contextmanager
def _logged(part: str) -> Iterator[None]:
    try:
        yield
    except (
        BrokerUnavailableError,
        LedgerUnavailableError,
        MetricsStoreUnavailableError,
        SQLAlchemyError,
    ) as error:
        logger.warning("metrics: part of the scrape unreadable", part=part, error=str(error))


def relay_families(lag: Lag) -> Iterator[GaugeMetricFamily]:
    """The change feed's relay behind the writers: what it has not numbered yet."""
    yield GaugeMetricFamily(
        "docingest_changes_unrelayed",
        "Committed changes the relay has not numbered yet (not in GET /changes yet).",
        value=lag.waiting,
    )
    yield GaugeMetricFamily(
        "docingest_changes_relay_lag_seconds",
        "Age of the oldest change the relay has not numbered (0 when none waits).",
        value=lag.oldest_seconds,
    )


def webhook_families(statuses: Sequence[EndpointStatus]) -> Iterator[Any]:
    """Per webhook endpoint (its id): deliveries by outcome, how far behind the feed it is, how
    long it has been failing, whether it is paused."""
    labels = ["endpoint"]
    deliveries = CounterMetricFamily(
        "docingest_webhook_deliveries",
        "Deliveries to each webhook endpoint by outcome: `ok` (a 2xx), `failed` (retried with "
        "backoff).",
        labels=[*labels, "outcome"],
    )
    lag_changes = GaugeMetricFamily(
        "docingest_webhook_lag_changes",
        "Feed positions between each endpoint's and the head (those its filters leave out too).",
        labels=labels,
    )
    lag_seconds = GaugeMetricFamily(
        "docingest_webhook_lag_seconds",
        "Age of the oldest change each endpoint has not been delivered yet (0 when caught up).",
        labels=labels,
    )
    failing = GaugeMetricFamily(
        "docingest_webhook_failing_seconds",
        "How long each endpoint's deliveries have failed in a row (0 when the last succeeded); "
        "paused past WEBHOOK_DISABLE_AFTER.",
        labels=labels,
    )
    paused = GaugeMetricFamily(
        "docingest_webhook_paused",
        "1 for an endpoint paused (failing too long, or its position pruned) until resumed.",
        labels=labels,
    )
    now = utcnow()
    for status in statuses:
        endpoint, name = status.endpoint, [str(status.endpoint.id)]
        deliveries.add_metric([*name, "ok"], endpoint.deliveries)
        deliveries.add_metric([*name, "failed"], endpoint.failures)
        lag_changes.add_metric(name, status.lag.changes)
        lag_seconds.add_metric(name, status.lag.seconds)
        since = endpoint.failing_since
        failing.add_metric(name, (now - as_utc(since)).total_seconds() if since else 0.0)
        paused.add_metric(name, 1.0 if endpoint.state == "paused" else 0.0)
    yield from (deliveries, lag_changes, lag_seconds, failing, paused)


def queue_family(depths: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "docingest_queue_depth",
        "Messages in each Dramatiq queue: waiting, delayed for a retry (.DQ), dead (.XQ).",
        labels=["queue"],
    )
    for queue, depth in depths.items():
        family.add_metric([queue], depth)
    return family


def agreement_families(agreements: Sequence[Agreement]) -> Iterator[GaugeMetricFamily]:
    labels = GaugeMetricFamily(
        "docingest_labels_recent",
        "Per model, its most recently labelled documents counted (at most AGREEMENT_WINDOW).",
        labels=["model_version"],
    )
    ratio = GaugeMetricFamily(
        "docingest_label_agreement_ratio",
        "Per model, the share of its most recent labels equal to its category.",
        labels=["model_version"],
    )
    for agreement in agreements:
        labels.add_metric([agreement.model_version], agreement.labels)
        ratio.add_metric([agreement.model_version], agreement.agreeing / agreement.labels)
    yield labels
    yield ratio


def worker_families(values: dict[str, float]) -> Iterator[Any]:
    """Prometheus families from the hash's fields (absent fields count as zero)."""
    for counter in COUNTERS:
        if counter.label is None:
            family = CounterMetricFamily(counter.name, counter.help)
            family.add_metric([], values.get(counter.name, 0.0))
        else:
            family = CounterMetricFamily(counter.name, counter.help, labels=[counter.label])
            prefix = f"{counter.name}|"
            for field, value in sorted(values.items()):
                if field.startswith(prefix):
                    family.add_metric([field.removeprefix(prefix)], value)
        yield family
    for histogram in HISTOGRAMS:
        yield histogram_family(histogram, values)


def histogram_family(spec: HistogramSpec, values: dict[str, float]) -> HistogramMetricFamily:
    if spec.label is None:
        family = HistogramMetricFamily(spec.name, spec.help)
        family.add_metric([], *_buckets(spec.name, spec, values))
        return family
    family = HistogramMetricFamily(spec.name, spec.help, labels=[spec.label])
    for label in label_values(spec, values):
        family.add_metric([label], *_buckets(f"{spec.name}|{label}", spec, values))
    return family


def label_values(spec: HistogramSpec, values: dict[str, float]) -> list[str]:
    """The label values a labelled histogram's fields name (`<name>|<label value>|count`)."""
    prefix = f"{spec.name}|"
    return sorted(
        field.removeprefix(prefix).removesuffix("|count")
        for field in values
        if field.startswith(prefix) and field.endswith("|count")
    )


def _buckets(
    prefix: str, spec: HistogramSpec, values: dict[str, float]
) -> tuple[list[tuple[str, float]], float]:
    cumulative, buckets = 0.0, []
    bounds: tuple[float | str, ...] = (*spec.buckets, "+Inf")
    for le in bounds:
        cumulative += values.get(f"{prefix}|{le}", 0.0)
        buckets.append((_le_label(le), cumulative))
    return buckets, values.get(f"{prefix}|sum", 0.0)


def _le_label(le: float | str) -> str:
    return le if isinstance(le, str) else repr(float(le))
