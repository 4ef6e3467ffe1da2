"""Application factory: wires the broker, the enqueuer and the database into FastAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from docingest.api import documents, failures, health
from docingest.api.errors import install_error_handlers
from docingest.api.limits import BodySizeLimit
from docingest.broker import setup_broker
from docingest.db import make_engine
from docingest.enqueue import Enqueuer
from docingest.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broker = setup_broker(settings)
        engine = make_engine(settings.database_url)
        app.state.settings = settings
        app.state.broker = broker
        app.state.engine = engine
        app.state.enqueuer = Enqueuer(
            broker,
            max_batch=settings.enqueue_max_batch,
            linger_seconds=settings.enqueue_linger_ms / 1000,
            max_queued=settings.max_queued_documents,
        )
        try:
            yield
        finally:
            await app.state.enqueuer.close()
            broker.close()
            engine.dispose()

    app = FastAPI(
        title="docingest",
        summary="Accepts text documents, classifies them in the background, stores the result.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app, retry_after_seconds=settings.retry_after_seconds)
    app.include_router(documents.router)
    app.include_router(failures.router)
    app.include_router(health.router)
    return app
