"""Structured logs: JSON lines or console lines, stdlib records included, no content, no traces."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import orjson
import pytest
import structlog

from docingest.connections import Connections
from docingest.observe.logs import configure_logging
from docingest.queue.names import DOCUMENTS_QUEUE, INGEST_ACTOR
from docingest.schemas import QueuedDocument, utcnow
from docingest.settings import Settings
from docingest.worker.ingest import ingest
from tests.helpers import POISON, UNAMBIGUOUS, PoisonedClassifier


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """Where the logs of one test go; the process's logging is put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        yield stream
    finally:
        root.handlers, root.level = handlers, level
        structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_stdlib_and_structlog_records_become_json_lines(output: io.StringIO) -> None:
    configure_logging(Settings(_env_file=None, log_format="json"), output)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    structlog.get_logger("docingest.test").info("batch processed", documents=3)
    logging.getLogger("docingest.test").debug("below the level: not written")

    first, second = lines(output)
    assert first["event"] == "Started server process [42]"
    assert first["logger"] == "uvicorn.error"
    assert first["level"] == "info"
    assert first["timestamp"].endswith("Z")
    assert second["event"] == "batch processed"
    assert second["documents"] == 3


def test_console_format_is_for_people(output: io.StringIO) -> None:
    configure_logging(Settings(_env_file=None, log_format="console", log_level="debug"), output)
    logging.getLogger("docingest.test").debug("hello %s", "there")
    text = output.getvalue()
    assert "hello there" in text
    assert not text.lstrip().startswith("{")


def test_an_exception_is_logged_as_one_line_without_trace_or_sql(output: io.StringIO) -> None:
    configure_logging(Settings(_env_file=None, log_format="json"), output)
    try:
        raise RuntimeError("connection lost\n[SQL: INSERT INTO documents ...]\n[parameters: x]")
    except RuntimeError:
        logging.getLogger("dramatiq.worker").exception("Failed to process message")
    (line,) = lines(output)
    assert line["error"] == "RuntimeError: connection lost"
    assert "Traceback" not in output.getvalue()
    assert "SQL" not in output.getvalue()


def test_a_dramatiq_message_is_logged_by_id_not_by_its_documents(output: io.StringIO) -> None:
    configure_logging(Settings(_env_file=None, log_format="json"), output)
    secret = "the confidential text of a posted document"
    message = dramatiq.Message(
        queue_name=DOCUMENTS_QUEUE,
        actor_name=INGEST_ACTOR,
        args=([{"content": secret}],),
        kwargs={},
        options={},
    )
    logging.getLogger("dramatiq.worker.WorkerThread").warning("Message %s was skipped.", message)
    (line,) = lines(output)
    assert secret not in output.getvalue()
    assert message.message_id in line["event"]


def test_failed_documents_are_logged_with_their_ids_and_batch(
    output: io.StringIO,
    connections: Connections,
    poisoned_classifier: PoisonedClassifier,
) -> None:
    configure_logging(Settings(_env_file=None, log_format="json"), output)
    documents = [
        QueuedDocument(id=uuid.uuid4(), content=text, version=n + 1, accepted_at=utcnow())
        for n, text in enumerate([UNAMBIGUOUS["tech"], POISON])
    ]
    structlog.contextvars.bind_contextvars(message_id="m-1", documents=2)
    try:
        ingest(
            [document.to_message() for document in documents],
            engine=connections.engine,
            classifier=poisoned_classifier,
            ledger=connections.ledger,
        )
    finally:
        structlog.contextvars.clear_contextvars()
    (line,) = [line for line in lines(output) if line["logger"] == "docingest.worker.ingest"]
    assert line["failed_ids"] == [str(documents[1].id)]
    assert line["message_id"] == "m-1"
    assert line["documents"] == 2
    assert POISON not in output.getvalue()
