"""The Python client of the docingest API: `Client` (blocking) and `AsyncClient` (asyncio).

Both are thin over httpx and answer with the API's own pydantic schemas
(`docingest_client.schemas`, the very classes the service validates and answers with). This
distribution needs httpx and pydantic only: a notebook or a pipeline loads neither the service
(SQLAlchemy, Dramatiq, scikit-learn) nor its embedded servers.

Safe to retry, always. Every document is given its id here, before its first try, so a request
retried after a lost answer updates the same documents instead of adding copies. Answers that
mean "later" (429 backpressure, 503 broker away, 502/504 from a proxy) are retried after their
`Retry-After`, for at most `max_wait` seconds a request; a request that got no answer at all is
retried a few times with backoff.

Each operation is written once, as a generator that yields the HTTP requests and the sleeps it
needs (the "sans-I/O" style of httpx's own `Auth.auth_flow`); `Client` and `AsyncClient` only
run those steps, blocking or awaiting.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import httpx
from pydantic import BaseModel, TypeAdapter

from docingest_client.schemas import (
    BulkAccepted,
    BulkItemResult,
    Change,
    ChangesPage,
    DocumentAccepted,
    DocumentIn,
    DocumentOut,
    DocumentPage,
    DocumentQuery,
    DocumentStatus,
    LabelHistory,
    ModelCard,
    ModelSummary,
    Stats,
    WebhookCreated,
    WebhookOut,
)

__all__ = [
    "API_KEY_VARIABLE",
    "CONNECTION_ATTEMPTS",
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "FINAL",
    "RETRIED",
    "URL_VARIABLE",
    "ApiError",
    "AsyncClient",
    "Client",
    "DocingestError",
    "DocumentLike",
    "IdLike",
    "NotFoundError",
    "UnavailableError",
    "batches",
    "retry_after",
]

DEFAULT_URL = "http://127.0.0.1:8000"
URL_VARIABLE = "DOCINGEST_URL"
API_KEY_VARIABLE = "DOCINGEST_API_KEY"
# Answers that mean "later": backpressure, broker down, and a proxy whose upstream is away.
RETRIED = frozenset({429, 502, 503, 504})
# Tries of a request that gets no answer at all (connection refused, reset, timed out).
CONNECTION_ATTEMPTS = 4
# A document is final once stored, failed or deleted: `wait` stops waiting for it.
FINAL = frozenset({"stored", "failed", "deleted"})
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's own

T = TypeVar("T")
Model = TypeVar("Model", bound=BaseModel)
DocumentLike = str | Mapping[str, Any] | DocumentIn
IdLike = uuid.UUID | str | DocumentAccepted | BulkItemResult | DocumentStatus

_MODELS = TypeAdapter(list[ModelSummary])
_WEBHOOKS = TypeAdapter(list[WebhookOut])
_ANY: TypeAdapter[Any] = TypeAdapter(Any)


class DocingestError(Exception):
    """Anything the client raises about the service (pydantic's ValidationError aside)."""


class ApiError(DocingestError):
    """The API refused the request: retrying it as it is cannot help."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status = response.status_code
        self.detail = _detail(response)
        super().__init__(f"HTTP {self.status}: {self.detail}")


class NotFoundError(ApiError):
    """404: no such document, model or version."""


class UnavailableError(DocingestError):
    """No answer after a few tries, or still "later" after `max_wait` seconds."""


# --- the steps an operation yields ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    params: dict[str, Any] | None = None
    body: bytes | None = None
    headers: Mapping[str, str] | None = None
    # Seconds to wait for the answer, when longer than the client's (a long poll).
    read_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(slots=True)
class _Feed:
    """Where a `changes()` iteration stands: its cursor, what it asked for, whether it ended."""

    after: str | None
    kinds: Sequence[str]
    categories: Sequence[str]
    wait: float
    follow: bool
    done: bool = False


_Steps = Generator[_Request | _Sleep, httpx.Response | None, T]
_JSON = {"Content-Type": "application/json"}


class _Operations:
    """Every operation of the API, as steps; what both clients share (settings, retry count)."""

    def __init__(self, url: str | None, api_key: str | None, max_wait: float) -> None:
        self.url = (url or os.environ.get(URL_VARIABLE) or DEFAULT_URL).rstrip("/")
        self.max_wait = max_wait
        self.retries = 0  # requests sent again after a "later" or no answer, since created
        self._timeout = DEFAULT_TIMEOUT
        key = api_key if api_key is not None else os.environ.get(API_KEY_VARIABLE)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    def _call(self, request: _Request, *, accept: Iterable[int] = ()) -> _Steps[httpx.Response]:
        """Send until answered with something other than "later": a 2xx (or `accept`ed) status
        is returned, any other raises ApiError."""
        deadline = time.monotonic() + self.max_wait
        failures = 0
        while True:
            try:
                response = cast(httpx.Response, (yield request))
            except httpx.TransportError as error:
                failures += 1
                wait = 0.5 * 2 ** (failures - 1)
                reason = f"cannot reach {self.url}: {error!r}"
                if failures >= CONNECTION_ATTEMPTS:
                    raise UnavailableError(reason) from None
            else:
                if response.is_success or response.status_code in accept:
                    return response
                if response.status_code not in RETRIED:
                    raise (NotFoundError if response.status_code == 404 else ApiError)(response)
                wait = retry_after(response)
                reason = (
                    f"still refused (HTTP {response.status_code}) after waiting "
                    f"{self.max_wait:.0f} s (max_wait): the service is overloaded or down"
                )
            if time.monotonic() + wait > deadline:
                raise UnavailableError(reason)
            self.retries += 1
            yield _Sleep(wait)

    def _get(self, path: str, model: type[Model], **params: Any) -> _Steps[Model]:
        response = yield from self._call(_Request("GET", path, params or None))
        return model.model_validate_json(response.content)

    def _add(self, content: str, id: uuid.UUID | str | None) -> _Steps[DocumentAccepted]:
        body = _json({"id": str(id or uuid.uuid4()), "content": content})
        response = yield from self._call(_Request("POST", "/documents", body=body))
        return DocumentAccepted.model_validate_json(response.content)

    def _add_batch(self, documents: Sequence[DocumentLike]) -> _Steps[BulkAccepted]:
        body = _json([_with_id(document) for document in documents])
        response = yield from self._call(_Request("POST", "/documents/bulk", body=body))
        return BulkAccepted.model_validate_json(response.content)

    def _add_many(
        self, documents: Iterable[DocumentLike], batch_size: int
    ) -> _Steps[list[BulkItemResult]]:
        results: list[BulkItemResult] = []
        for batch in batches(documents, batch_size):
            answer = yield from self._add_batch(batch)
            offset = len(results)
            results += [
                item.model_copy(update={"index": offset + item.index}) for item in answer.items
            ]
        return results

    def _status(self, id: IdLike) -> _Steps[DocumentStatus]:
        return (yield from self._get(f"/documents/{_id(id)}/status", DocumentStatus))

    def _wait(
        self, ids: Iterable[IdLike], timeout: float, poll: float
    ) -> _Steps[dict[uuid.UUID, DocumentStatus]]:
        """One id at a time, each polled until final: documents are stored roughly in the
        order they were accepted, so once the first is final most of the others are too."""
        deadline = time.monotonic() + timeout
        pending = [_id(id) for id in ids if not isinstance(id, BulkItemResult) or id.id]
        done: dict[uuid.UUID, DocumentStatus] = {}
        for document_id in pending:
            while (status := (yield from self._status(document_id))).status not in FINAL:
                if time.monotonic() + poll > deadline:
                    left = len(pending) - len(done)
                    message = f"{left} of {len(pending)} documents not final after {timeout} s"
                    raise TimeoutError(message)
                yield _Sleep(poll)
            done[document_id] = status
        return done

    def _page(self, query: DocumentQuery) -> _Steps[DocumentPage]:
        params = query.model_dump(mode="json", exclude_none=True)
        return (yield from self._get("/documents", DocumentPage, **params))

    def _delete(self, id: IdLike) -> _Steps[None]:
        """Idempotent: a 404 for a document that is deleted (say, by this very call, whose first
        answer was lost) is a success."""
        path = f"/documents/{_id(id)}"
        response = yield from self._call(_Request("DELETE", path), accept=[404])
        if response.status_code == 404 and (yield from self._status(id)).status != "deleted":
            raise NotFoundError(response)

    def _label(
        self, id: IdLike, category: str, version: int | None, revision: int | None
    ) -> _Steps[DocumentOut]:
        body = _json({"category": category} | ({} if version is None else {"version": version}))
        path = f"/documents/{_id(id)}/label"
        request = _Request("PUT", path, body=body, headers=_if_match(revision))
        response = yield from self._call(request)
        return DocumentOut.model_validate_json(response.content)

    def _unlabel(self, id: IdLike, revision: int | None) -> _Steps[None]:
        path = f"/documents/{_id(id)}/label"
        yield from self._call(_Request("DELETE", path, headers=_if_match(revision)))

    def _models(self) -> _Steps[list[ModelSummary]]:
        response = yield from self._call(_Request("GET", "/models"))
        return _MODELS.validate_json(response.content)

    def _model(self, version: str | None) -> _Steps[ModelCard]:
        path = "/model" if version is None else f"/models/{version}"
        return (yield from self._get(path, ModelCard))

    def _changes_page(
        self, after: str | None, kinds: Sequence[str], categories: Sequence[str], wait: float
    ) -> _Steps[ChangesPage]:
        params: dict[str, Any] = {"wait": wait, "kind": list(kinds), "category": list(categories)}
        if after is not None:
            params["after"] = after
        request = _Request("GET", "/changes", params, read_timeout=wait + 30.0)
        response = yield from self._call(request)
        return ChangesPage.model_validate_json(response.content)

    def _changes_followed(self, feed: _Feed) -> _Steps[list[Change]]:
        """The next page of `feed`, its cursor moved past it. Following, a service unreachable
        (after `_call`'s own tries) is waited for, 1 s, 2 s, … up to 30 s between attempts;
        not following, UnavailableError. The feed is `done` once not following and a page came
        empty (the head reached)."""
        pause = 1.0
        wait = feed.wait if feed.follow else 0
        while True:
            try:
                page = yield from self._changes_page(feed.after, feed.kinds, feed.categories, wait)
            except UnavailableError:
                if not feed.follow:
                    raise
                yield _Sleep(pause)
                pause = min(pause * 2, 30.0)
                continue
            feed.after = page.next
            feed.done = not feed.follow and not page.items
            return page.items

    def _add_webhook(
        self, url: str, kinds: Sequence[str], categories: Sequence[str], key: str | None
    ) -> _Steps[WebhookCreated]:
        """Every try with one Idempotency-Key: a retry after a lost answer gets the endpoint
        the first try made."""
        body = _json({"url": url, "kinds": list(kinds), "categories": list(categories)})
        headers = {"Idempotency-Key": key or str(uuid.uuid4())}
        response = yield from self._call(_Request("POST", "/webhooks", body=body, headers=headers))
        return WebhookCreated.model_validate_json(response.content)

    def _webhooks(self) -> _Steps[list[WebhookOut]]:
        response = yield from self._call(_Request("GET", "/webhooks"))
        return _WEBHOOKS.validate_json(response.content)

    def _delete_webhook(self, id: uuid.UUID | str) -> _Steps[None]:
        """Idempotent: a 404 (deleted already, by this very call whose answer was lost) is a
        success."""
        yield from self._call(_Request("DELETE", f"/webhooks/{_id(id)}"), accept=[404])

    def _resume_webhook(self, id: uuid.UUID | str, from_head: bool) -> _Steps[WebhookOut]:
        params = {"from": "head"} if from_head else None
        request = _Request("POST", f"/webhooks/{_id(id)}/resume", params)
        response = yield from self._call(request)
        return WebhookOut.model_validate_json(response.content)

    def _request(self, step: _Request) -> dict[str, Any]:
        headers = self._headers | _JSON if step.body is not None else self._headers
        if step.headers:
            headers = headers | dict(step.headers)
        request: dict[str, Any] = {
            "method": step.method,
            "url": step.path,
            "params": step.params,
            "content": step.body,
            "headers": headers,
        }
        if step.read_timeout is not None:
            timeout = self._timeout
            request["timeout"] = httpx.Timeout(
                timeout.connect, read=max(timeout.read or 0, step.read_timeout)
            )
        return request


class Client(_Operations):
    """The docingest API, blocking. `url` defaults to DOCINGEST_URL, then 127.0.0.1:8000;
    `api_key` to DOCINGEST_API_KEY. Use as a context manager, or `close()` it."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_wait: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, max_wait)
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        self._timeout = self._http.timeout

    def _run(self, steps: _Steps[T]) -> T:
        reply: httpx.Response | None = None
        error: httpx.TransportError | None = None
        while True:
            try:
                step = steps.send(reply) if error is None else steps.throw(error)
            except StopIteration as stop:
                return cast(T, stop.value)
            reply, error = None, None
            if isinstance(step, _Sleep):
                time.sleep(step.seconds)
                continue
            try:
                reply = self._http.request(**self._request(step))
            except httpx.TransportError as failed:
                error = failed

    def add(self, content: str, id: uuid.UUID | str | None = None) -> DocumentAccepted:
        """Queue one document (a new one, or a new version of `id`); stored by a worker soon."""
        return self._run(self._add(content, id))

    def add_batch(self, documents: Sequence[DocumentLike]) -> BulkAccepted:
        """One bulk request: texts, or `{"content", "id"?}` mappings; a result per item."""
        return self._run(self._add_batch(documents))

    def add_many(
        self, documents: Iterable[DocumentLike], batch_size: int = 500
    ) -> list[BulkItemResult]:
        """Every document, `batch_size` a request; one result per document, in order (`index`
        counts from the first document, `status` 202 or 422 with its `errors`)."""
        return self._run(self._add_many(documents, batch_size))

    def get(self, id: IdLike) -> DocumentOut:
        """The stored document; NotFoundError until a worker stored it, and once deleted."""
        return self._run(self._get(f"/documents/{_id(id)}", DocumentOut))

    def status(self, id: IdLike) -> DocumentStatus:
        return self._run(self._status(id))

    def wait(
        self, ids: Iterable[IdLike], timeout: float = 60.0, poll: float = 0.2
    ) -> dict[uuid.UUID, DocumentStatus]:
        """Until every document is stored, failed or deleted (TimeoutError after `timeout`).
        Takes ids or what `add` and `add_many` returned (rejected items are left out)."""
        return self._run(self._wait(ids, timeout, poll))

    def documents(self, **filters: Any) -> Iterator[DocumentOut]:
        """Every stored document matching `filters` (those of `GET /documents`: `category`,
        `created_after`, …, at most `limit` documents a page: fewer once a page holds about the
        server's MAX_ANSWER_BYTES), following the cursor page after page until it is null.
        The filters are checked now, by the API's own `DocumentQuery`."""
        return self._documents(DocumentQuery(**filters))

    def _documents(self, query: DocumentQuery) -> Iterator[DocumentOut]:
        while True:
            page = self._run(self._page(query))
            yield from page.items
            if page.next_cursor is None:
                return
            query = query.model_copy(update={"cursor": page.next_cursor})

    def delete(self, id: IdLike) -> None:
        self._run(self._delete(id))

    def label(
        self,
        id: IdLike,
        category: str,
        *,
        version: int | None = None,
        revision: int | None = None,
    ) -> DocumentOut:
        """Set the document's true category. `version`: the document version read (`409` if
        another is stored now); `revision`: the `label.revision` read, needed to replace a
        label (`409` without it, or once someone else changed the label). A retry after a lost
        answer may meet its own label: ApiError 409, read the document."""
        return self._run(self._label(id, category, version, revision))

    def unlabel(self, id: IdLike, *, revision: int | None = None) -> None:
        """Remove the label of `revision` (the `label.revision` read); `409` if it changed."""
        self._run(self._unlabel(id, revision))

    def label_history(self, id: IdLike, limit: int = 100) -> LabelHistory:
        """Who set, replaced or removed the document's label, newest first."""
        return self._run(
            self._get(f"/documents/{_id(id)}/label/history", LabelHistory, limit=limit)
        )

    def models(self) -> list[ModelSummary]:
        """Every registered model, newest first, the active one marked."""
        return self._run(self._models())

    def model(self, version: str | None = None) -> ModelCard:
        """A model's card; the active model's without `version`."""
        return self._run(self._model(version))

    def stats(self) -> Stats:
        return self._run(self._get("/stats", Stats))

    def changes(
        self,
        after: str | None = None,
        *,
        kinds: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        wait: float = 30.0,
        follow: bool = True,
    ) -> Iterator[Change]:
        """The changes after the position `after` (None: from the oldest kept), oldest first,
        each once: follows `next` with long polls of `wait` seconds, forever, resuming by
        itself when the service is unreachable. Save a change's `position` to start after it
        again. `follow=False` stops at the newest change. ApiError 410: the position was
        pruned (docs/changes.md says how to catch up)."""
        feed = _Feed(after, kinds or (), categories or (), wait, follow)
        while not feed.done:
            yield from self._run(self._changes_followed(feed))

    def add_webhook(
        self,
        url: str,
        *,
        kinds: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        idempotency_key: str | None = None,
    ) -> WebhookCreated:
        """Deliver the feed's changes (of these kinds and categories; None: all) to `url`, from
        the newest change on (scope `admin`). The answer holds the signing secret, shown this
        once: keep it for `verify`. Every try sends one `Idempotency-Key` (a new UUID unless
        given), so a retry after a lost answer gets the endpoint the first try made, secret
        included; give your own, saved first, to make a retry from another process safe too."""
        return self._run(self._add_webhook(url, kinds or (), categories or (), idempotency_key))

    def webhooks(self) -> list[WebhookOut]:
        """Every endpoint, oldest first: its state, position, lag and last error."""
        return self._run(self._webhooks())

    def webhook(self, id: uuid.UUID | str) -> WebhookOut:
        return self._run(self._get(f"/webhooks/{_id(id)}", WebhookOut))

    def delete_webhook(self, id: uuid.UUID | str) -> None:
        self._run(self._delete_webhook(id))

    def resume_webhook(self, id: uuid.UUID | str, *, from_head: bool = False) -> WebhookOut:
        """Deliver again to a paused endpoint (or retry a failing one now), from its position;
        `from_head`: from the newest change instead, skipping what it missed (ApiError 409
        when its position was pruned and `from_head` is not given)."""
        return self._run(self._resume_webhook(id, from_head))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Operations):
    """The docingest API for asyncio: `Client`'s methods, awaited (`documents` is an async
    iterator). `limits` bounds the connections that concurrent calls share."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_wait: float = 300.0,
        limits: httpx.Limits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, max_wait)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout,
            limits=limits or DEFAULT_LIMITS,
            transport=transport,
        )
        self._timeout = self._http.timeout

    async def _run(self, steps: _Steps[T]) -> T:
        reply: httpx.Response | None = None
        error: httpx.TransportError | None = None
        while True:
            try:
                step = steps.send(reply) if error is None else steps.throw(error)
            except StopIteration as stop:
                return cast(T, stop.value)
            reply, error = None, None
            if isinstance(step, _Sleep):
                await asyncio.sleep(step.seconds)
                continue
            try:
                reply = await self._http.request(**self._request(step))
            except httpx.TransportError as failed:
                error = failed

    async def add(self, content: str, id: uuid.UUID | str | None = None) -> DocumentAccepted:
        return await self._run(self._add(content, id))

    async def add_batch(self, documents: Sequence[DocumentLike]) -> BulkAccepted:
        return await self._run(self._add_batch(documents))

    async def add_many(
        self, documents: Iterable[DocumentLike], batch_size: int = 500
    ) -> list[BulkItemResult]:
        return await self._run(self._add_many(documents, batch_size))

    async def get(self, id: IdLike) -> DocumentOut:
        return await self._run(self._get(f"/documents/{_id(id)}", DocumentOut))

    async def status(self, id: IdLike) -> DocumentStatus:
        return await self._run(self._status(id))

    async def wait(
        self, ids: Iterable[IdLike], timeout: float = 60.0, poll: float = 0.2
    ) -> dict[uuid.UUID, DocumentStatus]:
        return await self._run(self._wait(ids, timeout, poll))

    def documents(self, **filters: Any) -> AsyncIterator[DocumentOut]:
        return self._documents(DocumentQuery(**filters))

    async def _documents(self, query: DocumentQuery) -> AsyncIterator[DocumentOut]:
        while True:
            page = await self._run(self._page(query))
            for document in page.items:
                yield document
            if page.next_cursor is None:
                return
            query = query.model_copy(update={"cursor": page.next_cursor})

    async def delete(self, id: IdLike) -> None:
        await self._run(self._delete(id))

    async def label(
        self,
        id: IdLike,
        category: str,
        *,
        version: int | None = None,
        revision: int | None = None,
    ) -> DocumentOut:
        return await self._run(self._label(id, category, version, revision))

    async def unlabel(self, id: IdLike, *, revision: int | None = None) -> None:
        await self._run(self._unlabel(id, revision))

    async def label_history(self, id: IdLike, limit: int = 100) -> LabelHistory:
        path = f"/documents/{_id(id)}/label/history"
        return await self._run(self._get(path, LabelHistory, limit=limit))

    async def models(self) -> list[ModelSummary]:
        return await self._run(self._models())

    async def model(self, version: str | None = None) -> ModelCard:
        return await self._run(self._model(version))

    async def stats(self) -> Stats:
        return await self._run(self._get("/stats", Stats))

    async def changes(
        self,
        after: str | None = None,
        *,
        kinds: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        wait: float = 30.0,
        follow: bool = True,
    ) -> AsyncIterator[Change]:
        """`Client.changes`, as an async iterator."""
        feed = _Feed(after, kinds or (), categories or (), wait, follow)
        while not feed.done:
            for change in await self._run(self._changes_followed(feed)):
                yield change

    async def add_webhook(
        self,
        url: str,
        *,
        kinds: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        idempotency_key: str | None = None,
    ) -> WebhookCreated:
        key = idempotency_key
        return await self._run(self._add_webhook(url, kinds or (), categories or (), key))

    async def webhooks(self) -> list[WebhookOut]:
        return await self._run(self._webhooks())

    async def webhook(self, id: uuid.UUID | str) -> WebhookOut:
        return await self._run(self._get(f"/webhooks/{_id(id)}", WebhookOut))

    async def delete_webhook(self, id: uuid.UUID | str) -> None:
        await self._run(self._delete_webhook(id))

    async def resume_webhook(self, id: uuid.UUID | str, *, from_head: bool = False) -> WebhookOut:
        return await self._run(self._resume_webhook(id, from_head))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


# --- helpers ---------------------------------------------------------------------------------


def _with_id(document: DocumentLike) -> dict[str, Any]:
    """The document as the API takes it, with an id from now on: a text becomes its content; a
    mapping keeps its keys (the API judges them), a missing or empty id is drawn here."""
    if isinstance(document, str):
        return {"id": str(uuid.uuid4()), "content": document}
    if isinstance(document, DocumentIn):
        return document.model_dump(mode="json")
    return {**document, "id": str(document.get("id") or uuid.uuid4())}


def _if_match(revision: int | None) -> dict[str, str]:
    """The precondition of a label change: the revision of the label read, as an entity tag."""
    return {} if revision is None else {"If-Match": f'"{revision}"'}


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` items (the last one shorter), read as they are needed."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _id(id: IdLike) -> uuid.UUID:
    if isinstance(id, uuid.UUID):
        return id
    if isinstance(id, str):
        return uuid.UUID(id)
    if id.id is None:
        raise ValueError(f"item {id} was rejected: it has no id")
    return id.id


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """`Retry-After` in seconds (a number or an HTTP date), at least 0.1."""
    value = response.headers.get("retry-after", "")
    try:
        return max(0.1, float(value))
    except ValueError:
        pass
    try:
        return max(0.1, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def _detail(response: httpx.Response) -> str:
    """The `detail` of the API's JSON errors, as text; the start of the body otherwise."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else _json(detail).decode()


def _json(value: Any) -> bytes:
    """Compact JSON in UTF-8: non-ASCII text as it is, NaN as null, UUIDs and datetimes as text.
    pydantic's serializer rather than the json module, about 8 times faster on a batch of
    documents (1-3 ms a megabyte). A lone surrogate, which UTF-8 cannot encode, raises
    PydanticSerializationError (a ValueError) before anything is sent."""
    return _ANY.dump_json(value)
