"""`GET /stats`: counts per category and status, queue depths, throughput and lag, as JSON."""

from __future__ import annotations

from fastapi import APIRouter

from docingest.api.auth import Scope, require_scope
from docingest.api.deps import ConnectionsDep
from docingest.observe.stats import collect_stats
from docingest.schemas import Stats

router = APIRouter(tags=["operations"])


@router.get("/stats", dependencies=[require_scope(Scope.READ)])
def stats(connections: ConnectionsDep) -> Stats:
    """What is stored (per category), waiting, failed; queues; documents stored per minute over
    the last 15 minutes; end-to-end lag (cumulative: poll twice for the mean in between)."""
    return collect_stats(connections)
