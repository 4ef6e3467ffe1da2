"""Configuration from environment variables, with defaults that run on one laptop."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

DEFAULT_DATA_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str = f"sqlite:///{DEFAULT_DATA_DIR}/docingest.db"
    # Heroku's Redis add-on sets REDIS_URL; BROKER_URL wins when both are set.
    broker_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("BROKER_URL", "REDIS_URL"),
    )
    model_path: Path = DEFAULT_DATA_DIR / "models" / "default.skops"

    host: str = "127.0.0.1"
    port: int = 8000

    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_bulk_documents: int = Field(default=10_000, gt=0)
    max_document_chars: int = Field(default=1_000_000, gt=0)
    broker_timeout_seconds: float = Field(default=5.0, gt=0)
    retry_after_seconds: int = Field(default=5, gt=0)

    # Backpressure: above this many accepted-but-unsettled documents, ingestion answers 429.
    max_queued_documents: int = Field(default=200_000, gt=0)

    # Group commit: concurrent single-document requests share one queue message.
    enqueue_max_batch: int = Field(default=500, gt=0)
    enqueue_linger_ms: float = Field(default=3.0, ge=0, le=50)

    worker_processes: int = Field(default_factory=lambda: os.cpu_count() or 1, gt=0)
    worker_threads: int = Field(default=2, gt=0)
    # A worker silent this long is dead: its unacknowledged messages go back on the queue.
    worker_heartbeat_timeout_seconds: float = Field(default=15.0, gt=0)

    # Embedded Redis durability. "always" fsyncs the append-only file before Redis answers, so a
    # 202 survives a crash of Redis or of the machine (measured cost: 4-13 % of bulk throughput).
    # With "everysec", Redis acknowledges writes it has not written yet while a background fsync
    # runs: a Redis crash can lose up to ~2 s of accepted documents (seen in tests/test_faults.py).
    redis_appendfsync: str = Field(default="always", pattern="^(always|everysec|no)$")

    @field_validator("database_url")
    @classmethod
    def _use_psycopg3(cls, value: str) -> str:
        """Accept the `postgres://` URLs that Heroku and others hand out."""
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value.removeprefix(prefix)
        return value

    @property
    def redis_data_dir(self) -> Path:
        return self.data_dir / "redis"

    def masked_database_url(self) -> str:
        return make_url(self.database_url).render_as_string(hide_password=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
