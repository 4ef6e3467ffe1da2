"""The hot route (`docingest.api.hotpath`) answers as FastAPI's router answers the same route.

Each comparison sends the same requests to two apps built alike: one as `create_app` builds it
(`HotRoute` serves POST /documents), one with `HotRoute` taken out of its middleware before it
starts, so that the request goes on through Starlette's exception middleware and FastAPI's
router, dependency solving and request handler: the route as FastAPI alone serves it. Nothing
else differs (same settings, keys, limits, Redis and database), and a counter around the hot
call shows that the first app's answers came from the hot route.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, cast

import httpx
import pytest
from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Request,
    Response,
    Security,
)
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.middleware import Middleware

from docingest.api import create_app
from docingest.api.hotpath import Endpoint, HotPathError, HotRoute, direct_call, find_route
from docingest.embedded import free_port
from docingest.keys import ApiKey, Scope, digest, generate_key
from docingest.settings import Settings
from tests.helpers import make_settings

# --- the app's POST /documents, both ways --------------------------------------------------------

KEYS = {
    "ingester": (Scope.INGEST, None),
    "reader": (Scope.READ, None),
    "slow": (Scope.INGEST, 2),  # two requests, then a 429 for ~30 s
}
SECRETS = {name: generate_key() for name in KEYS}
MAX_CHARS = 50
MAX_BODY = 1_000


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


def is_hot_route(middleware: Middleware) -> bool:
    cls: object = middleware.cls
    return cls is HotRoute


def without_hot_route(app: FastAPI) -> FastAPI:
    """The app with FastAPI's router serving POST /documents (before the app starts)."""
    kept = [m for m in app.user_middleware if not is_hot_route(m)]
    assert len(kept) == len(app.user_middleware) - 1
    app.user_middleware = kept
    return app


def counting_hot_calls(app: FastAPI) -> list[int]:
    """Counts the calls of the app's hot route (before the app starts): [calls]."""
    [middleware] = [m for m in app.user_middleware if is_hot_route(m)]
    call = cast(Endpoint, middleware.kwargs["call"])
    calls = [0]

    async def counted(request: Request) -> Response:
        calls[0] += 1
        return await call(request)

    middleware.kwargs["call"] = counted
    return calls


class Pair:
    """The same requests to the hot route (`hot`) and to FastAPI's router (`routed`)."""

    def __init__(self, settings: Settings) -> None:
        hot_app = create_app(settings)
        self.hot_calls = counting_hot_calls(hot_app)
        self.hot = TestClient(hot_app, raise_server_exceptions=False)
        self.routed = TestClient(
            without_hot_route(create_app(settings)), raise_server_exceptions=False
        )

    def __enter__(self) -> Pair:
        self.hot.__enter__()
        self.routed.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.routed.__exit__(None, None, None)
        self.hot.__exit__(None, None, None)

    def post(self, **request: Any) -> tuple[httpx.Response, httpx.Response, int]:
        """Both answers, and how many times the hot route was called for it (0 or 1)."""
        before = self.hot_calls[0]
        hot = self.hot.post("/documents", **request)
        routed = self.routed.post("/documents", **request)
        return hot, routed, self.hot_calls[0] - before


def assert_same(hot: httpx.Response, routed: httpx.Response) -> None:
    """Status, every header and the body; for a 202, what does not hold the new id/version."""
    assert hot.status_code == routed.status_code, (hot.text, routed.text)
    if hot.status_code != 202:
        assert dict(hot.headers) == dict(routed.headers)
        assert hot.content == routed.content
        return
    assert hot.headers.keys() == routed.headers.keys()
    assert hot.headers["content-type"] == routed.headers["content-type"] == "application/json"
    for answer in (hot, routed):
        body = answer.json()
        assert set(body) == {"id", "version", "status"}
        assert body["status"] == "queued"
        assert isinstance(body["version"], int)
        assert answer.headers["location"] == f"/documents/{uuid.UUID(body['id'])}/status"


def post(
    body: bytes,
    key: str | None = "ingester",
    content_type: str = "application/json",
    **more: Any,
) -> dict[str, Any]:
    """A POST's arguments for TestClient: a body, with this key and content type."""
    headers = {"content-type": content_type} | (bearer(key) if key else {})
    return {"content": body, "headers": headers | more.pop("headers", {}), **more}


VALID = b'{"content": "The striker scored twice as Chelsea beat Arsenal."}'
# name -> (request, status, whether the route answers it: else the Gate, the body limit or the
# 405/NUL check answered before the hot route, on both apps alike)
REQUESTS: dict[str, tuple[dict[str, Any], int, bool]] = {
    "valid": (post(VALID), 202, True),
    "no key": (post(VALID, key=None), 401, False),
    "unknown key": (
        post(VALID, key=None, headers={"Authorization": f"Bearer {generate_key()}"}),
        401,
        False,
    ),
    # Refused by the Gate from the headers, before the body (issue 21, defect 7).
    "key without the ingest scope": (post(VALID, key="reader"), 403, False),
    "invalid JSON": (post(b'{"content": "x"'), 422, True),
    "missing content": (post(b'{"id": "8f7c9a1e-3b5d-4c2a-9e1f-0a1b2c3d4e5f"}'), 422, True),
    "blank content": (post(b'{"content": "   "}'), 422, True),
    "empty body": (post(b""), 422, True),
    "NUL in the content": (post(b'{"content": "a\\u0000b"}'), 422, True),
    "unknown field": (post(b'{"content": "x", "tags": []}'), 422, True),
    "invalid UTF-8": (post(b'{"content": "\xff\xfe"}'), 422, True),
    "content over MAX_DOCUMENT_CHARS": (
        post(b'{"content": "%s"}' % (b"x" * (MAX_CHARS + 1))),
        422,
        True,
    ),
    "body over MAX_BODY_BYTES": (post(b'{"content": "%s"}' % (b"x" * MAX_BODY)), 413, False),
    "not JSON": (post(VALID, content_type="text/plain"), 415, False),
    "NUL in the query": (post(VALID, params={"x": "\x00"}), 422, False),
}


@pytest.fixture
def pair(sqlite_url: str, redis_url: str, model_path: Path, tmp_path: Path) -> Iterator[Pair]:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(
        "".join(
            ApiKey(name, frozenset({scope}), digest(SECRETS[name]), limit).toml_entry()
            for name, (scope, limit) in KEYS.items()
        )
    )
    settings = make_settings(
        sqlite_url,
        redis_url,
        model_path,
        tmp_path,
        api_keys_file=keys_file,
        max_document_chars=MAX_CHARS,
        max_body_bytes=MAX_BODY,
    )
    with Pair(settings) as pair:
        yield pair


def test_post_documents_answers_as_fastapis_router(pair: Pair) -> None:
    for name, (request, status, reaches_route) in REQUESTS.items():
        hot, routed, hot_calls = pair.post(**request)
        assert hot.status_code == status, (name, hot.text)
        assert_same(hot, routed)
        assert hot_calls == reaches_route, name


def test_a_rate_limited_key_answers_as_fastapis_router(pair: Pair) -> None:
    """Two requests a minute: the third is a 429 whose Retry-After says ~30 s (the same on both
    apps unless a second passes between the requests to one and not to the other)."""
    answers = [pair.post(**post(VALID, key="slow")) for _ in range(3)]
    assert [hot.status_code for hot, _, _ in answers] == [202, 202, 429]
    for hot, routed, _ in answers:
        assert_same(hot, routed)
    # The 429 comes from the Gate, before the body; the two 202s from the hot route.
    assert [hot_calls for _, _, hot_calls in answers] == [1, 1, 0]
    assert "Rate limit" in answers[-1][0].json()["detail"]


def test_an_unreachable_broker_answers_as_fastapis_router(
    sqlite_url: str, model_path: Path, tmp_path: Path
) -> None:
    """The 503 of an app exception handler (and its Retry-After), open mode (no key)."""
    broker = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(sqlite_url, broker, model_path, tmp_path, broker_timeout_seconds=0.5)
    with Pair(settings) as pair:
        hot, routed, hot_calls = pair.post(**post(VALID, key=None))
    assert hot.status_code == 503
    assert "retry-after" in hot.headers
    assert_same(hot, routed)
    assert hot_calls == 1


# --- the plan, on a route of every kind it serves ----------------------------------------------


def note(request: Request, what: str) -> None:
    """What ran, in order, for the answer to show."""
    if not hasattr(request.state, "calls"):
        request.state.calls = []
    request.state.calls.append(what)


async def app_wide(request: Request) -> None:
    note(request, "app")


async def router_wide(request: Request) -> None:
    note(request, "router")


async def shared(request: Request) -> str:
    note(request, "shared")
    return "shared"


async def fresh(request: Request) -> int:
    note(request, "fresh")
    return len(request.state.calls)


def blocking(request: Request, *, value: Annotated[str, Depends(shared)]) -> str:
    """A plain `def`: FastAPI runs it in the thread pool. And a keyword-only parameter."""
    try:
        asyncio.get_running_loop()
        where = "the event loop"
    except RuntimeError:
        where = "a thread"
    note(request, f"blocking, in {where}")
    return value + "!"


def keywords_only(function: Callable[..., Awaitable[str]]) -> Callable[..., Awaitable[str]]:
    """A decorator FastAPI sees through (its signature is the function's), which takes
    keyword arguments only."""

    @functools.wraps(function)
    async def wrapper(**arguments: Any) -> str:
        return await function(**arguments)

    return wrapper


@keywords_only
async def wrapped(request: Request, value: Annotated[str, Depends(shared)]) -> str:
    note(request, "wrapped")
    return value.upper()


class RefusedError(LookupError):
    pass


class Guard:
    """A callable instance, like `auth.Requirement`, with dependencies of its own."""

    async def __call__(
        self,
        request: Request,
        value: Annotated[str, Depends(shared)],
        again: Annotated[int, Depends(fresh, use_cache=False)],
    ) -> None:
        note(request, f"guard({value}, {again})")
        failure = request.headers.get("x-fail")
        if failure == "http":
            raise HTTPException(403, "no", headers={"X-Why": "asked to"})
        if failure == "teapot":
            raise HTTPException(418, "short and stout")
        if failure == "handled":
            raise RefusedError("by its handler")
        if failure == "unexpected":
            raise RuntimeError("a bug")


def answer(request: Request, *values: object) -> Response:
    return JSONResponse(
        {"calls": request.state.calls, "values": values},
        status_code=201,
        headers={"Location": "/things/1"},
    )


things = APIRouter(prefix="/things", dependencies=[Depends(router_wide)])


@things.post("", dependencies=[Depends(Guard())], response_model=dict[str, str])
async def create_thing(
    request: Request,
    a: Annotated[str, Depends(shared)],
    b: Annotated[str, Depends(blocking)],
    c: Annotated[int, Depends(fresh, use_cache=False)],
    d: Annotated[int, Depends(fresh)],
    e: Annotated[str, Depends(wrapped)],
) -> Response:
    return answer(request, a, b, c, d, e)


@things.post("/sync", dependencies=[Depends(Guard())])
def create_thing_in_a_thread(request: Request, a: Annotated[str, Depends(blocking)]) -> Response:
    return answer(request, a)


def things_app(path: str, *, hot: bool) -> tuple[FastAPI, list[int]]:
    app = FastAPI(dependencies=[Depends(app_wide)])
    app.include_router(things)

    async def refused(request: Request, error: Exception) -> Response:
        return JSONResponse({"detail": str(error)}, status_code=409, headers={"X-Handled": "1"})

    def teapot(request: Request, error: Exception) -> Response:  # a plain `def`, too
        return JSONResponse({"detail": "status handler"}, status_code=418)

    async def unexpected(request: Request, error: Exception) -> Response:
        return JSONResponse({"detail": "Internal server error"}, status_code=500)

    app.add_exception_handler(RefusedError, refused)
    app.add_exception_handler(418, teapot)
    app.add_exception_handler(Exception, unexpected)
    calls = [0]
    if hot:
        route = find_route(app.routes, path, "POST")
        call = direct_call(route)

        async def counted(request: Request) -> Response:
            calls[0] += 1
            return await call(request)

        app.add_middleware(HotRoute, route=route, method="POST", call=counted)
    return app, calls


@pytest.mark.parametrize("path", ["/things", "/things/sync"])
@pytest.mark.parametrize("failure", [None, "http", "teapot", "handled", "unexpected"])
def test_dependencies_resolve_as_fastapi_resolves_them(path: str, failure: str | None) -> None:
    """App-, router- and route-wide dependencies, sub-dependencies, a callable instance, a
    `def` in the thread pool, values cached per request or not (`use_cache=False`), errors
    rendered by status or by class, or raised on to the server-error middleware."""
    hot_app, hot_calls = things_app(path, hot=True)
    routed_app, _ = things_app(path, hot=False)
    headers = {"x-fail": failure} if failure else {}
    with (
        TestClient(hot_app, raise_server_exceptions=False) as hot_client,
        TestClient(routed_app, raise_server_exceptions=False) as routed_client,
    ):
        hot = hot_client.post(path, headers=headers)
        routed = routed_client.post(path, headers=headers)
    assert hot_calls == [1]
    assert (hot.status_code, dict(hot.headers)) == (routed.status_code, dict(routed.headers))
    assert hot.content == routed.content
    if failure is None:
        assert hot.status_code == 201
        calls = hot.json()["calls"]
        assert calls[:2] == ["app", "router"]
        assert "blocking, in a thread" in calls
        if path == "/things":
            assert hot.json()["values"] == ["shared", "shared!", 7, 4, "SHARED"]


def test_dependency_overrides_leave_the_route_to_fastapi() -> None:
    app, hot_calls = things_app("/things", hot=True)

    async def other(request: Request) -> str:
        return "overridden"

    with TestClient(app) as client:
        assert client.post("/things").json()["values"][0] == "shared"
        app.dependency_overrides[shared] = other
        assert client.post("/things").json()["values"][0] == "overridden"
        app.dependency_overrides.clear()
        assert client.post("/things").json()["values"][0] == "shared"
    assert hot_calls == [2]


# --- what it refuses, when the app is built -----------------------------------------------------


class Thing(BaseModel):
    name: str


async def reads_query(q: int) -> int:
    return q


async def with_yield() -> Any:
    yield 1


async def scoped() -> None:
    return


class OwnRoute(APIRoute):
    pass


def route_of(endpoint: Callable[..., Any], path: str = "/x", **options: Any) -> APIRoute:
    router = APIRouter(route_class=options.pop("route_class", APIRoute))
    router.add_api_route(path, endpoint, methods=["POST"], **options)
    [route] = router.routes
    assert isinstance(route, APIRoute)
    return route


def test_a_route_with_a_query_parameter_is_refused() -> None:
    async def endpoint(q: int) -> Response:
        return Response()

    with pytest.raises(HotPathError, match=r"POST /x .*endpoint reads query parameter 'q'"):
        direct_call(route_of(endpoint))


async def _path(thing_id: int) -> Response:
    return Response()


async def _header(x_token: Annotated[str, Header()]) -> Response:
    return Response()


async def _body(thing: Thing) -> Response:
    return Response()


async def _query_below(q: Annotated[int, Depends(reads_query)]) -> Response:
    return Response()


async def _yield(value: Annotated[int, Depends(with_yield)]) -> Response:
    return Response()


async def _background(tasks: BackgroundTasks) -> Response:
    return Response()


async def _response(response: Response) -> Response:
    return response


async def _scopes(value: Annotated[None, Security(scoped, scopes=["admin"])]) -> Response:
    return Response()


async def _value() -> dict[str, str]:
    return {"status": "queued"}


async def _plain() -> Response:
    return Response()


REFUSED: dict[str, tuple[Callable[..., Any], dict[str, Any], str]] = {
    "path parameter": (_path, {"path": "/x/{thing_id}"}, "path parameter 'thing_id'"),
    "header": (_header, {}, "header parameter 'x_token'"),
    "body": (_body, {}, "body parameter 'thing'"),
    "query of a dependency": (_query_below, {}, "reads_query reads query parameter 'q'"),
    "dependency with yield": (_yield, {}, "with_yield is a generator"),
    "background tasks": (_background, {}, "takes BackgroundTasks"),
    "response parameter": (_response, {}, "takes a Response"),
    "security scopes": (_scopes, {}, "scoped has security scopes"),
    "a value to serialize": (_value, {}, "FastAPI would validate and serialize"),
    "route class": (_plain, {"route_class": OwnRoute}, "route class OwnRoute"),
    "own body limit": (_plain, {"max_body_size": 10}, "max_body_size"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_what_the_hot_path_cannot_serve_is_refused(name: str) -> None:
    endpoint, options, problem = REFUSED[name]
    options = dict(options)
    path = options.pop("path", "/x")
    with pytest.raises(HotPathError, match=problem):
        direct_call(route_of(endpoint, path, **options))
