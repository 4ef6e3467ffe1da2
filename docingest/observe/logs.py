"""Structured logs: JSON lines for log collectors, structlog's console renderer at a terminal.

Records of the standard library's `logging` (uvicorn, Dramatiq, SQLAlchemy) pass through the same
processors and renderer as structlog's, so a process writes one format. Two rules hold for every
line: no document content (a Dramatiq message's repr holds its documents, so it is replaced by
its id) and no traceback or SQL (an exception is logged as its type and first line; a database
error's first line names the error, its later lines hold the statement and the parameters).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import dramatiq
import orjson
import structlog
from dramatiq.broker import MessageProxy
from structlog.typing import EventDict, Processor

from docingest.settings import Settings

# Loggers that may have handlers of their own; those are removed, so that records reach ours.
_FOREIGN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "dramatiq")
_MAX_ERROR_CHARS = 500


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time, as logging's own last-resort handler
    does: test runners and Typer's CliRunner replace it, and close the one they replaced."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """StreamHandler.__init__ assigns it; the property above always wins."""


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to one handler on `stream` (default: stderr)."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _summarize_exception,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream) if stream else _StderrHandler()
    handler.addFilter(_hide_message_contents)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _renderer(_use_json(settings.log_format)),
            ],
        )
    )
    root = logging.getLogger()
    for previous in list(root.handlers):
        # Ours from an earlier call, or logging.basicConfig's (Dramatiq's); not pytest's.
        if type(previous) in (logging.StreamHandler, _StderrHandler):
            root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in _FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        # A logger without handlers and not propagating was silenced on purpose (uvicorn's
        # access log with `access_log=False`): it stays so.
        if foreign.handlers:
            foreign.handlers = []
            foreign.propagate = True


def _use_json(log_format: str) -> bool:
    """`auto`: JSON unless the process's real stderr is a terminal.

    `sys.__stderr__`, not `sys.stderr`: Dramatiq's worker processes write to a pipe to their
    parent, which copies it to the terminal, if there is one.
    """
    if log_format != "auto":
        return log_format == "json"
    terminal = sys.__stderr__
    return terminal is None or not terminal.isatty()


def _renderer(json_lines: bool) -> Processor:
    if json_lines:
        return structlog.processors.JSONRenderer(serializer=_dumps)
    return structlog.dev.ConsoleRenderer()


def _dumps(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def _summarize_exception(_logger: Any, _method: str, event: EventDict) -> EventDict:
    """Replace `exc_info` by `error`: the exception's type and first line, no traceback."""
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        error: BaseException | None = exc_info
    elif isinstance(exc_info, tuple):
        error = exc_info[1]
    else:
        error = None
    if error is not None:
        first_line = (str(error).splitlines() or [""])[0]
        event["error"] = f"{type(error).__name__}: {first_line}"[:_MAX_ERROR_CHARS]
    return event


def _hide_message_contents(record: logging.LogRecord) -> bool:
    """Dramatiq logs messages with `%s`, whose text is the actor's call with every document.

    Also drops what would come along as "extra" fields without being worth a field: the text an
    earlier handler's formatter cached on the record, uvicorn's copy with terminal colours.
    """
    record.__dict__.pop("message", None)
    record.__dict__.pop("color_message", None)
    if isinstance(record.args, tuple):
        record.args = tuple(_message_label(arg) for arg in record.args)
    elif isinstance(record.args, MutableMapping):
        record.args = {key: _message_label(arg) for key, arg in record.args.items()}
    return True


def _message_label(value: object) -> object:
    if isinstance(value, dramatiq.Message | MessageProxy):
        return f"{value.actor_name} message {value.message_id}"
    return value
