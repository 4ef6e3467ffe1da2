"""Bring stored documents up to date with a model, through the queue, behind new documents.

The selection is "matching documents not yet classified by the target model", so a run is
resumable by construction: run it again and it picks up what is left. Messages already queued by
an interrupted run are still worked off; doing a document twice is harmless.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from docingest.ledger import Ledger
from docingest.model.selection import Selection, count_selected, selected_ids
from docingest.queue import MessageQueue
from docingest.queue.messages import reclassify_message
from docingest.queue.names import RECLASSIFY_QUEUE


@dataclass(frozen=True, slots=True)
class Pacing:
    """How politely a run queues work.

    At most `in_flight` reclassify messages wait in the queue at a time, and none are added while
    more than `live_backlog` new documents wait: a run then only uses capacity new documents
    leave free. A run gives up when nothing changed for `stall_seconds` after the last message.
    """

    batch_size: int = 500
    in_flight: int = 4
    live_backlog: int = 1_000
    poll_seconds: float = 0.5
    stall_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Outcome:
    total: int
    remaining: int


def run(
    engine: Engine,
    queue: MessageQueue,
    ledger: Ledger,
    selection: Selection,
    *,
    pacing: Pacing = Pacing(),
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> Outcome:
    """Queue the selection in batches as room allows; return once none is left or it stalls."""
    total = count_selected(engine, selection)
    cursor: uuid.UUID | None = None
    exhausted = False
    left, last_change = total, time.monotonic()
    while left:
        on_progress(total - left, total)
        has_room = (
            queue.depths()[RECLASSIFY_QUEUE] < pacing.in_flight
            and ledger.pending_count() <= pacing.live_backlog
        )
        if not exhausted and has_room:
            ids = selected_ids(engine, selection, cursor, pacing.batch_size)
            if ids:
                queue.publish([reclassify_message(ids, selection.model_version)])
                cursor = ids[-1]
            exhausted = not ids
            continue
        time.sleep(pacing.poll_seconds)
        now_left = count_selected(engine, selection)
        if now_left != left:
            left, last_change = now_left, time.monotonic()
            total = max(total, left)  # documents arriving classified by another model
        elif exhausted and time.monotonic() - last_change > pacing.stall_seconds:
            break
    on_progress(total - left, total)
    return Outcome(total=total, remaining=left)
