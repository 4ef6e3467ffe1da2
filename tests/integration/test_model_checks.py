"""Activation refused when the workers' environment cannot load the model (issue 24, item 3).

A worker here is the code each worker process runs every MODEL_REFRESH_SECONDS
(`environment.report`, `registry.check_requested`: `WorkerMiddleware._check_models`), in a
thread, against the test's real database. One running "another numpy" reports another
fingerprint and fails to read the model's scoring form, as such a worker would;
tests/system/test_registry.py does the same with a real worker process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update
from typer.testing import CliRunner

from docingest.api import create_app
from docingest.cli import app as cli
from docingest.model import environment, registry
from docingest.model.classifier import Classifier
from docingest.model.scoring import Scorer
from docingest.settings import Settings, get_settings
from docingest.tables import MODEL_CHECKS, MODEL_ENVIRONMENTS
from tests.cooking import cooking_texts
from tests.helpers import UNAMBIGUOUS

runner = CliRunner()

OTHER = "python 3.11, numpy 0.0+other, docingest 0.1.0"
# What a numpy release that cannot read another's arrays would make a worker say.
INCOMPATIBLE = "scoring form cannot be read: ValueError('unsupported array layout')"


def another_numpy(engine: Engine, version: str) -> Scorer:
    raise registry.ArtifactRefusedError(f"model {version} {INCOMPATIBLE}")


@contextmanager
def worker(
    engine: Engine, running: str, loader: registry.Loader = registry.load_scorer
) -> Iterator[None]:
    """A worker process's reporting and checking, every 0.1 s, until the block ends; it has
    reported once when the block starts (a running worker has)."""
    stop = threading.Event()
    errors: list[BaseException] = []
    environment.report(engine, running, refresh_seconds=0.1)

    def run() -> None:
        try:
            while not stop.wait(0.1):
                environment.report(engine, running, refresh_seconds=0.1)
                registry.check_requested(engine, running, loader=loader)
        except BaseException as error:  # raised again by the test
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    if errors:
        raise errors[0]


@pytest.fixture
def models(engine: Engine, model_path: Path, nb_model_path: Path) -> tuple[str, str]:
    """The default model active, the nb model registered."""
    default = registry.add(engine, model_path.read_bytes(), activate=True).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    return default, nb


def test_a_model_workers_of_another_environment_cannot_load_is_not_activated(
    engine: Engine, models: tuple[str, str]
) -> None:
    default, nb = models
    with worker(engine, OTHER, loader=another_numpy):
        with pytest.raises(registry.WorkersCannotLoadError) as refused:
            registry.activate(engine, nb, wait_seconds=20)
        assert registry.active_version(engine) == default
        # The answer is kept: asked again, the refusal is immediate.
        with pytest.raises(registry.WorkersCannotLoadError):
            registry.activate(engine, nb, wait_seconds=0)
    assert str(refused.value) == (
        f"model {nb} not activated: workers running {OTHER} cannot load it: "
        f"model {nb} {INCOMPATIBLE}"
    )
    assert registry.active_version(engine) == default


def test_a_model_workers_of_another_environment_load_is_activated_once_they_said_so(
    engine: Engine, models: tuple[str, str]
) -> None:
    """The activation asks, the worker loads the model and classifies a text, then answers."""
    _, nb = models
    with worker(engine, OTHER):
        registry.activate(engine, nb, wait_seconds=20)
    assert registry.active_version(engine) == nb
    with engine.connect() as connection:
        checks = connection.execute(select(MODEL_CHECKS)).mappings().all()
    assert [(c["environment"], c["version"], c["loaded"], c["error"]) for c in checks] == [
        (OTHER, nb, True, None)
    ]


def test_workers_that_do_not_answer_in_time_refuse_the_activation_unless_forced(
    engine: Engine, models: tuple[str, str]
) -> None:
    default, nb = models
    environment.report(engine, OTHER, refresh_seconds=60)  # a worker, busy elsewhere
    with pytest.raises(registry.WorkersCannotLoadError, match="not yet checked by workers") as late:
        registry.activate(engine, nb, wait_seconds=0.5)
    assert f"workers running {OTHER} (waited 0.5 s" in str(late.value)
    assert registry.active_version(engine) == default
    registry.activate(engine, nb, force=True)
    assert registry.active_version(engine) == nb


def test_workers_of_the_activating_environment_and_gone_ones_are_not_waited_for(
    engine: Engine, models: tuple[str, str]
) -> None:
    """The activating process's own load proves its environment; a fingerprint no worker
    reported for longer than twice its refresh period (and the slack) is no one's."""
    _, nb = models
    environment.report(engine, environment.fingerprint(), refresh_seconds=1)
    environment.report(engine, OTHER, refresh_seconds=1)
    with engine.connect() as connection:
        seen = connection.execute(select(MODEL_ENVIRONMENTS.c.seen_at)).scalars().first()
    assert seen is not None
    gone = seen - timedelta(seconds=2 * 1 + environment.LIVE_SLACK_SECONDS + 5)
    with engine.begin() as connection:
        connection.execute(
            update(MODEL_ENVIRONMENTS)
            .where(MODEL_ENVIRONMENTS.c.environment == OTHER)
            .values(seen_at=gone)
        )
    assert environment.live_environments(engine) == [environment.fingerprint()]
    registry.activate(engine, nb, wait_seconds=0)
    assert registry.active_version(engine) == nb


def test_the_first_model_of_an_empty_registry_is_seeded_whatever_workers_run(
    engine: Engine, model_path: Path
) -> None:
    environment.report(engine, OTHER, refresh_seconds=60)
    seeded = registry.ensure_active(engine, model_path)
    assert registry.active_version(engine) == seeded == Classifier.load(model_path).version


def test_the_api_answers_409_with_the_workers_reason(
    engine: Engine, models: tuple[str, str], settings: Settings
) -> None:
    default, nb = models
    quick = settings.model_copy(update={"model_check_wait_seconds": 20})
    with (
        TestClient(create_app(quick), raise_server_exceptions=False) as client,
        worker(engine, OTHER, loader=another_numpy),
    ):
        answer = client.post(f"/models/{nb}/activate")
        assert answer.status_code == 409
        assert answer.json() == {
            "detail": f"model {nb} not activated: workers running {OTHER} cannot load it: "
            f"model {nb} {INCOMPATIBLE}"
        }
        assert client.get("/model").json()["version"] == default
        forced = client.post(f"/models/{nb}/activate", params={"force": "true"})
        assert forced.status_code == 200, forced.text
    assert registry.active_version(engine) == nb


@pytest.fixture
def cli_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MODEL_CHECK_WAIT_SECONDS", "20")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("cli_database")
def test_the_cli_exits_1_with_the_workers_reason(
    engine: Engine, models: tuple[str, str], nb_model_path: Path
) -> None:
    """`model activate` (a rollback too) and `model import --activate`."""
    default, nb = models
    with worker(engine, OTHER, loader=another_numpy):
        activated = runner.invoke(cli, ["model", "activate", nb])
        imported = runner.invoke(cli, ["model", "import", str(nb_model_path), "--activate"])
    reason = f"model {nb} not activated: workers running {OTHER} cannot load it"
    assert activated.exit_code == 1
    assert reason in activated.output
    assert imported.exit_code == 1
    assert reason in imported.output
    assert "it is registered: activate it once the workers can load it" in imported.output
    assert registry.active_version(engine) == default
    forced = runner.invoke(cli, ["model", "activate", nb, "--force"])
    assert forced.exit_code == 0, forced.output
    assert registry.active_version(engine) == nb


def _small_data(folder: Path) -> Path:
    """Two categories, enough of each to hold some out."""
    data = folder / "data.jsonl"
    rows = [{"content": text, "category": "cooking"} for text in cooking_texts(12)]
    sports = UNAMBIGUOUS["sports"]
    rows += [{"content": f"{sports} ({n})", "category": "sports"} for n in range(12)]
    data.write_text("".join(f"{json.dumps(row)}\n" for row in rows))
    return data


@pytest.mark.usefixtures("cli_database")
def test_train_activate_exits_1_with_the_workers_reason(
    engine: Engine, models: tuple[str, str], tmp_path: Path
) -> None:
    """The model is registered and its files written; it is not activated."""
    default, _ = models
    data = _small_data(tmp_path)
    with worker(engine, OTHER, loader=another_numpy):
        trained = runner.invoke(
            cli, ["train", str(data), "--activate", "--card-dir", str(tmp_path)]
        )
    assert trained.exit_code == 1, trained.output
    output = trained.output.replace("\n", "")
    assert "registered (not active)" in output
    assert f"workers running {OTHER} cannot load it" in output
    assert (tmp_path / "card.json").is_file()
    assert registry.active_version(engine) == default


@pytest.mark.usefixtures("cli_database")
def test_a_model_the_gate_found_better_is_not_activated_if_workers_cannot_load_it(
    engine: Engine, models: tuple[str, str], tmp_path: Path
) -> None:
    """`train --activate-if-better` past a `better` verdict (reaching one takes the BBC corpus:
    tests/integration/test_learning.py): the same refusal."""
    from docingest.cli.train import _register
    from docingest.model import learning
    from docingest.model.datasets import load_dataset

    default, _ = models
    part = learning.dataset_part(load_dataset(str(_small_data(tmp_path))), test_size=0.25, seed=1)
    model = learning.train_parts([part], estimator="nb", test_size=0.25, seed=1)
    with worker(engine, OTHER, loader=another_numpy):
        active, refusal = _register(
            engine, model, None, {"better": True, "active_version": default}
        )
    assert not active
    assert refusal is not None
    assert f"workers running {OTHER} cannot load it" in refusal
    assert registry.active_version(engine) == default
