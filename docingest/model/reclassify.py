"""Bring stored documents up to date with a model, through the queue, behind new documents.

The selection is "matching documents classified by a model older than the target", so a run is
resumable by construction: run it again and it picks up what is left. Messages already queued by
an interrupted run are still worked off; doing a document twice is harmless.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from sqlalchemy import Engine

from docingest.ledger import Ledger
from docingest.model.registry import active_version
from docingest.model.selection import Selection, count_selected, selected_ids
from docingest.queue import MessageQueue
from docingest.queue.messages import reclassify_message
from docingest.queue.names import RECLASSIFY_QUEUE
from docingest.schemas import utcnow


@dataclass(frozen=True, slots=True)
class Pacing:
    """How politely a run queues work.

    At most `in_flight` reclassify messages wait in the queue at a time, and none are added while
    more than `live_backlog` new documents wait: a run then only uses capacity new documents
    leave free. Once a pass has queued all it selected and the queue is empty, the count must
    hold still for `settle_seconds` (a worker may still hold the last message) before the run
    decides: done, another pass for documents that entered the selection behind its cursor, or,
    when a pass changed nothing, give up on what is left (the model raises on those documents).
    """

    batch_size: int = 500
    in_flight: int = 4
    live_backlog: int = 1_000
    poll_seconds: float = 0.5
    settle_seconds: float = 3.0


@dataclass(frozen=True, slots=True)
class Outcome:
    total: int
    remaining: int
    superseded_by: str | None = None  # the model activated meanwhile, which stopped the run


def run(
    engine: Engine,
    queue: MessageQueue,
    ledger: Ledger,
    selection: Selection,
    *,
    pacing: Pacing = Pacing(),
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> Outcome:
    """Queue the selection in passes as room allows; return once none is left, a pass changed
    nothing, or the target stopped being the active model (if it was when the run started).

    Documents arriving meanwhile are classified by the active model on their way in, so they do
    not enter the selection when the target is that model; those that do (a worker that had not
    switched yet) are caught by the next pass. For a target that is not active, the selection
    ends at the documents classified before the run started. A run therefore ends under steady
    ingestion.
    """
    was_active = active_version(engine) == selection.model_version
    if not was_active:  # arrivals are classified by another model: only what is stored now
        started = utcnow()
        before = selection.classified_before
        selection = replace(selection, classified_before=min(before or started, started))
    total = left = count_selected(engine, selection)
    before_pass = None
    while left:
        superseding = _superseding(engine, selection, was_active)
        if superseding is not None:
            return Outcome(total, left, superseding)
        if left == before_pass:
            break  # a whole pass changed nothing: those documents cannot be done
        before_pass = left
        on_progress(total - left, total)
        report = partial(_report, engine, selection, total, on_progress)
        _queue_pass(engine, queue, ledger, selection, pacing, was_active, report)
        left = _settled_count(queue, pacing, report)
        total = max(total, left)
    on_progress(total - left, total)
    return Outcome(total, left, _superseding(engine, selection, was_active))


def _superseding(engine: Engine, selection: Selection, was_active: bool) -> str | None:
    if not was_active:
        return None
    now = active_version(engine)
    return now if now != selection.model_version else None


def _queue_pass(
    engine: Engine,
    queue: MessageQueue,
    ledger: Ledger,
    selection: Selection,
    pacing: Pacing,
    was_active: bool,
    report: Callable[[], int],
) -> None:
    """Every selected id once, by id order, in messages of `batch_size`, as room allows; it
    stops early once another model is active (the caller then says so)."""
    cursor: uuid.UUID | None = None
    while _superseding(engine, selection, was_active) is None:
        has_room = (
            queue.depths()[RECLASSIFY_QUEUE] < pacing.in_flight
            and ledger.pending_count() <= pacing.live_backlog
        )
        if not has_room:
            time.sleep(pacing.poll_seconds)
            report()
            continue
        ids = selected_ids(engine, selection, cursor, pacing.batch_size)
        if not ids:
            return
        queue.publish([reclassify_message(ids, selection.model_version)])
        cursor = ids[-1]


def _settled_count(queue: MessageQueue, pacing: Pacing, report: Callable[[], int]) -> int:
    """The selection's count once the queue is empty and the count has held still."""
    last, still_since = -1, time.monotonic()
    while True:
        time.sleep(pacing.poll_seconds)
        left = report()
        if left != last or queue.depths()[RECLASSIFY_QUEUE] > 0:
            last, still_since = left, time.monotonic()
        elif left == 0 or time.monotonic() - still_since >= pacing.settle_seconds:
            return left


def _report(
    engine: Engine, selection: Selection, total: int, on_progress: Callable[[int, int], None]
) -> int:
    """Count what is left, tell `on_progress`, return the count."""
    left = count_selected(engine, selection)
    on_progress(max(total, left) - left, max(total, left))
    return left
