"""Shared by the tests: texts with an obvious category, a classifier with a bug, and a worker's
job done in-process."""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from docingest.connections import Connections
from docingest.model.classifier import Classifier
from docingest.model.scoring import Prediction
from docingest.settings import Settings


def make_settings(
    database_url: str, redis_url: str, model_path: Path, data_dir: Path, **overrides: Any
) -> Settings:
    """Settings for a test: its servers and model, nothing read from the environment."""
    return Settings(
        _env_file=None,
        data_dir=data_dir,
        database_url=database_url,
        broker_url=redis_url,
        model_path=model_path,
        **overrides,
    )


def migrated_sqlite(folder: Path) -> str:
    """A new SQLite database in `folder`, migrated to the current schema; its URL.

    A copy (SQLite's backup API, ~1 ms) of one database migrated once per process: running the
    migrations took 0.15 s, for hundreds of tests."""
    path = folder / "docingest.db"
    with (
        contextlib.closing(sqlite3.connect(_migrated_template())) as template,
        contextlib.closing(sqlite3.connect(path)) as copy,
    ):
        template.backup(copy)
    return f"sqlite:///{path}"


@functools.cache
def _migrated_template() -> Path:
    from docingest.db import migrate

    folder = Path(tempfile.mkdtemp(prefix="docingest-test-sqlite-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    migrate(f"sqlite:///{folder / 'template.db'}")
    return folder / "template.db"


# Texts no reader would hesitate over, one per BBC News category.
UNAMBIGUOUS = {
    "business": "Shares in the bank fell sharply after quarterly profits missed analysts' "
    "forecasts, and the company said it would cut costs as sales and economic growth slowed.",
    "entertainment": "The film won best picture at the Oscars and its star thanked the director; "
    "the actress also topped the box office charts with her new album and a music award.",
    "politics": "The prime minister told MPs the government would hold a general election, and "
    "the opposition Labour and Tory party leaders clashed over tax policy in parliament.",
    "sports": "The striker scored twice as Chelsea beat Arsenal in the Premiership, and the coach "
    "praised his players before the cup match; the England rugby team also won.",
    "tech": "The new smartphone software lets users download music and browse the web faster, "
    "and the firm said broadband internet and computer games drove its mobile technology sales.",
}


POISON = "this text makes the classifier raise"


class PoisonedClassifier(Classifier):
    """The real model, except that it raises on any batch holding POISON: a classifier bug.

    Made like the real one, from the model file (`PoisonedClassifier.load(model_path)`), or
    by the `poisoned_classifier` fixture; `calls` counts the model calls.
    """

    calls = 0

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        self.calls += 1
        if any(POISON in text for text in texts):
            raise ValueError("cannot classify this one")
        return super().predict(texts)


def drain(connections: Connections, classifier: Classifier) -> int:
    """Do a worker's job in the test process: consume every queued message, ingest, ack."""
    from docingest.queue.names import DOCUMENTS_QUEUE
    from docingest.worker.ingest import ingest

    consumer = connections.queue.broker.consume(DOCUMENTS_QUEUE, prefetch=100, timeout=200)
    handled = 0
    try:
        for message in consumer:
            if message is None:
                break
            ingest(
                message.args[0],
                engine=connections.engine,
                classifier=classifier,
                ledger=connections.ledger,
            )
            consumer.ack(message)
            handled += 1
    finally:
        consumer.close()
    return handled


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    page: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return page.get((name, frozenset(labels.items())), 0.0)
