"""What a worker process talks to, made once per process on first use (after Dramatiq forked it,
never in its parent): the deployment's connections and the model cache."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from docingest.connections import Connections, connect
from docingest.model.registry import ModelCache
from docingest.observe.worker_metrics import MODEL_REFUSED, worker_metrics
from docingest.settings import get_settings


@dataclass(frozen=True)
class Resources:
    connections: Connections
    models: ModelCache


@cache
def resources() -> Resources:
    """Without a ping on every checkout (a round trip per batch): after a database restart the
    first use of a stale connection fails, SQLAlchemy drops the pool, and Dramatiq retries."""
    settings = get_settings()
    connections = connect(settings, pre_ping=False)
    models = ModelCache(
        connections.engine,
        seed=settings.model_path,
        refresh_seconds=settings.model_refresh_seconds,
        on_refused=lambda version: worker_metrics.count(MODEL_REFUSED, label=version),
    )
    return Resources(connections=connections, models=models)
