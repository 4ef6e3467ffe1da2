"""Dramatiq middleware of each worker process: metrics flushed, ledger reconciled, batches logged.

Once the worker has booted (after Dramatiq forked it), the process freezes what it imported out
of the garbage collector's sight and starts two daemon threads:
one adds `worker_metrics` into the metrics store every METRICS_FLUSH_SECONDS and marks the
process as seen there (a process that stops cleanly removes its mark: one that stays without
being renewed is a worker that died), one runs `ledger.reconcile` every RECONCILE_SECONDS.
A third runs the change feed's relay every CHANGES_RELAY_SECONDS (one process at a time numbers
the committed changes and prunes those older than CHANGES_RETENTION: `changes/relay.py`).
A fourth, every MODEL_REFRESH_SECONDS, reports the environment the process loads models in and
loads the models an activation asked it to check (`model/environment.py`).
Each message's log lines carry its id and document count. When traced, `TracingMiddleware`
shows actors their message and exports the last spans at shutdown.
"""

from __future__ import annotations

import faulthandler
import gc
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import dramatiq
import structlog
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage, Retries
from sqlalchemy.exc import SQLAlchemyError

from docingest.changes.relay import relay
from docingest.ledger import LedgerUnavailableError
from docingest.ledger.floor import prune_floors
from docingest.model import environment, registry
from docingest.observe import tracing
from docingest.observe.metrics_store import MetricsStoreUnavailableError
from docingest.observe.worker_metrics import MESSAGES, worker_id, worker_metrics
from docingest.queue import BrokerUnavailableError
from docingest.queue.messages import document_count
from docingest.settings import Settings
from docingest.worker.reconcile import reconcile
from docingest.worker.resources import Resources

logger = structlog.get_logger(__name__)

# A process that raised no version floor for this long is gone: its row can go (but the highest).
FLOOR_IDLE = timedelta(hours=1)


class WorkerMiddleware(dramatiq.Middleware):
    def __init__(self, settings: Settings, resources: Callable[[], Resources]) -> None:
        self._settings = settings
        self._resources = resources
        self._stop = threading.Event()
        self._local = threading.local()
        self._worker_id = worker_id()
        self._environment = ""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        settings = self._settings
        self._worker_id = worker_id()  # the forked process's own
        self._every(settings.metrics_flush_seconds, self._flush, "metrics")
        self._every(settings.reconcile_seconds, self._reconcile, "reconcile")
        self._every(settings.changes_relay_seconds, self._relay, "changes-relay")
        self._environment = environment.fingerprint()
        self._every(settings.model_refresh_seconds, self._check_models, "model-checks")
        # `kill -USR1 <worker process>` writes every thread's stack to its log: what a worker
        # that stopped making progress is waiting on (docs/operations.md). To the process's own
        # stderr (fd 2): its sys.stderr is a pipe of framed messages to Dramatiq's main process.
        faulthandler.register(signal.SIGUSR1, file=2, all_threads=True)
        # What the process imported (~125,000 objects: SQLAlchemy, pydantic, Dramatiq, numpy;
        # ~190,000 when workers imported scikit-learn and SciPy) lives as long as it does: out of
        # the collector's sight, a full collection takes milliseconds, not the 35 ms of CPU
        # measured on an idle worker process (220-250 ms in the benchmark's, with scikit-learn).
        gc.freeze()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        self._flush()
        try:
            self._resources().connections.metrics.forget([self._worker_id])
        except MetricsStoreUnavailableError as error:
            logger.warning("worker not removed from the workers seen", error=str(error))

    def _every(self, seconds: float, job: Callable[[], None], name: str) -> None:
        """`job` every `seconds`, the first time after a random part of it: processes started
        together do not all reconcile at once."""

        def loop() -> None:
            delay = seconds * random.random()  # noqa: S311 (spreading load, not security)
            while not self._stop.wait(delay):
                job()
                delay = seconds

        threading.Thread(target=loop, name=name, daemon=True).start()

    def _flush(self) -> None:
        store = self._resources().connections.metrics
        try:
            worker_metrics.flush(store)
            store.mark_seen(self._worker_id, time.time())
        except MetricsStoreUnavailableError as error:
            logger.warning("worker metrics not flushed, kept for the next try", error=str(error))

    def _check_models(self) -> None:
        engine = self._resources().connections.engine
        try:
            environment.report(
                engine, self._environment, refresh_seconds=self._settings.model_refresh_seconds
            )
            registry.check_requested(engine, self._environment)
        except SQLAlchemyError as error:
            logger.warning("models not checked, trying again later", error=str(error))
        except Exception:
            logger.exception("model check failed")

    def _relay(self) -> None:
        try:
            relay(self._resources().connections.engine, retention=self._settings.changes_retention)
        except SQLAlchemyError as error:
            logger.warning("changes not relayed, trying again later", error=str(error))
        except Exception:
            logger.exception("change relay failed")

    def _reconcile(self) -> None:
        connections = self._resources().connections
        settings = self._settings
        try:
            done = reconcile(
                connections.ledger,
                connections.engine,
                connections.queue,
                older_than=timedelta(seconds=settings.reconcile_after_seconds),
                abandon_after=timedelta(seconds=settings.reconcile_abandon_seconds),
                every=timedelta(seconds=settings.reconcile_seconds),
            )
        except (LedgerUnavailableError, BrokerUnavailableError) as error:
            logger.warning("ledger not reconciled, trying again later", error=str(error))
            return
        except Exception:
            logger.exception("ledger reconciliation failed")
            return
        if done is None:
            return  # another process's turn
        if done.settled or done.dropped:
            logger.info("ledger reconciled", settled=done.settled, dropped=done.dropped)
        try:
            prune_floors(connections.engine, idle=FLOOR_IDLE)
        except SQLAlchemyError as error:
            logger.warning("version floors not pruned, trying again later", error=str(error))

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        structlog.contextvars.bind_contextvars(
            message_id=message.message_id, documents=document_count(message.args)
        )
        self._local.started = time.perf_counter()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: object | None = None,
        exception: BaseException | None = None,
    ) -> None:
        seconds = round(
            time.perf_counter() - getattr(self._local, "started", time.perf_counter()), 4
        )
        if exception is None:
            worker_metrics.count(MESSAGES, label="ok")
            logger.debug("message processed", seconds=seconds)
        else:
            worker_metrics.count(MESSAGES, label="error")
            logger.warning(
                "message failed, Dramatiq retries it",
                seconds=seconds,
                retries=message.options.get("retries", 0),
                exc_info=exception,
            )
        structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        structlog.contextvars.clear_contextvars()


class DurableRetries(Retries):
    """Dramatiq's retries, except that a retry whose delayed copy cannot be published (a full
    delay queue, a resource alarm, a lost connection) fails the original instead of losing it.

    Dramatiq publishes the copy inside `after_process_message`, logs what that raises, and then
    acknowledges the original: no copy would be left anywhere. Failed, the original is
    dead-lettered by the nack that follows (RabbitMQ: `<queue>.XQ`; Redis: `<queue>.XQ`), listed
    by `GET /failures/dead-letters` and brought back by `docingest replay`. A publish that did
    happen although it raised leaves a second copy, which versions make harmless.
    """

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: object | None = None,
        exception: BaseException | None = None,
    ) -> None:
        try:
            retry = super().after_process_message
            retry(broker, message, result=result, exception=exception)  # type: ignore[no-untyped-call]
        except Exception as error:
            logger.error(
                "retry not published, the message is dead-lettered instead",
                message_id=message.message_id,
                error=str(error),
            )
            message.fail()


def use_durable_retries(broker: dramatiq.Broker) -> None:
    """Put `DurableRetries` where the broker's default `Retries` stood (same options)."""
    for index, middleware in enumerate(broker.middleware):
        if type(middleware) is Retries:
            broker.middleware[index] = DurableRetries(
                max_retries=middleware.max_retries,
                min_backoff=middleware.min_backoff,
                max_backoff=middleware.max_backoff,
                retry_when=middleware.retry_when,
            )


class TracingMiddleware(CurrentMessage):
    """The message being processed, for the actor to read the requests it names
    (`tracing.message_traceparents`); the spans still buffered are exported once the worker has
    stopped, since Dramatiq's worker processes end without running atexit handlers."""

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        tracing.shutdown()
