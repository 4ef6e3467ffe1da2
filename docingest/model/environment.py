"""Whether the workers can load a model, proved by them before it is activated: what they
report and answer, in the database (the loading and the waiting are `registry`'s).

Workers load a model's scoring form (`scoring.Scorer`), not its skops artifact. Loading it in the
activating process proves that it loads there: a worker with another numpy (Python, docingest)
may not. So each worker process reports the environment it runs (`fingerprint`: the versions
that decide whether a scoring form loads) every MODEL_REFRESH_SECONDS, in `model_environments`,
and loads the models activations ask it to check (`model_checks`), recording whether it could
load one's scoring form and classify a text with it, or its error (`registry.check_requested`).

An activation (`registry.activate`) requires, for every environment a worker reported
lately other than its own (which its own load proves), that a worker running it loaded the
model: it asks them, waits up to MODEL_CHECK_WAIT_SECONDS for their answer, and refuses with
the error one recorded, or because none answered in time (`WorkersCannotLoadError`).

"Lately" is by the database's clock, never a host's: within twice the worker's own
MODEL_REFRESH_SECONDS and LIVE_SLACK_SECONDS more (a round that spent time loading a model).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, select, update

from docingest.db import dialect_insert
from docingest.schemas import utcnow
from docingest.tables import MODEL_CHECKS, MODEL_ENVIRONMENTS

if TYPE_CHECKING:
    from docingest.model.scoring import Predictor

LIVE_SLACK_SECONDS = 10.0

# What a worker classifies with a model it checks: loading is not all, arrays that load may
# still fail when they are used.
PROBE = "The minister said the team would sign new players and the market would go up."


def fingerprint() -> str:
    """The versions a scoring form's loading depends on, as workers report them: numpy arrays
    in an `.npz`, read and used by docingest's `scoring` under this Python. Nothing here imports
    scikit-learn, SciPy or skops: workers never load them."""
    import numpy

    try:
        docingest = metadata.version("docingest")
    except metadata.PackageNotFoundError:  # run from a source tree not installed
        docingest = "unknown"
    versions = {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "numpy": numpy.__version__,
        "docingest": docingest,
    }
    return ", ".join(f"{name} {version}" for name, version in versions.items())


def probe(model: Predictor) -> None:
    """Classify a text, as a worker would, or raise what it raises."""
    model.predict([PROBE])


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


def requested(engine: Engine, environment: str) -> list[str]:
    """The models an activation asked workers running `environment` to check, not answered."""
    query = select(MODEL_CHECKS.c.version).where(
        MODEL_CHECKS.c.environment == environment, MODEL_CHECKS.c.loaded.is_(None)
    )
    with engine.connect() as connection:
        return list(connection.execute(query).scalars())


def record(engine: Engine, environment: str, version: str, error: str | None) -> None:
    """A worker running `environment` loaded `version` (`error` None), or could not."""
    with engine.begin() as connection:
        connection.execute(
            update(MODEL_CHECKS)
            .where(MODEL_CHECKS.c.environment == environment, MODEL_CHECKS.c.version == version)
            .values(loaded=error is None, error=error, checked_at=func.now())
        )


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


def answers(
    engine: Engine, version: str, environments: Iterable[str]
) -> dict[str, tuple[bool | None, str | None]]:
    """Each environment's answer for `version` (loaded, error; None: not yet); asked for where
    there is none yet."""
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
