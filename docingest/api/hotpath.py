"""The route clients call thousands of times a second, served without FastAPI's routing layers.

A py-spy profile of one API process taking single POSTs (docs/benchmark.md) put ~40 % of its
CPU in the layers between the app's middleware and the endpoint: Starlette's exception and
routing middleware, FastAPI's route matching, request wrapping and dependency solving, for one
route whose dependencies are all cheap attribute reads. `HotRoute` is the app's innermost
middleware (inside the body limit, the Gate and the metrics): for that one method and path it
calls a function that runs the route's own dependencies and endpoint, and renders an error with
the app's own exception handlers. The answers, their headers, the metrics label and the OpenAPI
document stay the route's; every other request goes through FastAPI as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoute:
    def __init__(self, app: ASGIApp, *, route: APIRoute, method: str, call: Endpoint) -> None:
        self.app = app
        self.route = route
        self.served = ("http", route.path, method)
        self.call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"], scope.get("path"), scope.get("method")) != self.served:
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
    """What Starlette's exception middleware would answer: the handler registered for the
    nearest class of the error (the app registers one for `Exception`)."""
    for cls in type(error).__mro__:
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            response = handler(request, error)
            return await response if inspect.isawaitable(response) else response
    raise error


def find_route(router: APIRouter, path: str, method: str) -> APIRoute:
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no route {method} {path}")
