"""Where a document flows out: `GET /changes`, the change feed, and `GET /changes/head`.

A page, a long poll (`wait`), or server-sent events (`Accept: text/event-stream`, resumed from
`Last-Event-ID`); positions are opaque strings. The feed's order and exactness are the relay's
(`changes/relay.py`, docs/changes.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final
from weakref import WeakKeyDictionary

from anyio import to_thread
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine

from docingest.api.auth import Scope, require_scope
from docingest.api.deps import EngineDep
from docingest.api.openapi import error_response
from docingest.changes.feed import ChangePage, ChangesGoneError, dump, head, read_changes
from docingest.changes.relay import relay
from docingest.schemas import (
    POSITION_PATTERN,
    ChangeKind,
    ChangesHead,
    ChangesPage,
)

router = APIRouter(prefix="/changes", tags=["changes"])

EVENT_STREAM: Final = "text/event-stream"
# How often a waiting request reads the feed again, and runs a relay pass (so that the feed
# moves even when no worker process runs one).
POLL_SECONDS: Final = 0.1
RELAY_SECONDS: Final = 1.0
# When this process's last relay pass on each database started (the event loop's clock).
_last_relay: WeakKeyDictionary[Engine, float] = WeakKeyDictionary()
# An event stream without `wait` lasts this long; EventSource reconnects with Last-Event-ID.
STREAM_SECONDS: Final = 60.0
# A comment line this often keeps proxies from closing a quiet stream.
HEARTBEAT_SECONDS: Final = 15.0
MAX_WAIT: Final = 60.0

GONE_DETAIL: Final = (
    "Changes after this position were pruned (they are kept CHANGES_RETENTION), or it is no "
    "position this service handed out (newer than its head). To catch up: "
    "take GET /changes/head, read the documents again with GET /documents, then follow the "
    "feed from that head; changes made during the re-read come again, which their versions "
    "make harmless."
)
_GONE = error_response(
    "The position is older than the oldest change kept, or newer than the head: " + GONE_DETAIL
)
_EVENTS = {
    "schema": {"type": "string"},
    "description": "One event a change: `id:` its position, `data:` the change as in `items`",
}

_NEXT_LINK = {
    "schema": {"type": "string"},
    "description": 'The next page (RFC 8288): `</changes?after=<next>&…>; rel="next"`, this '
    "request's query with `after` set to `next`; a page's JSON only",
}

Position = Annotated[
    str | None,
    Query(
        pattern=POSITION_PATTERN,
        description="An opaque position: a `next`, an item's `position`, or the head. Without "
        "it, from the oldest change kept",
    ),
]


@router.get(
    "",
    dependencies=[require_scope(Scope.READ)],
    response_model=ChangesPage,
    responses={
        200: {
            "description": "Changes after `after`, oldest first; with `Accept: "
            "text/event-stream`, a stream of them",
            "content": {EVENT_STREAM: _EVENTS},
            "headers": {"Link": _NEXT_LINK},
        },
        410: _GONE,
    },
)
async def read_changes_page(
    request: Request,
    engine: EngineDep,
    after: Position = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            le=MAX_WAIT,
            description="Seconds to hold the request until a change arrives (a long poll); "
            f"an event stream lasts this long (default {STREAM_SECONDS:g})",
        ),
    ] = None,
    kind: Annotated[list[ChangeKind] | None, Query(description="Only these kinds")] = None,
    category: Annotated[
        list[str] | None, Query(max_length=200, description="Only these categories")
    ] = None,
    last_event_id: Annotated[
        str,
        Header(
            pattern=r"^[0-9]{0,19}$",
            description="An event stream resumes after this position (empty: after `after`)",
        ),
    ] = "",
) -> Any:
    """The changes committed after `after`, oldest first, in one order that agrees with each
    document's versions; `next` is the position to pass next (the same as `after` when nothing
    came). Each change is seen once by a reader following `next`, whatever order the writers'
    transactions commit in. `kind` and `category` filter (repeatable); `next` still moves past
    the changes they leave out. `410` once `after` is older than the oldest change kept (or newer
    than the head: not a position this service handed out).
    """
    streaming = EVENT_STREAM in request.headers.get("accept", "")
    start = last_event_id if streaming and last_event_id else after
    query = _Query(engine, limit, kind or [], category or [])
    position = int(start) if start is not None else None
    if not streaming:
        page = await query.wait(position, wait or 0.0)
        # Serialised here, once: FastAPI would validate the page and encode it in Python (30 ms
        # of a full page's CPU, 1 here). `response_model` documents it.
        answer = dump({"items": page.items, "next": str(page.next)})
        return Response(
            answer, media_type="application/json", headers={"Link": _next_link(request, page)}
        )
    first = await query.read(position)  # a 410 is an answer, not an event
    seconds = STREAM_SECONDS if wait is None else wait
    return StreamingResponse(
        query.events(first, seconds),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _next_link(request: Request, page: ChangePage) -> str:
    """This request again after `next`: a consumer may follow the feed by its headers alone
    (forwarding pages as they are, or with any client that follows `rel="next"`)."""
    url = request.url.include_query_params(after=str(page.next))
    return f'<{url.path}?{url.query}>; rel="next"'


@router.get("/head", dependencies=[require_scope(Scope.READ)])
async def read_head(engine: EngineDep) -> ChangesHead:
    """The newest position ("0" before the first change): where a consumer that has just read
    every document starts following the feed."""
    return ChangesHead(position=str(await to_thread.run_sync(head, engine)))


class _Query:
    def __init__(
        self, engine: Engine, limit: int, kinds: list[ChangeKind], categories: list[str]
    ) -> None:
        self.engine = engine
        self.limit = limit
        self.kinds = kinds
        self.categories = categories

    async def read(self, after: int | None) -> ChangePage:
        def read() -> ChangePage:
            return read_changes(
                self.engine,
                after=after,
                limit=self.limit,
                kinds=self.kinds,
                categories=self.categories,
            )

        try:
            return await to_thread.run_sync(read)
        except ChangesGoneError:
            raise HTTPException(status.HTTP_410_GONE, detail=GONE_DETAIL) from None

    async def _relay(self) -> None:
        """A relay pass on this database at most every RELAY_SECONDS in this process, however
        many requests wait (none when another process holds the lock: a worker's relay is at
        work), so that the feed moves without workers too. Once a request, it was a pass each
        time a consumer caught up: a fifth of the API's CPU for a consumer following."""
        now = asyncio.get_running_loop().time()
        if now - _last_relay.get(self.engine, -RELAY_SECONDS) >= RELAY_SECONDS:
            _last_relay[self.engine] = now
            await to_thread.run_sync(lambda: relay(self.engine))

    async def wait(self, after: int | None, seconds: float) -> ChangePage:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        page = await self.read(after)
        while not page.items and loop.time() < deadline:
            await self._relay()
            await asyncio.sleep(min(POLL_SECONDS, max(deadline - loop.time(), 0)))
            # A page is one statement, so an empty one costs what reading the head would.
            page = await self.read(page.next)
        return page

    async def events(self, page: ChangePage, seconds: float) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        beat = loop.time()
        yield "retry: 1000\n\n"
        while True:
            for change in page.items:
                yield f"id: {change['position']}\ndata: {dump(change).decode()}\n\n"
            if not page.items:
                now = loop.time()
                if now >= deadline:
                    return
                if now - beat >= HEARTBEAT_SECONDS:
                    beat = now
                    yield ": waiting\n\n"
                await self._relay()
                await asyncio.sleep(POLL_SECONDS)
            try:
                page = await self.read(page.next)
            except HTTPException:
                return  # pruned under a slow stream: reconnecting answers the 410
