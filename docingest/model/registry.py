"""The model registry: every trained model's artifact and card, and which one is active.

Artifacts live in the database, beside the documents they classify, so that a worker on any
machine loads the same bytes with nothing else to share or mount. Each is checksummed when
registered and checked before it is loaded: a changed or corrupted artifact is refused.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from docingest.schemas import utcnow
from docingest.tables import RegisteredModel

# The web process reads cards and activates models without loading scikit-learn at import.
if TYPE_CHECKING:
    from docingest.model.classifier import Classifier
    from docingest.model.training import TrainedModel

logger = structlog.get_logger(__name__)


class RegistryError(Exception):
    """The registry cannot do what was asked; the message says why."""


class ArtifactRefusedError(RegistryError):
    """A model's artifact fails its checks (checksum, trusted types, shape): never loaded."""


def _rebuild(artifact: bytes, source: str) -> Classifier:
    from docingest.model.classifier import Classifier, ModelLoadError

    try:
        return Classifier.from_bytes(artifact, source=source)
    except ModelLoadError as error:
        raise ArtifactRefusedError(str(error)) from error


def checksum(artifact: bytes) -> str:
    return hashlib.sha256(artifact).hexdigest()


def register(engine: Engine, model: TrainedModel, *, activate: bool) -> RegisteredModel:
    from docingest.model.training import model_bytes

    return add(engine, model_bytes(model), activate=activate)


def add(
    engine: Engine, artifact: bytes, *, activate: bool, source: str = "artifact"
) -> RegisteredModel:
    """Register an artifact (loaded first, so a bad one never enters); idempotent per version.

    The same version with other bytes is refused: a version names one model, forever.
    """
    classifier = _rebuild(artifact, source)
    digest = checksum(artifact)
    with Session(engine, expire_on_commit=False) as session:
        record = session.get(RegisteredModel, classifier.version)
        if record is None:
            record = RegisteredModel(
                version=classifier.version,
                sha256=digest,
                artifact=artifact,
                card=classifier.metadata,
                created_at=utcnow(),
            )
            session.add(record)
        elif record.sha256 != digest:
            raise RegistryError(
                f"model {classifier.version} is already registered with other content"
            )
        if activate:
            record.activated_at = utcnow()
        try:
            session.commit()
        except IntegrityError:  # another process registered it first: the same bytes, or refused
            session.rollback()
            return add(engine, artifact, activate=activate, source=source)
        return record


def list_models(engine: Engine) -> Sequence[RegisteredModel]:
    """Newest first, without their artifacts (megabytes each)."""
    with Session(engine) as session:
        statement = (
            select(RegisteredModel)
            .options(defer(RegisteredModel.artifact))  # type: ignore[arg-type]
            .order_by(col(RegisteredModel.created_at).desc())
        )
        return session.exec(statement).all()


def active_version(engine: Engine) -> str | None:
    """The model activated last; one indexed read, cheap enough to poll every few seconds."""
    with Session(engine) as session:
        statement = (
            select(RegisteredModel.version)
            .where(col(RegisteredModel.activated_at).is_not(None))
            .order_by(col(RegisteredModel.activated_at).desc())
            .limit(1)
        )
        return session.exec(statement).first()


def card(engine: Engine, version: str | None = None) -> dict[str, Any]:
    """The card of `version`, or of the active model."""
    version = version or active_version(engine)
    if version is None:
        raise RegistryError("no model is active yet")
    with Session(engine) as session:
        found = session.exec(
            select(RegisteredModel.card).where(col(RegisteredModel.version) == version)
        ).first()
    if found is None:
        raise RegistryError(f"no model {version} in the registry")
    return dict(found)


def load(engine: Engine, version: str) -> Classifier:
    """Rebuild a registered model after checking its bytes are the ones registered."""
    with Session(engine) as session:
        row = session.exec(
            select(RegisteredModel.artifact, RegisteredModel.sha256).where(
                col(RegisteredModel.version) == version
            )
        ).first()
    if row is None:
        raise RegistryError(f"no model {version} in the registry")
    artifact, expected = row
    if checksum(artifact) != expected:
        raise ArtifactRefusedError(
            f"model {version}: artifact does not match its registered sha256 checksum "
            "(changed or corrupted since registration); not loaded"
        )
    return _rebuild(artifact, f"model {version}")


def activate(engine: Engine, version: str) -> Classifier:
    """Load before activating: a model no worker could load never becomes the active one."""
    classifier = load(engine, version)
    with Session(engine) as session:
        record = session.get(RegisteredModel, version)
        assert record is not None  # load() found it
        record.activated_at = utcnow()
        session.commit()
    return classifier


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
    add(engine, seed.read_bytes(), activate=active_version(engine) is None, source=str(seed))
    version = active_version(engine)
    assert version is not None
    return version


class ModelCache:
    """A process's view of the registry: the active classifier, rechecked every few seconds.

    A batch takes the classifier once and keeps it, so a switch never splits a batch between
    models. A model that fails to load is logged and the previous one kept serving.
    """

    def __init__(self, engine: Engine, *, seed: Path, refresh_seconds: float, size: int = 3):
        self._engine = engine
        self._seed = seed
        self._refresh_seconds = refresh_seconds
        self._size = size
        self._loaded: OrderedDict[str, Classifier] = OrderedDict()
        self._active: Classifier | None = None
        self._checked_at = -float("inf")
        self._lock = threading.Lock()

    def active(self) -> Classifier:
        with self._lock:
            now = time.monotonic()
            if self._active is None or now - self._checked_at >= self._refresh_seconds:
                self._refresh()
                self._checked_at = now
            assert self._active is not None
            return self._active

    def get(self, version: str) -> Classifier:
        """A given version (reclassifying with a model that need not be active)."""
        with self._lock:
            return self._get(version)

    def _refresh(self) -> None:
        version = ensure_active(self._engine, self._seed)
        if self._active is not None and self._active.version == version:
            return
        try:
            self._active = self._get(version)
        except RegistryError:
            if self._active is None:
                raise
            serving = self._active.version
            logger.exception("model cannot be loaded", version=version, serving=serving)
            return
        logger.info("now classifying", model_version=version)

    def _get(self, version: str) -> Classifier:
        if version not in self._loaded:
            self._loaded[version] = load(self._engine, version)
            while len(self._loaded) > self._size:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(version)
        return self._loaded[version]
