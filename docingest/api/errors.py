"""Every error is JSON with a `detail`, like FastAPI's own; none leaks a stack trace."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from docingest.ledger import LedgerUnavailableError
from docingest.queue import BrokerUnavailableError, PublishUncertainError, QueueFullError

logger = structlog.get_logger(__name__)

ExceptionHandler = Callable[[Request, Exception], Awaitable[JSONResponse]]

NOT_MIGRATED = (
    "The database has no docingest schema, or an older one: run `docingest migrate` (the "
    "Procfile's release step). Nothing was done; retry once it ran."
)
# PostgreSQL's undefined table and undefined column; SQLite says so in its message.
_UNDEFINED: frozenset[str] = frozenset({"42P01", "42703"})


def schema_missing(error: DBAPIError) -> bool:
    """A table or a column the code uses is not in the database: it was not migrated (or not
    since an upgrade)."""
    if getattr(error.orig, "sqlstate", None) in _UNDEFINED:
        return True
    return str(error.orig).startswith(("no such table", "no such column"))


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
    unavailable = retry_later(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "The database is unavailable; retry later.",
        "database unavailable",
    )
    not_migrated = retry_later(status.HTTP_503_SERVICE_UNAVAILABLE, NOT_MIGRATED, "not migrated")

    async def database_error(request: Request, error: Exception) -> JSONResponse:
        """A schema not migrated is the operator's to fix, and says how: not a 500. Any other
        statement the database refuses is a bug (500)."""
        if isinstance(error, DBAPIError) and schema_missing(error):
            return await not_migrated(request, error)
        if isinstance(error, ProgrammingError):
            return await unexpected(request, error)
        return await unavailable(request, error)

    for exception in (OperationalError, InterfaceError, ProgrammingError):
        app.add_exception_handler(exception, database_error)
    app.add_exception_handler(PoolTimeoutError, unavailable)
    app.add_exception_handler(Exception, unexpected)
