"""Migrations a large `documents` table survives online, re-runs after a failed index build, and
downgrades that refuse to drop data unless forced (issue 24 item 9)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from docingest import db
from docingest.api import create_app
from docingest.db import DataLossError, downgrade, make_engine, migrate
from docingest.embedded import wait_until
from docingest.model import registry
from docingest.model.classifier import Classifier
from docingest.schemas import utcnow
from tests.helpers import UNAMBIGUOUS, make_settings

HEAD = ScriptDirectory(str(Path(db.__file__).parent / "migrations")).get_current_head()
INDEXES = ("ix_documents_updated_at", "ix_documents_labelled_at")
ROW = (
    "INSERT INTO documents (id, content, version, created_at, updated_at) "
    "VALUES (gen_random_uuid(), 'written during the migration', %s, now(), now())"
)


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg", "postgresql")


def _revision(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SELECT version_num FROM alembic_version")).scalar())
    finally:
        engine.dispose()


def _valid_indexes(connection: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    rows = connection.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = ANY(%s) AND i.indisvalid ORDER BY c.relname",
        (list(INDEXES),),
    )
    return [str(name) for (name,) in rows]


def test_documents_take_writes_while_the_migrations_build_their_indexes(postgres_url: str) -> None:
    """A writer's open transaction holds up the index build; another writer is not held up
    behind it (before: 0003's ALTER TABLE and CREATE INDEX queued an exclusive lock first)."""
    downgrade(postgres_url, "0002", force=True)
    with psycopg.connect(_plain(postgres_url), autocommit=True) as setup:
        setup.execute(
            "INSERT INTO documents (id, content, version, created_at, updated_at) "
            "SELECT gen_random_uuid(), 'text ' || g, g, now(), now() "
            "FROM generate_series(1, 1000) AS g"
        )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(postgres_url)
        except BaseException as error:  # reported by the test's thread
            errors.append(error)

    with (
        psycopg.connect(_plain(postgres_url)) as holder,
        psycopg.connect(_plain(postgres_url), autocommit=True) as writer,
    ):
        holder.execute("UPDATE documents SET updated_at = now() WHERE version = 1")
        migration = threading.Thread(target=run)
        migration.start()
        try:
            wait_until(
                lambda: (
                    writer.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    ).fetchone()
                    == (1,)
                ),
                timeout=10,
                what="the migration waits for the open transaction",
            )
            writer.execute("SET lock_timeout = '2s'")
            started = time.monotonic()
            writer.execute(ROW, (5000,))
            assert time.monotonic() - started < 1.0
        finally:
            holder.commit()
            migration.join(timeout=60)
        assert not errors, errors
        assert _revision(postgres_url) == HEAD
        assert writer.execute("SELECT count(*) FROM documents").fetchone() == (1001,)
        assert _valid_indexes(writer) == sorted(INDEXES)


# What a concurrent build that failed leaves: whatever the migration committed before it, and an
# INVALID index of its name (here: a unique build over duplicate versions).
LABEL_COLUMNS = (
    "ALTER TABLE documents ADD COLUMN content_sha256 varchar(64), "
    "ADD COLUMN label varchar(200), ADD COLUMN label_by varchar(64), "
    "ADD COLUMN labelled_at timestamptz, ADD COLUMN label_version bigint"
)


@pytest.mark.parametrize(
    ("below", "index", "committed"),
    [
        ("0002", "ix_documents_updated_at", None),
        ("0004", "ix_documents_labelled_at", LABEL_COLUMNS),
    ],
)
def test_a_rerun_after_a_failed_concurrent_build_completes(
    postgres_url: str, below: str, index: str, committed: str | None
) -> None:
    downgrade(postgres_url, below, force=True)
    with psycopg.connect(_plain(postgres_url), autocommit=True) as connection:
        connection.execute(ROW, (1,))
        connection.execute(ROW, (1,))
        if committed:
            connection.execute(committed)
        with pytest.raises(psycopg.errors.UniqueViolation):
            connection.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {index} ON documents (version)")
        assert index not in _valid_indexes(connection)
        migrate(postgres_url)
        assert _revision(postgres_url) == HEAD
        assert _valid_indexes(connection) == sorted(INDEXES)
        definition = connection.execute("SELECT pg_get_indexdef(%s::regclass)", (index,))
        assert "UNIQUE" not in str(definition.fetchone())


def test_a_downgrade_that_drops_labels_refuses_unless_forced(database_url: str) -> None:
    with pytest.raises(DataLossError, match=r"activation order.*force=true"):
        downgrade(database_url, "0004")
    assert _revision(database_url) == HEAD
    engine = make_engine(database_url)
    try:
        assert "label" in {c["name"] for c in inspect(engine).get_columns("documents")}
        downgrade(database_url, "0004", force=True)
        assert _revision(database_url) == "0004"
        assert "label" not in {c["name"] for c in inspect(engine).get_columns("documents")}
    finally:
        engine.dispose()
        migrate(database_url)


def test_models_registered_before_0014_get_their_scoring_form(
    database_url: str, model_path: Path, nb_model_path: Path
) -> None:
    """0014 converts each registered artifact as registration does, checksum first: a model
    whose artifact changed since it was registered keeps none, and workers refuse it."""
    downgrade(database_url, "0013")  # nothing lost: upgrading makes the forms again
    engine = make_engine(database_url)
    models = sa.table(
        "models",
        sa.column("version", sa.String),
        sa.column("sha256", sa.String),
        sa.column("artifact", sa.LargeBinary),
        sa.column("card", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    default, nb = Classifier.load(model_path), Classifier.load(nb_model_path)
    registered = {default: model_path.read_bytes(), nb: nb_model_path.read_bytes()}
    stored = {default: registered[default], nb: registered[nb][:-10] + bytes(10)}
    try:
        with engine.begin() as connection:
            connection.execute(
                models.insert(),
                [
                    {
                        "version": model.version,
                        "sha256": registry.checksum(registered[model]),
                        "artifact": stored[model],
                        "card": model.metadata,
                        "created_at": utcnow(),
                    }
                    for model in (default, nb)
                ],
            )
        migrate(database_url)
        scorer = registry.load_scorer(engine, default.version)
        texts = list(UNAMBIGUOUS.values())
        assert [p.category for p in scorer.predict(texts)] == list(UNAMBIGUOUS)
        assert [p.confidence for p in scorer.predict(texts)] == pytest.approx(
            [p.confidence for p in default.predict(texts)], abs=1e-9
        )
        with pytest.raises(registry.ArtifactRefusedError, match="has no scoring form"):
            registry.load_scorer(engine, nb.version)
    finally:
        with engine.begin() as connection:
            connection.execute(models.delete())
        engine.dispose()
        migrate(database_url)


def test_a_database_not_migrated_answers_503_saying_so(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Every table gone (downgraded to the base, as a database nobody migrated): no 500, a
    503 that says to run `docingest migrate`, and `/ready` says so too."""
    downgrade(database_url, "base", force=True)
    settings = make_settings(database_url, redis_url, tmp_path / "none.skops", tmp_path)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for path in ("/documents", "/changes", "/changes/head", "/webhooks", "/models"):
            answer = client.get(path)
            assert answer.status_code == 503, (path, answer.text)
            assert "run `docingest migrate`" in answer.json()["detail"]
            assert "Retry-After" in answer.headers
        ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["database"] == "not migrated: run `docingest migrate`"


def test_ready_says_when_the_database_is_behind_the_code(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """One revision down: `/ready` names both revisions; at the head again, ready."""
    scripts = ScriptDirectory(str(Path(db.__file__).parent / "migrations"))
    previous = scripts.get_revision(HEAD).down_revision
    assert isinstance(previous, str)
    downgrade(database_url, previous, force=True)
    settings = make_settings(database_url, redis_url, tmp_path / "none.skops", tmp_path)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        behind = client.get("/ready")
        migrate(database_url)
        again = client.get("/ready")
    assert behind.status_code == 503
    needs = f"not migrated: at {previous}, this code needs {HEAD}: run `docingest migrate`"
    assert behind.json()["database"] == needs
    assert again.json()["database"] == "ok", again.text
