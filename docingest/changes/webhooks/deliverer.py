"""The delivering process (`docingest webhooks deliver`, the Procfile's `webhooks`): every
WEBHOOK_POLL_SECONDS it leases the endpoints that have changes to deliver and are due, and
delivers to each on a thread of its own (WEBHOOK_CONCURRENCY at most), while one more thread
renews all its leases at once every third of WEBHOOK_LEASE_SECONDS.

Any number of these processes may run, on any hosts: the leases give each endpoint to one of
them at a time. One killed mid-delivery leaves its leases to expire; another takes them over and
delivers again from the stored positions. Stopped cleanly (SIGTERM, Ctrl-C), a process finishes
the tries under way and gives its leases back at once. Each pass also runs the change feed's
relay (a no-op while a worker's pass holds its lock), so changes made with no worker running
(labels set through the API) are delivered too.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from docingest.changes.relay import relay
from docingest.changes.webhooks import leases
from docingest.changes.webhooks.delivery import Policy, Turn, deliver
from docingest.db import autocommit
from docingest.settings import Settings
from docingest.tables import Webhook

logger = structlog.get_logger(__name__)


def process_owner() -> str:
    """This process among every delivering one: host, pid, and a random part (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Deliverer:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        owner: str | None = None,
    ) -> None:
        self.engine = engine
        self.owner = owner or process_owner()
        self.lease_seconds = settings.webhook_lease_seconds
        self.timeout_seconds = settings.webhook_timeout_seconds
        self.poll_seconds = settings.webhook_poll_seconds
        self.concurrency = settings.webhook_concurrency
        self.policy = Policy(
            batch_size=settings.webhook_batch_size,
            allow_private=settings.webhook_allow_private,
            retry_min_seconds=settings.webhook_retry_min_seconds,
            retry_max_seconds=settings.webhook_retry_max_seconds,
            disable_after=settings.webhook_disable_after,
        )
        # Made once: loading the certificate authorities took 0.1-0.4 s a client.
        self._tls = httpx.create_ssl_context()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        # Endpoint id -> when its lease was taken (monotonic); the last renewal's start.
        self._held: dict[uuid.UUID, float] = {}
        self._renewed_at = float("-inf")
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook")

    def run(self) -> None:
        """Deliver until `stop` is set; then finish the tries under way, give the leases back."""
        logger.info("webhook deliverer started", owner=self.owner, concurrency=self.concurrency)
        heartbeat = threading.Thread(target=self._heartbeat, name="webhook-leases", daemon=True)
        heartbeat.start()
        try:
            while not self.stop.is_set():
                self.poll()
                self.stop.wait(self.poll_seconds)
        finally:
            self._pool.shutdown(wait=True)
            heartbeat.join()
            try:
                leases.release(self.engine, self.owner)
            except SQLAlchemyError as error:
                logger.warning("webhook leases not given back: they expire", error=str(error))
            logger.info("webhook deliverer stopped", owner=self.owner)

    def poll(self) -> int:
        """One pass: relay, then lease what is due and start delivering it; how many started."""
        try:
            relay(self.engine)
            with self._lock:
                busy = set(self._held)
            taken_at = time.monotonic()  # before the lease: its expiry is no earlier than this
            taken = leases.take_due(
                self.engine,
                self.owner,
                self.lease_seconds,
                exclude=busy,
                limit=self.concurrency - len(busy),
            )
        except SQLAlchemyError as error:
            logger.warning("webhooks: database unreachable, trying again", error=str(error))
            return 0
        for endpoint in taken:
            with self._lock:
                self._held[endpoint.id] = taken_at
            future = self._pool.submit(self._turn, endpoint)
            future.add_done_callback(self._logged(endpoint))
        return len(taken)

    def _client(self) -> httpx.Client:
        """A client for one endpoint's turn: its connections are reused across the turn's
        batches, never for another endpoint (requests go to addresses, not names, so two
        endpoints on one address would share a connection set up for the other's name)."""
        return httpx.Client(
            timeout=httpx.Timeout(self.timeout_seconds),
            limits=httpx.Limits(max_connections=1),
            verify=self._tls,
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the address checked is the one used
        )

    def _turn(self, endpoint: Webhook) -> Turn:
        try:
            with self._client() as client, autocommit(self.engine) as connection:
                return deliver(
                    connection,
                    client,
                    endpoint,
                    self.owner,
                    self.policy,
                    may_post=lambda: self._may_post(endpoint.id),
                    stop=self.stop,
                )
        finally:
            with self._lock:
                self._held.pop(endpoint.id, None)
            try:
                leases.release(self.engine, self.owner, endpoint.id)
            except SQLAlchemyError as error:
                logger.warning("webhook lease not given back: it expires", error=str(error))

    def _may_post(self, endpoint_id: uuid.UUID) -> bool:
        """Whether the lease surely lasts through one more try: taken or renewed recently
        enough that a try's timeout ends before it expires."""
        with self._lock:
            since = max(self._held.get(endpoint_id, float("-inf")), self._renewed_at)
        left = since + self.lease_seconds - time.monotonic()
        return left > self.timeout_seconds

    def _heartbeat(self) -> None:
        every = self.lease_seconds / 3
        while not self.stop.wait(every):
            started = time.monotonic()
            try:
                leases.renew(self.engine, self.owner, self.lease_seconds)
            except SQLAlchemyError as error:
                logger.warning("webhook leases not renewed, trying again", error=str(error))
                continue
            with self._lock:
                self._renewed_at = started

    def _logged(self, endpoint: Webhook) -> Callable[[Future[Turn]], None]:
        def done(future: Future[Turn]) -> None:
            error, name = future.exception(), str(endpoint.id)
            if isinstance(error, SQLAlchemyError):
                logger.warning("webhook delivery interrupted", endpoint=name, error=str(error))
            elif error is not None:
                logger.error("webhook delivery failed", endpoint=name, exc_info=error)

        return done
