"""Request-scoped dependencies, as types: `session: SessionDep`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlmodel import Session

from docingest.connections import Connections
from docingest.enqueue import Enqueuer
from docingest.settings import Settings


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


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


SessionDep = Annotated[Session, Depends(get_session)]
EnqueuerDep = Annotated[Enqueuer, Depends(get_enqueuer)]
SettingsDep = Annotated[Settings, Depends(get_settings_of_app)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ConnectionsDep = Annotated[Connections, Depends(get_connections)]
