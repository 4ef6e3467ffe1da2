"""The model registry: registration, checksums, activation, and workers switching models live."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from docingest.connections import connect
from docingest.embedded import wait_until
from docingest.model import environment, registry
from docingest.model.classifier import Classifier
from docingest.model.scoring import TOP_ALTERNATIVES
from docingest.queue.enqueue import Enqueuer
from docingest.schemas import DocumentIn
from docingest.settings import get_settings
from tests.faults import Processes, content_for, service_env
from tests.helpers import UNAMBIGUOUS


def test_workers_switch_to_an_activated_model_without_restart(
    postgres_url: str,
    redis_url: str,
    model_path: Path,
    nb_model_path: Path,
    tmp_path: Path,
    procs: Processes,
) -> None:
    """A real worker process: documents before the switch get one model, after it the other,
    and every document is stored, with its alternatives."""
    from docingest.db import make_engine

    engine = make_engine(postgres_url)
    procs.env = refreshing_env(postgres_url, redis_url, model_path, tmp_path)
    procs.worker()
    settings = get_settings().model_copy(
        update={"broker_url": redis_url, "database_url": postgres_url}
    )
    connections = connect(settings)
    enqueuer = Enqueuer(connections.queue, connections.ledger)
    default = Classifier.load(model_path).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version

    def stored_with(version: str) -> int:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM documents WHERE model_version = :v"), {"v": version}
                ).scalar_one()
            )

    before = [DocumentIn(content=content_for(n)) for n in range(100)]
    enqueuer.send(before)
    wait_until(lambda: stored_with(default) == len(before), 60, "stored with the default model")

    registry.activate(engine, nb)
    wait_until(lambda: _probe(enqueuer, engine) == nb, 15, "worker switched to the new model")
    after = [DocumentIn(content=content_for(n)) for n in range(100)]
    enqueuer.send(after)
    wait_until(lambda: stored_with(nb) >= len(after), 30, "stored with the new model")
    with engine.connect() as connection:
        alternatives = connection.execute(text("SELECT alternatives FROM documents")).scalars()
        assert all(len(value) == TOP_ALTERNATIVES for value in alternatives)
    engine.dispose()


def refreshing_env(
    database_url: str, broker_url: str, model_path: Path, data_dir: Path
) -> dict[str, str]:
    """Workers that look for a newly activated model every second."""
    return service_env(
        database_url=database_url,
        broker_url=broker_url,
        model_path=model_path,
        data_dir=data_dir,
        MODEL_REFRESH_SECONDS="1",
    )


def _probe(enqueuer: Enqueuer, engine: Engine, wait: float = 10) -> str | None:
    """Send one document and return the model version it was stored with."""
    [queued] = enqueuer.send([DocumentIn(content=UNAMBIGUOUS["tech"])])
    query = text("SELECT model_version FROM documents WHERE id = :id")
    for _ in range(int(wait * 10)):
        with engine.connect() as connection:
            found = connection.execute(query, {"id": queued.id}).scalar()
        if found:
            return str(found)
        time.sleep(0.1)
    return None


def test_a_worker_started_with_a_refused_active_model_stores_with_the_previous_one(
    postgres_url: str, redis_url: str, model_path: Path, nb_model_path: Path, tmp_path: Path,
    procs: Processes,
) -> None:  # fmt: skip
    """The issue's reproduction: a second model activated, its stored scoring form (what workers
    load) then corrupted, the worker (re)started: documents are stored, with the model active
    before it."""
    from docingest.db import make_engine

    engine = make_engine(postgres_url)
    default = registry.add(engine, model_path.read_bytes(), activate=True).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=True).version
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE models SET scoring = substr(scoring, 1, 1000) WHERE version = :v"),
            {"v": nb},
        )
    procs.env = service_env(
        database_url=postgres_url, broker_url=redis_url, model_path=model_path, data_dir=tmp_path
    )
    procs.worker()
    settings = get_settings().model_copy(
        update={"broker_url": redis_url, "database_url": postgres_url}
    )
    connections = connect(settings)
    enqueuer = Enqueuer(connections.queue, connections.ledger)
    assert _probe(enqueuer, engine, wait=60) == default
    engine.dispose()


# Read at start-up by the worker's Python (first on its PYTHONPATH): another numpy, one that
# reports another version and cannot read the scoring form of the model REFUSED_MODEL names, as
# a release may not read arrays another one wrote.
ANOTHER_NUMPY = """
import json
import os

import numpy

numpy.__version__ = "0.0+other"
_load = numpy.load


def load(file, *args, **kwargs):
    loaded = _load(file, *args, **kwargs)
    if "metadata" in getattr(loaded, "files", ()):
        if json.loads(str(loaded["metadata"]))["version"] == os.environ["REFUSED_MODEL"]:
            raise ValueError("unsupported array layout")
    return loaded


numpy.load = load
"""


def test_activation_is_refused_when_a_worker_of_another_environment_cannot_load_the_model(
    postgres_url: str, redis_url: str, model_path: Path, nb_model_path: Path, tmp_path: Path,
    procs: Processes,
) -> None:  # fmt: skip
    """A real worker process running another numpy: the model whose scoring form it cannot read
    is refused with its error, one it loads is activated once it said so."""
    from docingest.db import make_engine

    engine = make_engine(postgres_url)
    default = registry.add(engine, model_path.read_bytes(), activate=True).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    site = tmp_path / "another-numpy"
    site.mkdir()
    (site / "sitecustomize.py").write_text(ANOTHER_NUMPY)
    procs.env = refreshing_env(postgres_url, redis_url, model_path, tmp_path)
    procs.worker(PYTHONPATH=str(site), REFUSED_MODEL=nb)
    other = re.sub(r"numpy [^,]+", "numpy 0.0+other", environment.fingerprint())
    wait_until(lambda: environment.live_environments(engine) == [other], 60, "the worker reported")

    with pytest.raises(registry.WorkersCannotLoadError) as refused:
        registry.activate(engine, nb, wait_seconds=30)
    assert str(refused.value) == (
        f"model {nb} not activated: workers running {other} cannot load it: model {nb} scoring "
        "form cannot be read: ValueError('unsupported array layout')"
    )
    assert registry.active_version(engine) == default

    registry.activate(engine, default, wait_seconds=30)  # activated again: it loads there
    assert registry.active_version(engine) == default
    with engine.connect() as connection:
        checks = connection.execute(
            text("SELECT version, loaded FROM model_checks WHERE environment = :e"),
            {"e": other},
        ).all()
    assert sorted(checks) == sorted([(nb, False), (default, True)])
    engine.dispose()
