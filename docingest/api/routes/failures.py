"""Failed documents: list them, and replay them once the cause is fixed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from docingest.api.auth import Scope, require_scope
from docingest.api.deps import ConnectionsDep, EngineDep, EnqueuerDep, SettingsDep
from docingest.failures.replay import Replayed, replay
from docingest.failures.repository import list_failures
from docingest.schemas import DeadLetterOut, FailureOut

router = APIRouter(prefix="/failures", tags=["failures"])


@router.get("", dependencies=[require_scope(Scope.READ)])
def read_failures(
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> list[FailureOut]:
    """Failed documents not superseded by a newer stored version, oldest first."""
    return [FailureOut.model_validate(f) for f in list_failures(engine, limit=limit, offset=offset)]


@router.get("/dead-letters", dependencies=[require_scope(Scope.READ)])
def read_dead_letters(
    connections: ConnectionsDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterOut]:
    """Messages of every queue that Dramatiq gave up on after their retries, oldest first.

    `limit` of them at most, fewer once their messages hold about MAX_ANSWER_BYTES (at least
    one): each is decoded to count its documents, and a message may hold megabytes.
    """
    letters = connections.queue.dead_letters(limit, max_bytes=settings.max_answer_bytes)
    return [DeadLetterOut.model_validate(letter, from_attributes=True) for letter in letters]


@router.post("/replay", dependencies=[require_scope(Scope.ADMIN)])
def replay_failures(engine: EngineDep, enqueuer: EnqueuerDep) -> Replayed:
    """Queue every failed document again (and every dead-lettered message), versions kept."""
    return replay(engine, enqueuer)
