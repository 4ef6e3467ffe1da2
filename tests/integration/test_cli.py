import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine
from typer.testing import CliRunner

from docingest.cli import app
from docingest.documents.store import store_batch
from docingest.model.classifier import Classifier
from docingest.queue.redis import QueueKeys
from docingest.schemas import QueuedDocument, utcnow
from docingest.settings import get_settings
from docingest.worker.ingest import failure_row

runner = CliRunner()


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "api", "worker", "train", "migrate", "failures", "replay"):
        assert f" {command} " in result.output


def test_train_writes_a_loadable_model(tmp_path: Path) -> None:
    output = tmp_path / "models" / "bbc.skops"
    result = runner.invoke(app, ["train", "--output", str(output), "--estimator", "nb"])
    assert result.exit_code == 0, result.output
    assert "held-out accuracy" in result.output
    assert Classifier.load(output).metadata["estimator"] == "nb"


def test_train_refuses_an_unknown_estimator(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--output", str(tmp_path / "m"), "--estimator", "magic"])
    assert result.exit_code == 2, result.output  # a usage error, not a crash (1)
    assert "unknown estimator 'magic'; supported: logreg, nb, sgd" in result.output
    assert not (tmp_path / "m").exists()


def test_failures_are_listed_and_replayed(
    monkeypatch: pytest.MonkeyPatch, engine: Engine, database_url: str, redis_url: str
) -> None:
    document = QueuedDocument(id=uuid.uuid4(), content="text", version=3, accepted_at=utcnow())
    store_batch(engine, [], [failure_row(document, "ValueError: boom", utcnow())])
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BROKER_URL", redis_url)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps table cells to the terminal width
    get_settings.cache_clear()
    try:
        listed = runner.invoke(app, ["failures"])
        assert listed.exit_code == 0, listed.output
        assert str(document.id)[:8] in listed.output
        assert "ValueError: boom" in listed.output

        replayed = runner.invoke(app, ["replay"])
        assert replayed.exit_code == 0, replayed.output
        assert "replayed 1 failed documents" in replayed.output
    finally:
        get_settings.cache_clear()
    assert redis.Redis.from_url(redis_url).llen(QueueKeys.of("documents").waiting) == 1


@pytest.mark.parametrize(
    "command", [["stats"], ["failures"], ["webhooks", "list"], ["model", "list"], ["changes"]]
)
def test_a_database_without_docingest_is_an_error_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, command: list[str]
) -> None:
    """The usual cause: a command run in another folder than the service, where the embedded
    default `sqlite:///var/docingest.db` names another (empty) file."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    monkeypatch.setenv("BROKER_URL", redis_url)
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, command)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert "no such table" in result.output
    assert "docingest migrate" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WEBHOOK_BATCH_SIZE", "0", "greater than or equal to 1"),
        ("DATABASE_URL", "", "not a database URL"),
        ("DATABASE_URL", "localhost:5432", "not a database URL"),
    ],
)
def test_a_setting_that_is_not_valid_is_named_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["stats"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert f"{name}={value!r}" in result.output
    assert message in result.output
    assert "Traceback" not in result.output
