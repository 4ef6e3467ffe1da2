import os
from pathlib import Path

import pytest

from docingest.settings import Settings


def test_defaults_run_on_one_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "BROKER_URL",
        "REDIS_URL",
        "PORT",
        "MODEL_PATH",
        "WORKER_PROCESSES",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.database_url == "sqlite:///var/docingest.db"
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.port == 8000
    assert settings.model_path == Path("var/models/default.skops")
    assert settings.worker_processes == (os.cpu_count() or 1)


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("BROKER_URL", "rediss://example:6380/1")
    monkeypatch.setenv("MAX_BODY_BYTES", "1024")
    settings = Settings(_env_file=None)
    assert settings.port == 9123
    assert settings.broker_url == "rediss://example:6380/1"
    assert settings.max_body_bytes == 1024


def test_redis_url_is_accepted_as_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BROKER_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://heroku:6379/0")
    assert Settings(_env_file=None).broker_url == "redis://heroku:6379/0"


@pytest.mark.parametrize(
    "given",
    ["postgres://u:secret@db:5432/app", "postgresql://u:secret@db:5432/app"],
)
def test_postgres_urls_use_psycopg3(given: str) -> None:
    settings = Settings(_env_file=None, database_url=given)
    assert settings.database_url == "postgresql+psycopg://u:secret@db:5432/app"
    assert "secret" not in settings.masked_database_url()


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        Settings(_env_file=None, max_body_bytes=0)
    with pytest.raises(ValueError, match="redis_appendfsync"):
        Settings(_env_file=None, redis_appendfsync="sometimes")


def test_changes_retention_reads_seconds_or_iso_8601(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    assert Settings(_env_file=None).changes_retention == timedelta(days=7)
    for text, expected in (("3600", timedelta(hours=1)), ("P30D", timedelta(days=30))):
        monkeypatch.setenv("CHANGES_RETENTION", text)
        assert Settings(_env_file=None).changes_retention == expected
    monkeypatch.setenv("CHANGES_RETENTION", "0")
    with pytest.raises(ValueError, match="changes_retention"):
        Settings(_env_file=None)
