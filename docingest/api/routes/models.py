"""The model registry over HTTP: the active model's card, every version, activation."""

from __future__ import annotations

import functools
import threading
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import Engine

from docingest.api.auth import Scope, require_scope
from docingest.api.deps import EngineDep, SettingsDep
from docingest.api.openapi import ERROR_RESPONSES, error_response
from docingest.model import registry
from docingest.schemas import Activated, ModelCard, ModelSummary

router = APIRouter(tags=["models"])
READ = [require_scope(Scope.READ)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: ERROR_RESPONSES[404]}


def _card(engine: Engine, version: str | None) -> dict[str, Any]:
    try:
        return registry.card(engine, version)
    except registry.RegistryError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error


@router.get("/model", dependencies=READ, responses=NOT_FOUND, summary="The active model's card")
def active_model(engine: EngineDep) -> ModelCard:
    return ModelCard.model_validate(_card(engine, None))


@router.get("/models", dependencies=READ, summary="Every registered model, newest first")
def list_models(engine: EngineDep) -> list[ModelSummary]:
    active = registry.active_version(engine)
    return [
        _summary(model.card, model.created_at, model.activated_at, active)
        for model in registry.list_models(engine)
    ]


def _summary(
    card: dict[str, Any], created_at: datetime, activated_at: datetime | None, active: str | None
) -> ModelSummary:
    metrics = card.get("metrics", {})
    return ModelSummary(
        version=card["version"],
        active=card["version"] == active,
        estimator=card.get("estimator"),
        source=card.get("source"),
        accuracy=metrics.get("accuracy"),
        macro_f1=metrics.get("macro_f1"),
        created_at=created_at,
        activated_at=activated_at,
    )


@router.get("/models/{version}", dependencies=READ, responses=NOT_FOUND, summary="A model's card")
def model_card(engine: EngineDep, version: str) -> ModelCard:
    return ModelCard.model_validate(_card(engine, version))


@router.get(
    "/models/{version}/confusion-matrix.png",
    dependencies=READ,
    summary="A model's held-out confusion matrix",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **NOT_FOUND},
)
def confusion_matrix(engine: EngineDep, version: str) -> Response:
    """Drawn once per version and process (a version names one model forever), one drawing at
    a time: parallel requests wait for it rather than each drawing their own."""
    card = _card(engine, version)
    with _drawing:
        png = _drawn(card["version"], orjson.dumps(card))
    return Response(png, media_type="image/png")


_drawing = threading.Lock()


@functools.lru_cache(maxsize=8)
def _drawn(version: str, card: bytes) -> bytes:
    from docingest.model.card import confusion_matrix_png

    return confusion_matrix_png(orjson.loads(card))


ACTIVATE_ANSWERS: dict[int | str, dict[str, Any]] = {
    404: ERROR_RESPONSES[404],
    409: error_response(
        "Not activated: the artifact fails its checks here (checksum, trusted types, a text "
        "classified), or workers of another environment cannot load it or did not say so within "
        "MODEL_CHECK_WAIT_SECONDS; `detail` says which and why"
    ),
}


@router.post(
    "/models/{version}/activate",
    dependencies=[require_scope(Scope.ADMIN)],
    responses=ACTIVATE_ANSWERS,
    summary="Make a model the active one; workers switch within MODEL_REFRESH_SECONDS",
)
def activate(
    engine: EngineDep,
    settings: SettingsDep,
    version: str,
    force: Annotated[
        bool,
        Query(
            description="Activate without the workers' proof that they can load it (a worker "
            "that cannot keeps serving the model it has)"
        ),
    ] = False,
) -> Activated:
    """The model's scoring form is loaded and tried here, then by a worker of every other
    environment workers run (Python, numpy, docingest versions), waiting up to
    MODEL_CHECK_WAIT_SECONDS for them; refused (`409`) if one cannot load it."""
    try:
        registry.activate(
            engine, version, force=force, wait_seconds=settings.model_check_wait_seconds
        )
    except (registry.ArtifactRefusedError, registry.WorkersCannotLoadError) as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error
    except registry.RegistryError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
    return Activated(version=version, refresh_seconds=settings.model_refresh_seconds)
