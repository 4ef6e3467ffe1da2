"""Every error is JSON with a `detail`, like FastAPI's own; none leaks a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from docingest.enqueue import BrokerUnavailableError

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

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "Internal server error"},
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    app.add_exception_handler(BrokerUnavailableError, broker_unavailable)
    app.add_exception_handler(Exception, unexpected)
