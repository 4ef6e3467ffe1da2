"""Whether the workers can load a model, proved by them before it is activated.

Loading a model in the activating process proves that it loads there: a worker with another
scikit-learn (numpy, scipy, skops, Python, docingest) may not. So each worker process reports the
environment it runs (`fingerprint`: the versions that decide whether an artifact loads) every
MODEL_REFRESH_SECONDS, in `model_environments`, and loads the models activations ask it to check
(`model_checks`), recording whether it could load one and classify a text with it, or its error.

An activation (`registry.activate`) then requires, for every environment a worker reported
lately other than its own (which its own load proves), that a worker running it loaded the
model: it asks them, waits up to MODEL_CHECK_WAIT_SECONDS for their answer, and refuses with
the error one recorded, or because none answered in time (`WorkersCannotLoadError`).

"Lately" is by the database's clock, never a host's: within twice the worker's own
MODEL_REFRESH_SECONDS and LIVE_SLACK_SECONDS more (a round that spent time loading a model).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from docingest.db import dialect_insert
from docingest.model.registry import RegistryError, WorkersCannotLoadError
from docingest.schemas import utcnow
from docingest.tables import MODEL_CHECKS, MODEL_ENVIRONMENTS

if TYPE_CHECKING:
    from docingest.model.classifier import Classifier

logger = structlog.get_logger(__name__)

LIVE_SLACK_SECONDS = 10.0

# What a worker classifies with a model it checks: loading is not all, a scikit-learn that
# rebuilds a fitted estimator of another release may still fail when it predicts.
PROBE = "The minister said the team would sign new players and the market would go up."


def fingerprint() -> str:
    """The versions an artifact's loading depends on, as workers report them: the skops file
    holds numpy arrays and scikit-learn estimators (which import scipy) and the docingest
    `WordVectorizer`, read by skops under this Python."""
    import numpy
    import scipy
    import sklearn
    import skops

    try:
        docingest = metadata.version("docingest")
    except metadata.PackageNotFoundError:  # run from a source tree not installed
        docingest = "unknown"
    versions = {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "skops": skops.__version__,
        "docingest": docingest,
    }
    return ", ".join(f"{name} {version}" for name, version in versions.items())


def probe(classifier: Classifier) -> None:
    """Classify a text, as a worker would, or raise what it raises."""
    classifier.predict([PROBE])


# --- in each worker process --------------------------------------------------------------------


def report(engine: Engine, environment: str, *, refresh_seconds: float) -> None:
    """A worker running `environment` is alive now (the database's now)."""
    with engine.begin() as connection:
        insert = dialect_insert(connection, MODEL_ENVIRONMENTS).values(
            environment=environment, seen_at=func.now(), refresh_seconds=refresh_seconds
        )
        connection.execute(
            insert.on_conflict_do_update(
                index_elements=[MODEL_ENVIRONMENTS.c.environment],
                set_={"seen_at": func.now(), "refresh_seconds": refresh_seconds},
            )
        )


Loader = Callable[[Engine, str], "Classifier"]


def check_requested(
    engine: Engine, environment: str, *, load: Loader | None = None
) -> dict[str, str | None]:
    """Load each model an activation asked workers running `environment` to check, classify a
    text with it, and record the outcome; returns {version: error or None}.

    A database error is not the model's fault: raised, the request stays for the next round.
    `load`: `registry.load` (tests give another, as a worker of another environment would fail).
    """
    from docingest.model import registry

    load = load or registry.load
    query = select(MODEL_CHECKS.c.version).where(
        MODEL_CHECKS.c.environment == environment, MODEL_CHECKS.c.loaded.is_(None)
    )
    with engine.connect() as connection:
        versions = list(connection.execute(query).scalars())
    outcomes: dict[str, str | None] = {}
    for version in versions:
        outcomes[version] = error = _try(engine, version, load)
        with engine.begin() as connection:
            connection.execute(
                update(MODEL_CHECKS)
                .where(
                    MODEL_CHECKS.c.environment == environment,
                    MODEL_CHECKS.c.version == version,
                )
                .values(loaded=error is None, error=error, checked_at=func.now())
            )
        if error is None:
            logger.info("model checked: it loads here", model_version=version)
        else:
            logger.error("model checked: it does not load here", model_version=version, error=error)
    return outcomes


def _try(engine: Engine, version: str, load: Loader) -> str | None:
    try:
        classifier = load(engine, version)
    except (SQLAlchemyError, MemoryError):
        raise
    except RegistryError as error:  # checksum, trusted types, rebuilt by this scikit-learn
        return str(error)
    except Exception as error:
        return f"model {version} could not be loaded: {error!r}"
    try:
        probe(classifier)
    except MemoryError:
        raise
    except Exception as error:
        return f"model {version} loads but cannot classify: {error!r}"
    return None


# --- in the activating process ------------------------------------------------------------------


def live_environments(engine: Engine) -> list[str]:
    """The environments a worker reported lately, by the database's clock."""
    query = select(
        MODEL_ENVIRONMENTS.c.environment,
        MODEL_ENVIRONMENTS.c.seen_at,
        MODEL_ENVIRONMENTS.c.refresh_seconds,
    )
    with engine.connect() as connection:
        now = _utc(connection.execute(select(func.now())).scalar_one())
        rows = connection.execute(query).all()
    return sorted(
        row.environment
        for row in rows
        if (now - _utc(row.seen_at)).total_seconds() <= 2 * row.refresh_seconds + LIVE_SLACK_SECONDS
    )


def _utc(value: datetime) -> datetime:
    """SQLite answers naive UTC times, PostgreSQL aware ones."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def require_loadable(
    engine: Engine, version: str, *, own: str, wait_seconds: float, poll_seconds: float = 0.2
) -> None:
    """Return once a worker of every environment reported lately, `own` aside, has loaded
    `version`; raise WorkersCannotLoadError with the error one recorded, or once
    `wait_seconds` passed without an answer from some of them."""
    deadline = time.monotonic() + wait_seconds
    while True:
        foreign = [environment for environment in live_environments(engine) if environment != own]
        if not foreign:
            return
        outcomes = _outcomes(engine, version, foreign)
        for environment, (loaded, error) in outcomes.items():
            if loaded is False:
                raise WorkersCannotLoadError(
                    f"model {version} not activated: workers running {environment} cannot load "
                    f"it: {error}"
                )
        waiting = [environment for environment in foreign if outcomes[environment][0] is None]
        if not waiting:
            return
        if time.monotonic() >= deadline:
            raise WorkersCannotLoadError(
                f"model {version} not activated: not yet checked by workers running "
                f"{'; '.join(waiting)} (waited {wait_seconds:g} s, MODEL_CHECK_WAIT_SECONDS); "
                "they check it every MODEL_REFRESH_SECONDS: try again"
            )
        time.sleep(poll_seconds)


def _outcomes(
    engine: Engine, version: str, environments: Iterable[str]
) -> dict[str, tuple[bool | None, str | None]]:
    """Each environment's answer for `version`; asked for where there is none yet."""
    environments = list(environments)
    query = select(MODEL_CHECKS.c.environment, MODEL_CHECKS.c.loaded, MODEL_CHECKS.c.error).where(
        MODEL_CHECKS.c.version == version, MODEL_CHECKS.c.environment.in_(environments)
    )
    with engine.begin() as connection:
        found = {row.environment: (row.loaded, row.error) for row in connection.execute(query)}
        if unasked := [environment for environment in environments if environment not in found]:
            insert = dialect_insert(connection, MODEL_CHECKS).on_conflict_do_nothing()
            connection.execute(
                insert,
                [
                    {"environment": environment, "version": version, "requested_at": utcnow()}
                    for environment in unasked
                ],
            )
    return {environment: found.get(environment, (None, None)) for environment in environments}
