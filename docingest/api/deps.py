"""What routes need from the app, as typed dependencies: `engine: EngineDep`.

The app's lifespan (`app.py`) and `install_security` put these on `app.state`; routes and
route dependencies ask for them here, typed, and never read `app.state` themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from docingest.api.access import Access
from docingest.connections import Connections
from docingest.queue.enqueue import Enqueuer
from docingest.settings import Settings


# Cheap dependencies are `async def`: FastAPI would run a plain `def` in the thread pool.
async def get_settings_of_app(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_enqueuer(request: Request) -> Enqueuer:
    enqueuer: Enqueuer = request.app.state.enqueuer
    return enqueuer


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_connections(request: Request) -> Connections:
    connections: Connections = request.app.state.connections
    return connections


async def get_metrics_registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return registry


async def get_access(request: Request) -> Access:
    access: Access = request.app.state.access
    return access


# What reaches the database, the broker or the ledger: an operation using one may answer 503.
BACKING_SERVICES: frozenset[Callable[..., Any]] = frozenset(
    {get_enqueuer, get_engine, get_connections}
)

EnqueuerDep = Annotated[Enqueuer, Depends(get_enqueuer)]
SettingsDep = Annotated[Settings, Depends(get_settings_of_app)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ConnectionsDep = Annotated[Connections, Depends(get_connections)]
# The workers' and queues' collectors, read at each scrape (`metrics.scrape_registry`).
MetricsRegistryDep = Annotated[CollectorRegistry, Depends(get_metrics_registry)]
AccessDep = Annotated[Access, Depends(get_access)]
