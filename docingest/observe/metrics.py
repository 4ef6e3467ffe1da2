"""Prometheus metrics of the API, the workers and the queue, all served by the API's `/metrics`.

- The API's own (requests, latency) live in this process's prometheus-client registry, or, with
  `PROMETHEUS_MULTIPROC_DIR` set, in prometheus-client's files shared by the API processes of
  one machine (uvicorn with several workers).
- Workers run anywhere, so each worker process adds its counts into the metrics store
  (`metrics_store.py`: a Redis hash, or a table) every `METRICS_FLUSH_SECONDS`; the API reads
  the totals at scrape time. The figures are totals over every worker that ever ran.
- Each worker process also stamps the metrics store with the time it last flushed, under its
  own id: `docingest_worker_last_seen_timestamp_seconds{worker}` says which workers are alive.
- Queue depths and pending documents are read from the queue and the ledger at scrape time,
  and the agreement of people's labels with the model's categories from the database.

docs/operations.md lists every metric.
"""

from __future__ import annotations

import bisect
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docingest.documents.store import Agreement, label_agreement
from docingest.ledger import Ledger, LedgerUnavailableError
from docingest.observe.metrics_store import MetricsStore, MetricsStoreUnavailableError
from docingest.queue import BrokerUnavailableError, MessageQueue
from docingest.schemas import utcnow

UNMATCHED_ROUTE = "<unmatched>"
WORKER_LAST_SEEN = "docingest_worker_last_seen_timestamp_seconds"
# How long a worker that stopped flushing without saying goodbye (killed, its host lost) stays
# in /metrics, where the WorkerMissing alert sees it; then it is forgotten.
WORKER_SEEN_RETENTION_SECONDS = 3600.0

logger = structlog.get_logger(__name__)

# --- the API ----------------------------------------------------------------------------------

# One histogram, no separate counter: its `_count` series is the number of requests by method,
# route and status, and each observation costs ~2 µs where a counter would add ~1.5 µs more.
HTTP_LATENCY = Histogram(
    "docingest_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method, route template and "
    "status code; `_count` counts the requests.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RequestMetrics:
    """ASGI middleware counting requests by route *template* (`/documents/{id}`), not path.

    The labelled child is looked up once per (method, route, status) and kept: the hot path
    costs a dictionary lookup and a histogram observation, ~5 µs in all (docs/operations.md).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._histograms: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            self.record(scope, status, time.perf_counter() - started)

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
        method: str = scope["method"]
        histogram = self._histograms.get((method, route, status))
        if histogram is None:
            histogram = self._histograms[method, route, status] = HTTP_LATENCY.labels(
                method, route, str(status)
            )
        histogram.observe(seconds)


def api_registry() -> CollectorRegistry:
    """This process's metrics, or with PROMETHEUS_MULTIPROC_DIR those of every API process."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


# --- the workers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistogramSpec:
    name: str
    help: str
    buckets: tuple[float, ...]
    label: str | None = None


@dataclass(frozen=True)
class CounterSpec:
    name: str
    help: str
    label: str | None = None


BATCH_SIZE = HistogramSpec(
    "docingest_worker_batch_size",
    "Documents per queue message a worker processed.",
    (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
)
CLASSIFICATION_SECONDS = HistogramSpec(
    "docingest_worker_classification_seconds",
    "Time to classify one batch (one model call, more when bisecting failures).",
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DATABASE_SECONDS = HistogramSpec(
    "docingest_worker_database_seconds",
    "Time to store one batch (one transaction).",
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LAG_SECONDS = HistogramSpec(
    "docingest_end_to_end_lag_seconds",
    "Per document, from its acceptance by the API (202) to its storage by a worker.",
    (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
CONFIDENCE = HistogramSpec(
    "docingest_worker_confidence",
    "Per model, the confidence of each document classified on its way in (drift: a model "
    "growing unsure of what arrives).",
    (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
    label="model_version",
)
HISTOGRAMS = (BATCH_SIZE, CLASSIFICATION_SECONDS, DATABASE_SECONDS, LAG_SECONDS, CONFIDENCE)

PROCESSED = CounterSpec(
    "docingest_worker_documents_processed", "Documents a worker finished: stored or failed."
)
FAILED = CounterSpec(
    "docingest_worker_documents_failed", "Documents the classifier failed on (see /failures)."
)
MESSAGES = CounterSpec(
    "docingest_worker_messages",
    "Queue messages processed, by outcome; `error` ones are retried, then dead-lettered.",
    label="outcome",
)
LOW_CONFIDENCE = CounterSpec(
    "docingest_worker_low_confidence_documents",
    "Per model, documents classified on their way in with a confidence under "
    "LOW_CONFIDENCE_THRESHOLD; divided by the confidence histogram's `_count`, the share.",
    label="model_version",
)
COUNTERS = (PROCESSED, FAILED, MESSAGES, LOW_CONFIDENCE)


class WorkerMetrics:
    """One process's counts since its last flush, as increments of the metrics store's fields.

    Field names: `<counter>` or `<counter>|<label value>`, and for histograms `<name>|<le>`
    (a bucket's own count, not cumulative), `<name>|sum` and `<name>|count`, with the label
    value after the name when the histogram has one: `<name>|<label value>|<le>`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._increments: dict[str, float] = {}

    def count(self, counter: CounterSpec, amount: float = 1, label: str | None = None) -> None:
        field = counter.name if label is None else f"{counter.name}|{label}"
        with self._lock:
            self._add(field, amount)

    def observe(
        self, histogram: HistogramSpec, values: Iterable[float], label: str | None = None
    ) -> None:
        """Counted per bucket first: a batch's lags are hundreds of values, its buckets few."""
        values = list(values)
        per_bucket = Counter(bisect.bisect_left(histogram.buckets, value) for value in values)
        prefix = histogram.name if label is None else f"{histogram.name}|{label}"
        with self._lock:
            for index, amount in per_bucket.items():
                le = histogram.buckets[index] if index < len(histogram.buckets) else "+Inf"
                self._add(f"{prefix}|{le}", amount)
            self._add(f"{prefix}|sum", sum(values))
            self._add(f"{prefix}|count", len(values))

    def _add(self, field: str, amount: float) -> None:
        self._increments[field] = self._increments.get(field, 0) + amount

    def record_batch(
        self,
        accepted_at: Sequence[datetime],
        *,
        failed: int,
        classification_seconds: float,
        database_seconds: float,
    ) -> None:
        """What `worker.ingest` did with one message, its documents' lag measured now."""
        now = utcnow()
        self.count(PROCESSED, len(accepted_at))
        if failed:
            self.count(FAILED, failed)
        self.observe(BATCH_SIZE, [len(accepted_at)])
        self.observe(CLASSIFICATION_SECONDS, [classification_seconds])
        self.observe(DATABASE_SECONDS, [database_seconds])
        self.observe(LAG_SECONDS, [(now - moment).total_seconds() for moment in accepted_at])

    def record_confidences(
        self, model_version: str, confidences: Sequence[float], *, threshold: float
    ) -> None:
        """Drift: how sure one model was of the documents it classified on their way in."""
        if not confidences:
            return
        self.observe(CONFIDENCE, confidences, label=model_version)
        low = sum(confidence < threshold for confidence in confidences)
        if low:
            self.count(LOW_CONFIDENCE, low, label=model_version)

    def flush(self, store: MetricsStore) -> None:
        """Add the increments into the store; kept for the next flush if it does not answer."""
        with self._lock:
            increments, self._increments = self._increments, {}
        if not increments:
            return
        try:
            store.add(increments)
        except MetricsStoreUnavailableError:
            with self._lock:
                for field, amount in increments.items():
                    self._add(field, amount)
            raise


worker_metrics = WorkerMetrics()


def worker_id() -> str:
    """This worker process, among all of them on every machine: its host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --- scrape time: the workers' totals and the queue -------------------------------------------


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
