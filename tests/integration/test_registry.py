"""The model registry: registration, checksums, activation, and workers switching models live."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import skops.io as sio
from fastapi.testclient import TestClient
from sklearn.feature_extraction.text import TfidfVectorizer
from sqlalchemy import Engine, text, update
from typer.testing import CliRunner

from docingest.cli import app as cli
from docingest.model import registry, training
from docingest.model.classifier import TRUSTED_TYPES, Classifier
from docingest.model.datasets import load_dataset
from docingest.model.scoring import TOP_ALTERNATIVES
from docingest.observe.worker_metrics import MODEL_REFUSED
from docingest.settings import get_settings
from docingest.tables import MODELS
from tests.helpers import UNAMBIGUOUS

runner = CliRunner()


def test_add_is_idempotent_and_a_version_names_one_artifact(
    engine: Engine, model_path: Path, nb_model_path: Path
) -> None:
    first = registry.add(engine, model_path.read_bytes(), activate=False)
    again = registry.add(engine, model_path.read_bytes(), activate=True)
    assert again.version == first.version
    assert registry.active_version(engine) == first.version
    assert [model.version for model in registry.list_models(engine)] == [first.version]

    other = sio.loads(nb_model_path.read_bytes(), trusted=list(TRUSTED_TYPES))
    other["metadata"]["version"] = first.version
    forged = sio.dumps(other)
    with pytest.raises(registry.RegistryError, match="already registered with other content"):
        registry.add(engine, forged, activate=False)


def test_the_model_activated_last_is_active_and_older_ones_can_come_back(
    engine: Engine, model_path: Path, nb_model_path: Path
) -> None:
    default = registry.add(engine, model_path.read_bytes(), activate=True).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    assert registry.active_version(engine) == default
    registry.activate(engine, nb)
    assert registry.active_version(engine) == nb
    assert registry.card(engine)["estimator"] == "nb"
    registry.activate(engine, default)
    assert registry.active_version(engine) == default


def test_activation_is_ordered_by_the_database_not_by_the_activating_hosts_clock(
    engine: Engine, model_path: Path, nb_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = registry.add(engine, model_path.read_bytes(), activate=True).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    registry.activate(engine, nb)
    behind = datetime.now(UTC) - timedelta(days=1)  # a host whose clock is a day late
    monkeypatch.setattr(registry, "utcnow", lambda: behind)
    registry.activate(engine, default)  # a rollback from that host
    assert registry.active_version(engine) == default


def test_activation_replacing_a_model_is_a_compare_and_set(
    engine: Engine, model_path: Path, nb_model_path: Path
) -> None:
    """The gate compared with `default`; `nb` was activated meanwhile and stays."""
    default = registry.add(engine, model_path.read_bytes(), activate=True).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    registry.activate(engine, nb, replacing=default)
    assert registry.active_version(engine) == nb
    with pytest.raises(registry.ActivationConflictError, match=f"model {nb} was activated since"):
        registry.activate(engine, default, replacing=default)
    with pytest.raises(registry.ActivationConflictError):
        registry.activate(engine, default, replacing=None)
    assert registry.active_version(engine) == nb


def test_concurrent_activations_leave_one_active_model(
    engine: Engine, model_path: Path, nb_model_path: Path
) -> None:
    versions = [
        registry.add(engine, path.read_bytes(), activate=False).version
        for path in (model_path, nb_model_path)
    ]
    with ThreadPoolExecutor(6) as pool:  # each loads its model first: ~0.5 s of CPU
        list(pool.map(lambda n: registry.activate(engine, versions[n % 2]), range(6)))
    with engine.connect() as connection:
        numbers = connection.execute(text("SELECT activation FROM models")).scalars().all()
    assert sorted(numbers) == sorted(set(numbers))  # never two models with the same number
    assert registry.active_version(engine) in versions


def _tamper(engine: Engine, version: str, column: str = "scoring") -> None:
    """Zero the last bytes of a model's stored artifact or scoring form (what workers load)."""
    with engine.begin() as connection:
        stored = connection.execute(
            text(f"SELECT {column} FROM models WHERE version = :v"), {"v": version}
        ).scalar_one()
        changed = bytes(stored[:-10]) + bytes(10)
        connection.execute(update(MODELS).where(MODELS.c.version == version), {column: changed})


def test_registration_stores_a_scoring_form_that_predicts_as_the_artifact(
    engine: Engine, model_path: Path
) -> None:
    """What workers load (numpy only) and what training loads (scikit-learn) agree."""
    version = registry.add(engine, model_path.read_bytes(), activate=False).version
    scorer, classifier = registry.load_scorer(engine, version), registry.load(engine, version)
    assert (scorer.version, scorer.labels, scorer.metadata) == (
        classifier.version,
        classifier.labels,
        classifier.metadata,
    )
    texts = list(UNAMBIGUOUS.values())
    for ours, theirs in zip(scorer.predict(texts), classifier.predict(texts), strict=True):
        assert ours.category == theirs.category
        assert ours.confidence == pytest.approx(theirs.confidence, abs=1e-9)


def test_a_pipeline_the_scorer_cannot_reproduce_is_not_registered(
    engine: Engine, tmp_path: Path
) -> None:
    """scikit-learn's own TfidfVectorizer: the model loads, but workers could not score it."""
    bbc = load_dataset("bbc")
    pipeline = training.build_pipeline("nb", vectorizer=TfidfVectorizer())
    pipeline.fit(bbc.texts[:300], bbc.labels[:300])
    metadata = {"version": "foreign-vectorizer", "labels": sorted(set(bbc.labels[:300]))}
    artifact = training.model_bytes(training.TrainedModel(pipeline, metadata))
    with pytest.raises(registry.ArtifactRefusedError) as refused:
        registry.add(engine, artifact, activate=False)
    assert str(refused.value) == (
        "artifact cannot be scored without scikit-learn: its pipeline is not a WordVectorizer "
        "then one estimator"
    )
    assert registry.list_models(engine) == []


def test_a_model_without_a_scoring_form_is_refused_by_workers_and_activation(
    engine: Engine, model_path: Path, nb_model_path: Path, tmp_path: Path
) -> None:
    """As migration 0014 leaves a model registered before it whose artifact it could not
    convert: workers serve the model they had, activation refuses it."""
    default = registry.add(engine, model_path.read_bytes(), activate=True).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    with engine.begin() as connection:
        connection.execute(
            update(MODELS).where(MODELS.c.version == nb), {"scoring": None, "scoring_sha256": None}
        )
    with pytest.raises(registry.ArtifactRefusedError) as refused:
        registry.activate(engine, nb)
    assert str(refused.value) == (
        f"model {nb} has no scoring form: its artifact could not be converted when the "
        "registry was migrated (docs/models.md); train it again"
    )
    with engine.begin() as connection:  # activated behind the registry's back
        connection.execute(update(MODELS).where(MODELS.c.version == nb), {"activation": 1000})
    refused_versions: list[str] = []
    cache = registry.ModelCache(
        engine,
        seed=tmp_path / "unused.skops",
        refresh_seconds=0,
        on_refused=refused_versions.append,
    )
    assert cache.active().version == default
    assert refused_versions == [nb]


def test_a_tampered_artifact_is_refused_by_activation_and_by_training(
    engine: Engine, model_path: Path, nb_model_path: Path
) -> None:
    """Workers do not load the artifact, but it must still be the one registered."""
    default = registry.add(engine, model_path.read_bytes(), activate=True).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    _tamper(engine, nb, "artifact")
    expected = f"model {nb}: artifact does not match its registered sha256 checksum"
    with pytest.raises(registry.ArtifactRefusedError, match=expected):
        registry.activate(engine, nb)
    with pytest.raises(registry.ArtifactRefusedError, match=expected):
        registry.load(engine, nb)
    assert registry.active_version(engine) == default


def test_a_tampered_scoring_form_is_refused_and_the_old_model_keeps_serving(
    engine: Engine, model_path: Path, nb_model_path: Path, tmp_path: Path
) -> None:
    default = registry.add(engine, model_path.read_bytes(), activate=True).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    cache = registry.ModelCache(engine, seed=tmp_path / "unused.skops", refresh_seconds=0)
    assert cache.active().version == default

    _tamper(engine, nb)
    expected = f"model {nb}: scoring form does not match its registered sha256 checksum"
    with pytest.raises(registry.ArtifactRefusedError, match=expected):
        registry.activate(engine, nb)
    assert registry.active_version(engine) == default

    with engine.begin() as connection:  # activated behind the registry's back
        connection.execute(
            text("UPDATE models SET activation = 1000 WHERE version = :v"),
            {"v": nb},
        )
    assert registry.active_version(engine) == nb
    assert cache.active().version == default


def test_a_fresh_worker_serves_the_previous_model_when_the_active_one_is_refused(
    engine: Engine, model_path: Path, nb_model_path: Path, tmp_path: Path
) -> None:
    """A corrupted active model (or one this docingest cannot read) never stops ingestion:
    a process started since serves the model active before it, and counts the refusal once
    per retry interval, not at every refresh."""
    default = registry.add(engine, model_path.read_bytes(), activate=True).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=True).version
    _tamper(engine, nb)
    refused: list[str] = []
    cache = registry.ModelCache(
        engine, seed=tmp_path / "unused.skops", refresh_seconds=0, on_refused=refused.append
    )
    for _ in range(5):
        assert cache.active().version == default
    assert refused == [nb]


def test_a_running_worker_keeps_its_model_and_ready_says_the_active_one_is_refused(
    engine: Engine, model_path: Path, nb_model_path: Path, tmp_path: Path, client: TestClient
) -> None:
    default = registry.add(engine, model_path.read_bytes(), activate=True).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    metrics = client.app.state.connections.metrics  # type: ignore[attr-defined]
    cache = registry.ModelCache(
        engine,
        seed=tmp_path / "unused.skops",
        refresh_seconds=0,
        on_refused=lambda version: metrics.add({f"{MODEL_REFUSED.name}|{version}": 1}),
    )
    assert cache.active().version == default
    assert client.get("/ready").json()["model"] == f"{default} active"
    _tamper(engine, nb)
    with engine.begin() as connection:  # activated behind the registry's back, as corrupted
        connection.execute(
            text("UPDATE models SET activation = 1000 WHERE version = :v"), {"v": nb}
        )
    assert cache.active().version == default
    ready = client.get("/ready").json()["model"]
    assert ready == f"{nb} refused by workers (1 times): they serve an earlier model"
    page = client.get("/metrics").text
    assert f'docingest_worker_model_refused_total{{model_version="{nb}"}} 1.0' in page


def test_cli_refuses_a_foreign_artifact_with_a_clear_message(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "foreign.skops"
    sio.dump({"pipeline": uuid.UUID(int=1), "metadata": {"version": "x", "labels": []}}, path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        result = runner.invoke(cli, ["model", "import", str(path)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "untrusted types, not loaded: uuid.UUID" in result.output


def test_cli_import_list_show_activate(
    database_url: str,
    model_path: Path,
    nb_model_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        assert runner.invoke(cli, ["model", "import", str(model_path), "--activate"]).exit_code == 0
        imported = runner.invoke(cli, ["model", "import", str(nb_model_path)])
        nb = Classifier.load(nb_model_path).version
        assert imported.exit_code == 0, imported.output
        listed = runner.invoke(cli, ["model", "list"])
        assert nb in listed.output
        activated = runner.invoke(cli, ["model", "activate", nb])
        assert activated.exit_code == 0, activated.output
        png = tmp_path / "confusion.png"
        shown = runner.invoke(cli, ["model", "show", "--png", str(png)])
        assert shown.exit_code == 0, shown.output
        assert nb in shown.output
        assert png.read_bytes().startswith(b"\x89PNG")
        unknown = runner.invoke(cli, ["model", "activate", "no-such-version"])
        assert unknown.exit_code == 1
        assert "no model no-such-version" in unknown.output
    finally:
        get_settings.cache_clear()


def test_api_serves_cards_and_activates(
    client: TestClient, engine: Engine, model_path: Path, nb_model_path: Path
) -> None:
    assert client.get("/model").status_code == 404
    default = registry.add(engine, model_path.read_bytes(), activate=True).version
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    card = client.get("/model").json()
    assert card["version"] == default
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix"} <= card["metrics"].keys()
    listed = client.get("/models").json()
    assert [(m["version"], m["active"]) for m in listed] == [(nb, False), (default, True)]
    png = client.get(f"/models/{nb}/confusion-matrix.png")
    assert png.headers["content-type"] == "image/png"
    assert client.post(f"/models/{nb}/activate").json()["version"] == nb
    assert client.get("/model").json()["version"] == nb
    missing = client.post("/models/nope/activate")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no model nope in the registry"}


def test_predictions_carry_the_top_alternatives(classifier: Classifier) -> None:
    [prediction] = classifier.predict([UNAMBIGUOUS["sports"]])
    assert len(prediction.alternatives) == TOP_ALTERNATIVES
    assert prediction.alternatives[0] == {
        "category": "sports",
        "probability": prediction.confidence,
    }
    chances = [alternative["probability"] for alternative in prediction.alternatives]
    assert chances == sorted(chances, reverse=True)
