"""The model registry: every trained model's artifact, scoring form and card, and which one is
active.

Artifacts live in the database, beside the documents they classify, so that a process on any
machine loads the same bytes with nothing else to share or mount. Workers classify with each
model's scoring form (`scoring.Scorer`: numpy arrays, no scikit-learn), made from the artifact
when it is registered, where scikit-learn is; training and comparing load the skops artifact.
Both are checksummed when registered and checked before they are loaded: changed or corrupted
bytes are refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Column, Engine, func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import defer
from sqlmodel import Session, col
from sqlmodel import select as select_model

from docingest.model import environment
from docingest.schemas import utcnow
from docingest.settings import Settings
from docingest.tables import MODELS, RegisteredModel

# The web process reads cards and activates models without loading numpy at import, and
# activating loads only the scoring form: never scikit-learn.
if TYPE_CHECKING:
    from docingest.model.classifier import Classifier
    from docingest.model.scoring import Predictor, Scorer
    from docingest.model.training import TrainedModel

logger = structlog.get_logger(__name__)


class RegistryError(Exception):
    """The registry cannot do what was asked; the message says why."""


class ArtifactRefusedError(RegistryError):
    """A model's artifact fails its checks (checksum, trusted types, shape): never loaded."""


class ActivationConflictError(RegistryError):
    """The active model is no longer the one the caller decided against."""


class WorkersCannotLoadError(RegistryError):
    """Workers of another environment than the activating process's could not load the model,
    or did not say in time (`docingest.model.environment`): not activated."""


class Anything:
    """`replacing=ANY`: activate whatever model is active now."""


ANY = Anything()


def _rebuild(artifact: bytes, source: str) -> Classifier:
    from docingest.model.classifier import Classifier
    from docingest.model.scoring import ModelLoadError

    try:
        return Classifier.from_bytes(artifact, source=source)
    except ModelLoadError as error:
        raise ArtifactRefusedError(str(error)) from error


def convert(artifact: bytes, source: str) -> tuple[Classifier, bytes]:
    """The artifact's classifier (skops' trusted types, the shape) and its scoring form, what
    workers load; ArtifactRefusedError if either cannot be made. Registration and migration
    0014 (the models registered before it) both convert this way."""
    from docingest.model.scoring import ModelLoadError

    classifier = _rebuild(artifact, source)
    try:
        return classifier, classifier.scoring_form()
    except ModelLoadError as error:
        raise ArtifactRefusedError(f"{source} {error}") from error


def checksum(artifact: bytes) -> str:
    return hashlib.sha256(artifact).hexdigest()


def register(engine: Engine, model: TrainedModel, *, activate: bool) -> RegisteredModel:
    from docingest.model.training import model_bytes

    return add(engine, model_bytes(model), activate=activate)


CHECK_WAIT_SECONDS: float = Settings.model_fields["model_check_wait_seconds"].default


def add(
    engine: Engine,
    artifact: bytes,
    *,
    activate: bool,
    source: str = "artifact",
    force: bool = False,
    wait_seconds: float = CHECK_WAIT_SECONDS,
) -> RegisteredModel:
    """Register an artifact (loaded and converted to its scoring form first, so a bad one never
    enters); idempotent per version.

    The same version with other bytes is refused: a version names one model, forever.
    `activate`: as `activate` does, once registered (`force`, `wait_seconds`: its own).
    """
    classifier, scoring = convert(artifact, source)
    digest = checksum(artifact)
    with Session(engine, expire_on_commit=False) as session:
        record = session.get(RegisteredModel, classifier.version)
        if record is None:
            record = RegisteredModel(
                version=classifier.version,
                sha256=digest,
                artifact=artifact,
                card=classifier.metadata,
                scoring=scoring,
                scoring_sha256=checksum(scoring),
                created_at=utcnow(),
            )
            session.add(record)
        elif record.sha256 != digest:
            raise RegistryError(
                f"model {classifier.version} is already registered with other content"
            )
        try:
            session.commit()
        except IntegrityError:  # another process registered it first: the same bytes, or refused
            session.rollback()
            return add(
                engine,
                artifact,
                activate=activate,
                source=source,
                force=force,
                wait_seconds=wait_seconds,
            )
    if activate:
        scorer = load_scorer(engine, record.version)  # what workers will load: the stored form
        _usable_by_workers(engine, scorer, force=force, wait_seconds=wait_seconds)
        _activate(engine, record.version, ANY)
    return record


def list_models(engine: Engine) -> Sequence[RegisteredModel]:
    """Newest first, without their artifacts and scoring forms (megabytes each)."""
    with Session(engine) as session:
        statement = (
            select_model(RegisteredModel)
            .options(
                defer(RegisteredModel.artifact),  # type: ignore[arg-type]
                defer(RegisteredModel.scoring),  # type: ignore[arg-type]
            )
            .order_by(col(RegisteredModel.created_at).desc())
        )
        return session.exec(statement).all()


def active_version(engine: Engine) -> str | None:
    """The model activated last; one indexed read, cheap enough to poll every few seconds."""
    with engine.connect() as connection:
        return connection.execute(_ACTIVE).scalar()


_ACTIVE = (
    select(MODELS.c.version)
    .where(MODELS.c.activation.is_not(None))
    .order_by(MODELS.c.activation.desc())
    .limit(1)
)


def card(engine: Engine, version: str | None = None) -> dict[str, Any]:
    """The card of `version`, or of the active model."""
    version = version or active_version(engine)
    if version is None:
        raise RegistryError("no model is active yet")
    with Session(engine) as session:
        found = session.exec(
            select_model(RegisteredModel.card).where(col(RegisteredModel.version) == version)
        ).first()
    if found is None:
        raise RegistryError(f"no model {version} in the registry")
    return dict(found)


def load(engine: Engine, version: str) -> Classifier:
    """Rebuild a registered model's skops artifact (scikit-learn: training, comparing) after
    checking its bytes are the ones registered."""
    artifact = _checked(engine, version, MODELS.c.artifact, MODELS.c.sha256, "artifact")
    return _rebuild(artifact, f"model {version}")


def load_scorer(engine: Engine, version: str) -> Scorer:
    """What workers classify with: the model's scoring form, after checking its bytes are the
    ones registered; numpy only."""
    from docingest.model.scoring import ModelLoadError, Scorer

    form = _checked(engine, version, MODELS.c.scoring, MODELS.c.scoring_sha256, "scoring form")
    try:
        return Scorer.from_bytes(form, source=f"model {version}")
    except ModelLoadError as error:
        raise ArtifactRefusedError(str(error)) from error


def _checked(
    engine: Engine, version: str, column: Column[Any], digest: Column[Any], what: str
) -> bytes:
    """A model's stored bytes (`column`), refused unless they match the registered checksum."""
    with engine.connect() as connection:
        row = connection.execute(select(column, digest).where(MODELS.c.version == version)).first()
    if row is None:
        raise RegistryError(f"no model {version} in the registry")
    stored, expected = row
    if stored is None:  # registered before migration 0014, which could not convert it
        raise ArtifactRefusedError(
            f"model {version} has no scoring form: its artifact could not be converted when "
            "the registry was migrated (docs/models.md); train it again"
        )
    if checksum(stored) != expected:
        raise ArtifactRefusedError(
            f"model {version}: {what} does not match its registered sha256 checksum "
            "(changed or corrupted since registration); not loaded"
        )
    return bytes(stored)


def activate(
    engine: Engine,
    version: str,
    *,
    replacing: str | Anything | None = ANY,
    force: bool = False,
    wait_seconds: float = CHECK_WAIT_SECONDS,
) -> Scorer:
    """Load before activating, here and in the workers: a model no worker could load never
    becomes the active one.

    The model's scoring form, what workers load, must load and classify a text in this process
    (ArtifactRefusedError), and in a worker of every other environment workers run
    (`_loaded_by_workers`: asked, then waited for up to `wait_seconds`, or
    WorkersCannotLoadError). `force` skips the workers' part only. Its artifact, which
    training and comparing load, must still match its checksum (read, not rebuilt: this
    process need not import scikit-learn).

    `replacing`: activate only if that version (None: no model) is still the active one, as a
    compare-and-set, or raise ActivationConflictError; a gate that compared with one model must
    not replace another that was activated meanwhile.
    """
    _checked(engine, version, MODELS.c.artifact, MODELS.c.sha256, "artifact")
    scorer = load_scorer(engine, version)
    _usable_by_workers(engine, scorer, force=force, wait_seconds=wait_seconds)
    _activate(engine, version, replacing)
    return scorer


def _usable_by_workers(
    engine: Engine, model: Predictor, *, force: bool, wait_seconds: float
) -> None:
    try:
        environment.probe(model)
    except Exception as error:
        raise ArtifactRefusedError(
            f"model {model.version} loads but cannot classify: {error!r}"
        ) from error
    if force:
        logger.warning("activation forced: workers' check skipped", version=model.version)
        return
    _loaded_by_workers(
        engine, model.version, own=environment.fingerprint(), wait_seconds=wait_seconds
    )


def _loaded_by_workers(
    engine: Engine, version: str, *, own: str, wait_seconds: float, poll_seconds: float = 0.2
) -> None:
    """Return once a worker of every environment reported lately, `own` aside (the activating
    process's load proved it), has loaded `version`; raise WorkersCannotLoadError with the error
    one recorded, or once `wait_seconds` passed without an answer from some of them."""
    deadline = time.monotonic() + wait_seconds
    while True:
        others = [running for running in environment.live_environments(engine) if running != own]
        if not others:
            return
        answers = environment.answers(engine, version, others)
        for running, (loaded, error) in answers.items():
            if loaded is False:
                raise WorkersCannotLoadError(
                    f"model {version} not activated: workers running {running} cannot load "
                    f"it: {error}"
                )
        waiting = [running for running in others if answers[running][0] is None]
        if not waiting:
            return
        if time.monotonic() >= deadline:
            raise WorkersCannotLoadError(
                f"model {version} not activated: not yet checked by workers running "
                f"{'; '.join(waiting)} (waited {wait_seconds:g} s, MODEL_CHECK_WAIT_SECONDS); "
                "they check it every MODEL_REFRESH_SECONDS: try again"
            )
        time.sleep(poll_seconds)


Loader = Callable[[Engine, str], "Predictor"]


def check_requested(
    engine: Engine, running: str, *, loader: Loader = load_scorer
) -> dict[str, str | None]:
    """In a worker process running the environment `running`: load each model's scoring form an
    activation asked such workers to check, classify a text with it, record the outcome (the worker
    middleware, every MODEL_REFRESH_SECONDS). Returns {version: error, None if it loaded}.

    A database error is not the model's: raised, the request stays for the next round.
    """
    outcomes: dict[str, str | None] = {}
    for version in environment.requested(engine, running):
        outcomes[version] = error = _tried(engine, version, loader)
        environment.record(engine, running, version, error)
        if error is None:
            logger.info("model checked: it loads here", model_version=version)
        else:
            logger.error("model checked: it does not load here", model_version=version, error=error)
    return outcomes


def _tried(engine: Engine, version: str, loader: Loader) -> str | None:
    """None if `version` loads and classifies here, else why not."""
    try:
        model = loader(engine, version)
    except (SQLAlchemyError, MemoryError):
        raise
    except RegistryError as error:  # checksum, the form's layout, read by this numpy
        return str(error)
    except Exception as error:
        return f"model {version} could not be loaded: {error!r}"
    try:
        environment.probe(model)
    except MemoryError:
        raise
    except Exception as error:
        return f"model {version} loads but cannot classify: {error!r}"
    return None


def _activate(engine: Engine, version: str, replacing: str | Anything | None) -> None:
    """One UPDATE numbers the activation above every other, under the condition. Two at once
    compute the same number: the unique index refuses the second, which tries again."""
    latest = select(func.coalesce(func.max(MODELS.c.activation), 0) + 1).scalar_subquery()
    statement = (
        update(MODELS)
        .where(MODELS.c.version == version)
        .values(activation=latest, activated_at=utcnow())
    )
    if not isinstance(replacing, Anything):
        statement = statement.where(
            _ACTIVE.scalar_subquery().is_(None)
            if replacing is None
            else _ACTIVE.scalar_subquery() == replacing
        )
    for _ in range(10):
        try:
            with engine.begin() as connection:
                if connection.execute(statement).rowcount == 1:
                    return
                now = connection.execute(_ACTIVE).scalar()
        except IntegrityError:
            continue
        if now == version:
            return
        raise ActivationConflictError(
            f"model {now} was activated since {replacing or 'no model'} was compared with; "
            f"{version} is registered, not active"
        )
    raise RegistryError(f"model {version}: activation kept colliding with others; try again")


def ensure_active(engine: Engine, seed: Path) -> str:
    """The active version; an empty registry starts with the model file at `seed` (MODEL_PATH),
    trained on the built-in corpus first if there is none. Concurrent callers agree."""
    version = active_version(engine)
    if version is not None:
        return version
    if not seed.is_file():
        from docingest.model.datasets import load_dataset
        from docingest.model.training import save_model, train

        logger.info("no model: training the built-in BBC News model", path=str(seed))
        bbc = load_dataset("bbc")
        save_model(train(bbc.texts, bbc.labels), seed)
    seeded = add(engine, seed.read_bytes(), activate=False, source=str(seed))
    with contextlib.suppress(ActivationConflictError):  # another process seeded it first
        _activate(engine, seeded.version, None)
    version = active_version(engine)
    assert version is not None
    return version


# A version a worker refused (checksum, no scoring form, one another docingest wrote) stays
# refused until its bytes or the worker's environment change: tried again this often, not at
# every refresh.
REFUSED_RETRY_SECONDS = 300.0


class ModelCache:
    """A worker process's view of the registry: the active model's scorer (its scoring form:
    no scikit-learn), rechecked every few seconds.

    A batch takes the scorer once and keeps it, so a switch never splits a batch between
    models. A model this process cannot load never stops ingestion: it keeps serving the last
    model it loaded or, fresh, the newest previously active model it can load, counts the
    refusal (`on_refused`: the workers' metrics, `/ready`, the `ModelRefused` alert) and tries
    the refused version again only every REFUSED_RETRY_SECONDS.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        seed: Path,
        refresh_seconds: float,
        size: int = 3,
        on_refused: Callable[[str], None] = lambda version: None,
    ):
        self._engine = engine
        self._seed = seed
        self._refresh_seconds = refresh_seconds
        self._size = size
        self._on_refused = on_refused
        self._loaded: OrderedDict[str, Scorer] = OrderedDict()
        self._refused: dict[str, float] = {}
        self._active: Scorer | None = None
        self._checked_at = -float("inf")
        self._lock = threading.Lock()

    def active(self) -> Scorer:
        with self._lock:
            now = time.monotonic()
            if self._active is None or now - self._checked_at >= self._refresh_seconds:
                self._refresh()
                self._checked_at = now
            assert self._active is not None
            return self._active

    def get(self, version: str) -> Scorer:
        """A given version (reclassifying with a model that need not be active)."""
        with self._lock:
            return self._get(version)

    def _refresh(self) -> None:
        version = ensure_active(self._engine, self._seed)
        if self._active is not None and self._active.version == version:
            return
        refused_at = self._refused.get(version)
        if refused_at is not None and time.monotonic() - refused_at < REFUSED_RETRY_SECONDS:
            if self._active is None:
                self._active = self._fallback(version)
            return
        try:
            self._active = self._get(version)
        except ArtifactRefusedError as error:
            self._refuse(version, error)
            if self._active is None:
                self._active = self._fallback(version)
            logger.error("active model refused: serving another", version=version,
                         serving=self._active.version, error=str(error))  # fmt: skip
            return
        except RegistryError:
            if self._active is None:
                raise
            serving = self._active.version
            logger.exception("model cannot be loaded", version=version, serving=serving)
            return
        self._refused.pop(version, None)
        logger.info("now classifying", model_version=version)

    def _refuse(self, version: str, error: Exception) -> None:
        self._refused[version] = time.monotonic()
        self._on_refused(version)

    def _fallback(self, refused: str) -> Scorer:
        """A fresh process: the newest previously active model this process can load."""
        for version in activated_before(self._engine, refused):
            try:
                return self._get(version)
            except ArtifactRefusedError as error:
                self._refuse(version, error)
        raise ArtifactRefusedError(f"model {refused} refused and no earlier model loads")

    def _get(self, version: str) -> Scorer:
        if version not in self._loaded:
            self._loaded[version] = load_scorer(self._engine, version)
            while len(self._loaded) > self._size:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(version)
        return self._loaded[version]


def activated_before(engine: Engine, version: str) -> list[str]:
    """The models activated before `version` was last, newest first."""
    own = select(MODELS.c.activation).where(MODELS.c.version == version).scalar_subquery()
    statement = (
        select(MODELS.c.version)
        .where(MODELS.c.activation < own)
        .order_by(MODELS.c.activation.desc())
    )
    with engine.connect() as connection:
        return list(connection.execute(statement).scalars())
