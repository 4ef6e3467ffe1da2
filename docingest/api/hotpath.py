"""The route clients call thousands of times a second, served without FastAPI's routing layers.

A py-spy profile of one API process taking single POSTs (docs/benchmark.md) put ~40 % of its
CPU in the layers between the app's middleware and the endpoint: Starlette's exception and
routing middleware, FastAPI's route matching, request wrapping and dependency solving, for one
route whose dependencies are all cheap attribute reads. `HotRoute` is the app's innermost
middleware (inside the body limit, the Gate and the metrics): for that one method and path it
calls a function that runs the route's own dependencies and endpoint, and renders an error as
Starlette's exception middleware would. The answers, their headers, the metrics label and the
OpenAPI document stay the route's; every other request goes through FastAPI as before.

That function is derived from the route's declaration (`direct_call`), never written by hand:
FastAPI's dependency tree of the route (its `dependencies=[...]`, its parameters' `Depends`,
theirs, and those of the routers it is included in), flattened when the app is created into
straight-line code that awaits each dependency once, in FastAPI's order, with FastAPI's
per-request cache, and calls the endpoint: per request it costs what the hand-written version
did. A route declaring anything that code cannot serve as FastAPI would (a parameter read from
the path, query, headers, cookies or body, security scopes, a dependency with `yield`, a
`Response` or `BackgroundTasks` parameter, an answer FastAPI would validate or serialize...) is
refused with `HotPathError` when the app is created: a change to the route works on the hot path
or stops the app at start-up, never answers differently there.
"""

from __future__ import annotations

import inspect
import keyword
import linecache
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, cast

from fastapi import FastAPI, Request, Response

# FastAPI's own tests of a callable (coroutine, generator) and its per-request cache key: the
# plan decides as the router does. Private: an upgrade that renames them fails here, at import.
from fastapi.dependencies.models import (
    Dependant,
    _get_cache_key,
    _is_async_gen_callable,
    _is_coroutine_callable,
    _is_gen_callable,
)
from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class HotPathError(RuntimeError):
    """The route declares something the hot path cannot serve as FastAPI would."""


class HotRoute:
    """Serves `route` (found by `find_route`) for `method` with `call` (from `direct_call`).

    While the app has dependency overrides (`app.dependency_overrides`, read per request as
    FastAPI reads them), the route is left to FastAPI: the call was built from the route's own
    dependencies.
    """

    def __init__(
        self, app: ASGIApp, *, route: RouteContext | APIRoute, method: str, call: Endpoint
    ) -> None:
        self.app = app
        self.route = _original(route)  # what the router puts in the scope
        self.served = ("http", route.path_format, method)
        self.overrides_of = route.dependency_overrides_provider
        self.call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"], scope.get("path"), scope.get("method")) != self.served or (
            self.overrides_of is not None and self.overrides_of.dependency_overrides
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # as the router sets it: the metrics label the template
        request = Request(scope, receive, send)
        try:
            response = await self.call(request)
        except Exception as error:
            response = await _handle(scope["app"], request, error)
        await response(scope, receive, send)


async def _handle(app: FastAPI, request: Request, error: Exception) -> Response:
    """What Starlette's exception middleware, which sits between `HotRoute` and the router,
    would answer: the handler of the error's status code (an HTTPException), else that of the
    nearest class of the error. The handlers of 500 and `Exception` are not its own but the
    server-error middleware's, outside every other: such an error is raised on to it, as from
    any route."""
    handlers = app.exception_handlers
    handler = None
    if isinstance(error, HTTPException) and error.status_code != 500:
        handler = handlers.get(error.status_code)
    if handler is None:
        handler = next(
            (
                handlers[cls]
                for cls in type(error).__mro__
                if cls in handlers and cls is not Exception
            ),
            None,
        )
    if handler is None:
        raise error
    if is_async_callable(handler):
        response = await handler(request, error)
    else:
        response = await run_in_threadpool(handler, request, error)
    error.__traceback__ = None  # as Starlette does: a reused exception keeps no old frames
    return cast(Response, response)


def find_route(routes: Sequence[BaseRoute], path: str, method: str) -> RouteContext:
    """The route of the app's `routes` that serves `method` on `path`, as the router serves it:
    with the dependencies of the routers it is included in."""
    for route in iter_route_contexts(routes):
        if (
            isinstance(route.original_route, APIRoute)
            and route.path_format == path
            and method in (route.methods or ())
        ):
            return route
    raise LookupError(f"no route {method} {path}")


def direct_call(route: RouteContext | APIRoute) -> Endpoint:
    """A function of the request that resolves the route's dependencies and calls its endpoint
    as FastAPI's router would; HotPathError if the route declares what it cannot serve."""
    original = _original(route)
    where = f"{', '.join(sorted(route.methods or ()))} {route.path_format}"
    problems = _route_problems(route, original)
    dependant: Dependant = route.dependant
    problems += [problem for sub in _walk(dependant) for problem in _dependant_problems(sub)]
    if problems:
        raise HotPathError(
            f"the hot path cannot serve {where} as FastAPI would: {'; '.join(problems)}"
        )
    plan = _Plan()
    arguments = plan.arguments(dependant)
    endpoint = plan.bind("endpoint", dependant.call)
    if _is_coroutine_callable(dependant.call):
        plan.lines.append(f"return await {endpoint}({arguments})")
    else:
        plan.lines.append(f"return await run_in_threadpool(partial({endpoint}, {arguments}))")
    name = getattr(dependant.call, "__name__", "endpoint")
    return plan.compile(f"hot_{name if _is_name(name) else 'endpoint'}", f"<HotRoute {where}>")


def _original(route: RouteContext | APIRoute) -> BaseRoute:
    """The route as declared (the router's `scope["route"]`), not as included in the app."""
    return route.original_route if isinstance(route, RouteContext) else route


def _route_problems(route: RouteContext | APIRoute, original: BaseRoute) -> list[str]:
    """What of the route itself the hot path would skip."""
    problems = []
    if type(original) is not APIRoute:
        problems.append(f"its route class {type(original).__name__} has a handler of its own")
    if route.param_convertors:
        problems.append(f"its path {route.path_format} has parameters")
    if route.max_body_size is not None:
        problems.append("it has a max_body_size of its own")
    endpoint = route.dependant.call
    answer = None if endpoint is None else get_typed_return_annotation(endpoint)
    if not (isinstance(answer, type) and issubclass(answer, Response)):
        # Only a returned Response is sent as it is; any other value goes through the
        # response_model, status_code and response_class.
        problems.append(
            f"its endpoint returns {answer!r}, not a Response: FastAPI would validate and "
            "serialize the value"
        )
    return problems


def _walk(dependant: Dependant) -> list[Dependant]:
    """The dependant and every dependant below it."""
    found = [dependant]
    for sub in dependant.dependencies:
        found += _walk(sub)
    return found


_PARAMETER_SOURCES = ("path", "query", "header", "cookie", "body")
_SPECIAL_PARAMETERS = {
    "websocket_param_name": "a WebSocket",
    "response_param_name": "a Response to change the answer through",
    "background_tasks_param_name": "BackgroundTasks",
    "security_scopes_param_name": "SecurityScopes",
}


def _dependant_problems(dependant: Dependant) -> list[str]:
    """What of one dependant (the endpoint or a dependency) the hot path cannot resolve."""
    name = getattr(dependant.call, "__name__", repr(dependant.call))
    problems = [
        f"{name} reads {source} parameter {field.name!r}"
        for source in _PARAMETER_SOURCES
        for field in getattr(dependant, f"{source}_params")
    ]
    problems += [
        f"{name} takes {what}"
        for attribute, what in _SPECIAL_PARAMETERS.items()
        if getattr(dependant, attribute) is not None
    ]
    if dependant.own_oauth_scopes or dependant.parent_oauth_scopes:
        problems.append(f"{name} has security scopes")
    if dependant.call is None:
        problems.append("a dependency has no callable")
    elif _is_gen_callable(dependant.call) or _is_async_gen_callable(dependant.call):
        problems.append(f"{name} is a generator (a dependency with yield, or a streaming endpoint)")
    parameters = (
        dependant.name,
        dependant.request_param_name,
        dependant.http_connection_param_name,
    )
    for parameter in parameters:
        if parameter is not None and not _is_name(parameter):
            problems.append(f"{name} has a parameter named {parameter!r}")
    return problems


def _call_arguments(call: Any, supplied: dict[str, str]) -> str:
    """`supplied` as the arguments of a call of `call`: positionally as far as its own signature
    allows (a keyword costs more, ~0.5 µs more for an instance's `__call__` such as
    `auth.Requirement`), the others by keyword, as FastAPI passes them all. The signature is
    the callable's own, not that of what it wraps, which may not take the same arguments."""
    try:
        parameters = list(inspect.signature(call, follow_wrapped=False).parameters.values())
    except (TypeError, ValueError):  # no signature to read: every argument by keyword
        parameters = []
    keywords = dict(supplied)
    positional = []
    for parameter in parameters:
        if parameter.kind is not parameter.POSITIONAL_OR_KEYWORD or parameter.name not in keywords:
            break
        positional.append(keywords.pop(parameter.name))
    return ", ".join([*positional, *(f"{name}={value}" for name, value in keywords.items())])


def _is_name(text: str) -> bool:
    return text.isidentifier() and not keyword.iskeyword(text)


class _Plan:
    """The straight-line code of one request: a line per dependency call, in the order FastAPI
    resolves them (`solve_dependencies`: a dependency's own dependencies first, then the
    dependency, unless its cache key was resolved before in this request and it `use_cache`s).
    A dependency's value is the local `v<n>`; the callables are the code's globals."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "run_in_threadpool": run_in_threadpool,
            "partial": partial,
        }
        self.resolved: dict[Any, str] = {}  # cache key -> the local holding its value

    def bind(self, name: str, value: Any) -> str:
        self.namespace[name] = value
        return name

    def arguments(self, dependant: Dependant) -> str:
        """The arguments of `dependant`'s call, once the lines computing them are planned."""
        supplied: dict[str, str] = {}  # parameter -> the local holding its value
        for sub in dependant.dependencies:
            value = self.value_of(sub)
            if sub.name is not None:
                supplied[sub.name] = value
        for parameter in (dependant.http_connection_param_name, dependant.request_param_name):
            if parameter is not None:
                supplied[parameter] = "request"
        return _call_arguments(dependant.call, supplied)

    def value_of(self, dependant: Dependant) -> str:
        arguments = self.arguments(dependant)  # FastAPI solves them even for a cached value
        key = _get_cache_key(dependant=dependant)
        if dependant.use_cache and key in self.resolved:
            return self.resolved[key]
        n = len(self.lines)
        value, call = f"v{n}", self.bind(f"d{n}", dependant.call)
        if _is_coroutine_callable(dependant.call):
            line = f"{value} = await {call}({arguments})"
        else:  # in the thread pool, as FastAPI runs a plain `def`
            line = f"{value} = await run_in_threadpool(partial({call}, {arguments}))"
        if dependant.concurrency is not None:
            limit = self.bind(f"limit{n}", dependant.concurrency)
            line = f"async with {limit}.get_semaphore():\n        {line}"
        self.lines.append(line)
        self.resolved.setdefault(key, value)
        return value

    def compile(self, name: str, filename: str) -> Endpoint:
        body = "".join(f"    {line}\n" for line in self.lines)
        source = f"async def {name}(request):\n{body}"
        # Code made from the route's declaration only: identifiers checked, callables bound as
        # globals, nothing from a request. In linecache, for tracebacks to show its lines.
        exec(compile(source, filename, "exec"), self.namespace)  # noqa: S102
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        call: Endpoint = self.namespace[name]
        return call
