"""The workers' metrics: each process counts its batches, and adds its counts into the metrics
store (`metrics_store.py`: a Redis hash, or a table) every `METRICS_FLUSH_SECONDS`, so that the
API can serve the totals of workers running anywhere.
"""

from __future__ import annotations

import bisect
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from docingest.observe.metrics_store import MetricsStore, MetricsStoreUnavailableError
from docingest.schemas import utcnow


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
    "Documents per batch a worker classified and stored (the messages it held, coalesced).",
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


MODEL_REFUSED = CounterSpec(
    "docingest_worker_model_refused",
    "Per model, loads a worker refused (checksum, no scoring form, one its docingest cannot "
    "read): it serves the last model it loaded, or the previously active one, instead.",
    label="model_version",
)
COUNTERS = (PROCESSED, FAILED, MESSAGES, LOW_CONFIDENCE, MODEL_REFUSED)


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
        """What `worker.ingest` did with one batch, its documents' lag measured now."""
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
