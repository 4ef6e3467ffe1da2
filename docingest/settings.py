"""Configuration from environment variables, with defaults that run on one laptop."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from docingest.schemas import DEFAULT_MAX_DOCUMENT_CHARS

DEFAULT_DATA_DIR = Path("var")
# Endpoints an operator may open to callers without a key (PUBLIC_ENDPOINTS).
PublicEndpoint = Literal["health", "ready", "metrics", "docs", "dashboard"]


class Settings(BaseSettings):
    """Each field is read from the environment variable of its name in capitals (or a `.env`
    file); its `description` is the one docs/reference/configuration.md shows (regenerate that
    page with `python scripts/reference.py` after changing a field)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        description="Where `docingest up` keeps the files of its embedded Redis (`redis/` in it).",
    )
    # URLs may hold passwords: kept out of repr(), shown through masked_database_url() and
    # mask_password().
    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_DATA_DIR}/docingest.db",
        repr=False,
        description="SQLAlchemy URL of the database; PostgreSQL in production (`postgres://` "
        "and `postgresql://` URLs are accepted and use psycopg 3).",
    )
    broker_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("BROKER_URL", "REDIS_URL"),
        repr=False,
        description="The message broker: `redis://`, `rediss://`, or `amqp://` (RabbitMQ). "
        "Heroku's Redis add-on sets REDIS_URL; BROKER_URL wins when both are set. `docingest "
        "up` starts an embedded Redis unless this is set.",
    )
    ledger_url: str = Field(
        default="",
        repr=False,
        description="Where versions, the pending set and the workers' metrics live: a "
        "`redis://` URL, or `database` (DATABASE_URL). Default (empty): the broker's Redis, "
        "else the database (RabbitMQ).",
    )
    model_path: Path = Field(
        default=DEFAULT_DATA_DIR / "models" / "default.skops",
        description="The model an empty registry starts with (trained on the built-in corpus "
        "if missing).",
    )
    model_refresh_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often each worker process looks for a newly activated model, and "
        "for models an activation asked it to check (docs/models.md, Activation).",
    )
    model_check_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long an activation waits for workers whose environment (Python, "
        "numpy, docingest versions) differs from the activating process's to load the model, "
        "before refusing it.",
    )

    host: str = Field(default="127.0.0.1", description="The interface the API listens on.")
    port: int = Field(default=8000, description="The port the API listens on.")
    keep_alive_seconds: int = Field(
        default=75,
        gt=0,
        description="How long the API keeps an idle connection open. Longer than its clients' "
        "own idle expiry (httpx: 5 s; load balancers: 60 s), so that the server never closes a "
        "connection just as a client sends on it (the client would see it dropped without an "
        "answer); uvicorn's 5 s default made that race.",
    )

    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description="A request body larger than this is answered 413 before it is parsed.",
    )
    max_bulk_documents: int = Field(
        default=10_000,
        gt=0,
        description="A bulk request with more documents than this is answered 413.",
    )
    max_document_chars: int = Field(
        default=DEFAULT_MAX_DOCUMENT_CHARS,
        gt=0,
        description="A document whose `content` is longer than this is answered 422.",
    )
    broker_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long the API waits for the broker before answering 503.",
    )
    retry_after_seconds: int = Field(
        default=5,
        gt=0,
        description="The `Retry-After` of a 503 (and of a 429 for a full queue).",
    )
    max_buffered_bytes: int = Field(
        default=4 * 16 * 1024 * 1024,
        gt=0,
        description="Request bodies an API process holds at once, in bytes (reserved by their "
        "`Content-Length`, a chunked body as it grows); a body beyond it waits up to a second, "
        "then is answered 503 with `Retry-After`. Set it at least to MAX_BODY_BYTES.",
    )
    max_answer_bytes: int = Field(
        default=8 * 1024 * 1024,
        gt=0,
        description="A listing (`GET /documents`, `GET /review/queue`, `GET "
        "/failures/dead-letters`) stops adding items once they hold about this many bytes "
        "(always at least one item), answering fewer than `limit`; a paged one's `next_cursor` "
        "leads to the rest.",
    )
    body_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A request body not fully received within this many seconds is answered "
        "408 (slow uploads).",
    )

    # Access control, see docs/security.md. No key configured = open mode: loopback only, unless
    # ALLOW_OPEN_ACCESS.
    api_keys: str = Field(
        default="",
        repr=False,
        description="API keys: `name:scope+scope:sha256hex` entries, comma-separated "
        "(docs/security.md). No key configured (here or in API_KEYS_FILE) = open mode: "
        "loopback only, unless ALLOW_OPEN_ACCESS.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="A TOML file of `[[keys]]` tables, read with API_KEYS (docs/security.md).",
    )
    allow_open_access: bool = Field(
        default=False,
        description="Let the API run without keys on a non-loopback HOST.",
    )
    public_endpoints: Annotated[frozenset[PublicEndpoint], NoDecode] = Field(
        default=frozenset({"health", "ready", "docs", "dashboard"}),
        description="Those of health, ready, metrics, docs, dashboard that answer without a "
        "key, comma-separated.",
    )
    rate_limit_per_minute: int = Field(
        default=0,
        ge=0,
        description="Requests per key and API process; 0 = no limit.",
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Origins allowed to call the API from a browser, comma-separated; "
        "empty = CORS off.",
    )

    max_queued_documents: int = Field(
        default=200_000,
        gt=0,
        description="Backpressure: above this many accepted-but-unsettled documents, ingestion "
        "answers 429.",
    )

    enqueue_max_batch: int = Field(
        default=500,
        gt=0,
        description="Group commit: concurrent single-document requests share one queue "
        "message of at most this many documents.",
    )
    enqueue_linger_ms: float = Field(
        default=3.0,
        ge=0,
        le=50,
        description="Group commit: under concurrent load, a batch waits up to this many "
        "milliseconds for more requests (a lone request never waits).",
    )

    worker_processes: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        gt=0,
        description="Dramatiq worker processes. Default: the number of CPUs.",
    )
    worker_threads: int = Field(
        default=8,
        gt=0,
        description="Threads per worker process. Threads hold messages; the documents of all "
        "messages held at once are classified and stored as one batch of up to "
        "WORKER_MAX_BATCH documents (docingest/worker/coalesce.py).",
    )
    worker_max_batch: int = Field(
        default=500,
        gt=0,
        description="The most documents a worker batch (one model call, one transaction) takes.",
    )
    worker_heartbeat_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        description="A worker silent this long is dead: its unacknowledged messages go back on "
        "the queue.",
    )

    redis_min_replicas: int = Field(
        default=0,
        ge=0,
        description="Replicas of the broker's Redis that must hold each message in their "
        "append-only file (WAITAOF; WAIT, in memory, on a Redis older than 7.2) before the API "
        "answers 202. Replication is otherwise asynchronous: a failover to a replica that lags "
        "loses the 202s it had not received. Set it to 1 with a replica you fail over to; a "
        'replica that does not confirm within BROKER_TIMEOUT_SECONDS gets a 503 "may or may '
        'not" (the messages are queued on the primary).',
    )
    redis_appendfsync: str = Field(
        default="always",
        pattern="^(always|everysec|no)$",
        description="Embedded Redis durability. `always` fsyncs the append-only file before "
        "Redis answers, so a 202 survives a crash of Redis or of the machine (measured cost: "
        "4-13 % of bulk throughput). With `everysec`, Redis acknowledges writes it has not "
        "written yet while a background fsync runs: a Redis crash can lose up to ~2 s of "
        "accepted documents (seen in tests/system/test_faults.py).",
    )

    reconcile_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often the worker processes (one of them each time) look for pending "
        "entries no message will "
        "settle, among those reserved more than RECONCILE_AFTER_SECONDS ago "
        "(docingest/worker/reconcile.py).",
    )
    reconcile_after_seconds: float = Field(
        default=600.0,
        ge=0,
        description="How old a pending entry must be for reconciliation to look at it.",
    )
    reconcile_abandon_seconds: float = Field(
        default=86_400.0,
        ge=0,
        description="Where the broker cannot say which documents its messages carry "
        "(RabbitMQ), how old a pending entry whose version is not stored must be to be dropped "
        "anyway: longer than any message waits before it is stored or dead-lettered.",
    )
    changes_relay_seconds: float = Field(
        default=0.2,
        gt=0,
        description="How often each worker process runs the change feed's relay (one process "
        "at a time numbers the committed changes: docs/changes.md); a change reaches `GET "
        "/changes` within about this long of its commit.",
    )
    changes_retention: timedelta = Field(
        default=timedelta(days=7),
        gt=timedelta(0),
        description="How long changes stay in the feed (seconds, or ISO 8601 such as `P7D`); a "
        "cursor older than the oldest change kept is answered 410 (docs/changes.md).",
    )
    webhook_batch_size: int = Field(
        default=500,
        ge=1,
        le=1000,
        description="Webhooks: the most changes one delivery carries (docs/changes.md, Webhooks).",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Webhooks: how long a receiver has to connect and answer a delivery; "
        "slower is a failure, retried.",
    )
    webhook_retry_min_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Webhooks: the first retry of a failed delivery comes after about this "
        "long; each next one waits twice as long (with jitter), up to WEBHOOK_RETRY_MAX_SECONDS.",
    )
    webhook_retry_max_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Webhooks: the longest wait between two tries of a failing endpoint.",
    )
    webhook_disable_after: timedelta = Field(
        default=timedelta(days=3),
        gt=timedelta(0),
        description="Webhooks: an endpoint failing for longer than this (seconds, or ISO 8601 "
        "such as `P3D`) is paused until resumed (`POST /webhooks/{id}/resume`).",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Webhooks: let endpoints target private, loopback, link-local and other "
        "non-global addresses (refused by default: server-side request forgery).",
    )
    webhook_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        description="Webhooks: how often `docingest webhooks deliver` looks for endpoints with "
        "changes to deliver (and runs a relay pass).",
    )
    webhook_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Webhooks: an endpoint is delivered by one process at a time, which holds "
        "it this long and renews it every third of it; a process that died is relieved after "
        "this long.",
    )
    webhook_concurrency: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Webhooks: endpoints one `docingest webhooks deliver` process delivers to at "
        "once.",
    )
    max_queued_bytes: int = Field(
        default=1024**3,
        gt=0,
        description="Backpressure by size: above this many bytes of waiting messages, "
        "ingestion answers 429.",
    )
    enqueue_max_message_bytes: int = Field(
        default=8 * 1024**2,
        gt=0,
        description="A queue message (group commit, bulk split) holds at most this many bytes "
        "of documents.",
    )

    log_format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="Logs: JSON lines, console (human-readable), or `auto`: JSON lines unless "
        "stderr is a terminal; see docs/operations.md.",
    )
    log_level: str = Field(
        default="INFO",
        pattern="(?i)^(debug|info|warning|error|critical)$",
        description="The lowest level logged.",
    )
    metrics_flush_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often a worker process adds its metrics into Redis, where GET "
        "/metrics reads them.",
    )
    low_confidence_threshold: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Drift (docs/operations.md): workers count the documents classified with a "
        "confidence under this.",
    )
    agreement_window: int = Field(
        default=100,
        gt=0,
        description="Drift (docs/operations.md): the agreement of labels with categories is "
        "measured over each model's this many newest labels.",
    )

    @field_validator("database_url")
    @classmethod
    def _use_psycopg3(cls, value: str) -> str:
        """Accept the `postgres://` URLs that Heroku and others hand out; refuse what is no
        database URL at all, here rather than at the first query."""
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                value = "postgresql+psycopg://" + value.removeprefix(prefix)
        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(
                "not a database URL: sqlite:///path/to/file.db, or postgresql://user@host/db"
            ) from None
        return value

    @field_validator("changes_retention", "webhook_disable_after", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        """`604800` in the environment is seconds (pydantic reads only numbers so, not text)."""
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value

    @field_validator("public_endpoints", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        """`health,ready` in the environment; any collection from Python."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _lease_outlasts_a_try(self) -> Settings:
        """A delivering process starts a try only while its lease has longer left than a try
        may take, and renews it every third of its length: with less than two tries' worth
        it would stop between renewals (docingest/changes/webhooks/deliverer.py)."""
        if self.webhook_lease_seconds < 2 * self.webhook_timeout_seconds:
            raise ValueError(
                f"WEBHOOK_LEASE_SECONDS ({self.webhook_lease_seconds:g}) must be at least twice "
                f"WEBHOOK_TIMEOUT_SECONDS ({self.webhook_timeout_seconds:g})"
            )
        return self

    @property
    def ledger_url_or_default(self) -> str:
        if self.ledger_url:
            return self.ledger_url
        if self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            return self.broker_url
        return "database"

    @property
    def redis_data_dir(self) -> Path:
        return self.data_dir / "redis"

    def masked_database_url(self) -> str:
        return mask_password(self.database_url)


def mask_password(url: str) -> str:
    """Any URL with its password shown as `***`, for logs and consoles."""
    return make_url(url).render_as_string(hide_password=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
