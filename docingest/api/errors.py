"""Every error is JSON with a `detail`, like FastAPI's own; none leaks a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from docingest.enqueue import BrokerUnavailableError, QueueFullError

logger = logging.getLogger(__name__)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}
            }
        },
    }
    for code, description in {
        404: "Not found",
        429: "The queue is full (MAX_QUEUED_DOCUMENTS); retry after `Retry-After` seconds",
        413: "Request body larger than MAX_BODY_BYTES, or more documents than allowed",
        422: "The body is not what this route takes; `detail` says where and why",
        503: "Broker unreachable; retry after `Retry-After` seconds",
    }.items()
}


def install_error_handlers(app: FastAPI, *, retry_after_seconds: int) -> None:
    async def broker_unavailable(request: Request, error: Exception) -> JSONResponse:
        logger.warning("broker unavailable: %s", error)
        return JSONResponse(
            {"detail": "The queue is unavailable; nothing was accepted. Retry later."},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(retry_after_seconds)},
        )

    async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
        logger.warning("database unavailable: %s", type(error).__name__)
        return JSONResponse(
            {"detail": "The database is unavailable; retry later."},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(retry_after_seconds)},
        )

    async def queue_full(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": f"Too many documents waiting: {error}. Nothing was accepted; retry later."},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(retry_after_seconds)},
        )

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "Internal server error"},
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    app.add_exception_handler(BrokerUnavailableError, broker_unavailable)
    app.add_exception_handler(QueueFullError, queue_full)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(Exception, unexpected)
