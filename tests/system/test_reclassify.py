"""Reclassification through the queue with a real worker process, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from docingest.cli import app as cli
from docingest.connections import Connections
from docingest.model import registry
from docingest.model.classifier import Classifier
from docingest.model.reclassify import Pacing, run
from docingest.model.selection import Selection, count_selected
from docingest.schemas import utcnow
from docingest.settings import get_settings
from docingest.worker.ingest import ingest
from tests.faults import Processes, content_for, service_env

runner = CliRunner()
DOCUMENTS = 300
FAST = Pacing(batch_size=50, poll_seconds=0.1)


@pytest.fixture
def stored(
    engine: Engine, connections: Connections, classifier: Classifier, model_path: Path
) -> list[uuid.UUID]:
    """DOCUMENTS documents classified by the default model, which is active."""
    registry.add(engine, model_path.read_bytes(), activate=True)
    now = utcnow()
    documents = [
        {"id": str(uuid.uuid4()), "content": content_for(n), "version": 1, "accepted_at": now}
        for n in range(DOCUMENTS)
    ]
    ingest(documents, engine=engine, classifier=classifier, ledger=connections.ledger)
    return [uuid.UUID(document["id"]) for document in documents]


@pytest.fixture
def start_worker(
    database_url: str, redis_url: str, model_path: Path, tmp_path: Path, procs: Processes
) -> Callable[[], None]:
    def start() -> None:
        procs.env = service_env(
            database_url=database_url,
            broker_url=redis_url,
            model_path=model_path,
            data_dir=tmp_path,
        )
        procs.worker()

    return start


def _versions(engine: Engine) -> dict[str | None, int]:
    query = text("SELECT model_version, count(*) FROM documents GROUP BY model_version")
    with engine.connect() as connection:
        return dict(connection.execute(query).all())


def test_reclassify_is_resumable_and_ends_with_all_on_the_new_version(
    engine: Engine,
    connections: Connections,
    nb_model_path: Path,
    stored: list[uuid.UUID],
    start_worker: Callable[[], None],
) -> None:
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    selection = Selection(nb)
    services = (engine, connections.queue, connections.ledger)

    def interrupt_after_first_batch(done: int, total: int) -> None:
        if connections.queue.depths()["reclassify"]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # no worker yet: one batch queued, then Ctrl-C
        run(
            *services,
            selection,
            pacing=FAST,
            on_progress=interrupt_after_first_batch,
        )
    assert count_selected(engine, selection) == DOCUMENTS

    start_worker()
    progress: list[tuple[int, int]] = []
    outcome = run(
        *services,
        selection,
        pacing=FAST,
        on_progress=lambda *p: progress.append(p),
    )
    assert (outcome.total, outcome.remaining) == (DOCUMENTS, 0)
    assert progress[-1] == (DOCUMENTS, DOCUMENTS)
    assert _versions(engine) == {nb: DOCUMENTS}
    assert registry.active_version(engine) != nb  # reclassifying does not activate


def test_reclassify_cli_with_filters(
    engine: Engine,
    database_url: str,
    redis_url: str,
    nb_model_path: Path,
    stored: list[uuid.UUID],
    start_worker: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    default = registry.active_version(engine)
    start_worker()
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BROKER_URL", redis_url)
    get_settings.cache_clear()
    try:
        past = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
        result = runner.invoke(cli, ["reclassify", "--model", nb, "--before", past])
        assert result.exit_code == 0, result.output
        assert "0 documents reclassified" in result.output
        result = runner.invoke(cli, ["reclassify", "--model", nb, "--category", "sports"])
        assert result.exit_code == 0, result.output
        sports = DOCUMENTS // 5
        assert f"{sports} documents reclassified with model {nb}" in result.output
        assert _versions(engine) == {nb: sports, default: DOCUMENTS - sports}
    finally:
        get_settings.cache_clear()
