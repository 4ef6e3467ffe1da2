"""Every error is JSON with a `detail`, like FastAPI's own; none leaks a stack trace."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from docingest.ledger import LedgerUnavailableError
from docingest.queue import BrokerUnavailableError, PublishUncertainError, QueueFullError

logger = structlog.get_logger(__name__)

ExceptionHandler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def install_error_handlers(app: FastAPI, *, retry_after_seconds: int) -> None:
    def retry_later(code: int, detail: str, what: str) -> ExceptionHandler:
        """A refusal the client should retry: `Retry-After` says when."""

        async def handler(request: Request, error: Exception) -> JSONResponse:
            logger.warning(what, error_type=type(error).__name__)
            return JSONResponse(
                {"detail": detail.format(error=error)},
                status_code=code,
                headers={"Retry-After": str(retry_after_seconds)},
            )

        return handler

    async def uncertain(request: Request, error: Exception) -> JSONResponse:
        """The broker may hold the documents or not: say so, with the ids to retry with."""
        logger.warning("broker outcome unknown", error=str(error))
        ids = [str(i) for i in getattr(error, "ids", [])]
        return JSONResponse(
            {
                "detail": "The queue did not confirm in time: these documents may or may not "
                "have been accepted. Retrying with the same ids is safe.",
                "ids": ids,
            },
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(retry_after_seconds)},
        )

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error", method=request.method, path=request.url.path)
        return JSONResponse(
            {"detail": "Internal server error"},
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    app.add_exception_handler(
        BrokerUnavailableError,
        retry_later(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "The queue is unavailable; nothing was accepted. Retry later.",
            "broker unavailable",
        ),
    )
    app.add_exception_handler(PublishUncertainError, uncertain)
    app.add_exception_handler(
        LedgerUnavailableError,
        retry_later(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "The version ledger is unavailable; nothing was accepted. Retry later.",
            "ledger unavailable",
        ),
    )
    app.add_exception_handler(
        QueueFullError,
        retry_later(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Too many documents waiting: {error}. Nothing was accepted; retry later.",
            "queue full",
        ),
    )
    # Unreachable, or every pooled connection busy: retrying later is the answer to both.
    for exception in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(
            exception,
            retry_later(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "The database is unavailable; retry later.",
                "database unavailable",
            ),
        )
    app.add_exception_handler(Exception, unexpected)
