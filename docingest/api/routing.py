"""What the router alone would answer wrongly, decided in one place for every route: a method
the path does not have (`405` with the path's `Allow`), and a parameter holding NUL (`422`).

Starlette tries routes in order, so `GET /documents/bulk` reached `GET /documents/{document_id}`
(a 422 for the id "bulk"), and a path served by two routes answered `OPTIONS` with the `Allow`
of the first one only. Here a path resolves as OpenAPI says it does, a concrete path before a
templated one, and `Allow` lists the methods of every route of that path.

PostgreSQL's text cannot hold NUL: a filter or a model version holding one made the database
raise (a 500). It is the only character a decoded URL can carry that the database refuses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi.routing import iter_route_contexts
from starlette._utils import get_route_path
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from docingest.schemas import NUL

NUL_MESSAGE = "must not contain NUL (U+0000) characters"


@dataclass(frozen=True)
class PathMethods:
    """A path template and the methods its routes answer."""

    template: str
    regex: re.Pattern[str]
    methods: frozenset[str]

    @property
    def allow(self) -> str:
        return ", ".join(sorted(self.methods))


class PathTable:
    """Resolves a request path to its template: a concrete one first, then the templated ones,
    a literal segment before a parameter at the first segment where they differ."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        found: dict[str, PathMethods] = {}
        for route in iter_route_contexts(list(routes)):
            template, methods = route.path_format, route.methods
            if template is None or methods is None:
                continue
            known = found.get(template)
            merged = frozenset(methods) | (known.methods if known else frozenset())
            found[template] = PathMethods(template, route.path_regex, merged)
        self._concrete = {t: entry for t, entry in found.items() if "{" not in t}
        templated = (entry for t, entry in found.items() if "{" in t)
        self._templated = sorted(templated, key=lambda entry: _rank(entry.template))

    def resolve(self, path: str) -> tuple[PathMethods, dict[str, str]] | None:
        """The path's template and its parameters; None for a path no route serves."""
        concrete = self._concrete.get(path)
        if concrete is not None:
            return concrete, {}
        for entry in self._templated:
            match = entry.regex.match(path)
            if match:
                return entry, match.groupdict()
        return None


def _rank(template: str) -> list[bool]:
    return [segment.startswith("{") for segment in template.split("/")]


class RequestCheck:
    """Pure ASGI middleware; the table is built with the middleware stack, once every route of
    the app is added (it is handed the app's route list, not a copy)."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.table = PathTable(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def _refusal(self, scope: Scope) -> JSONResponse | None:
        found = self.table.resolve(get_route_path(scope))  # the path as the router reads it
        if found is None:
            return None
        path, parameters = found
        if scope["method"] not in path.methods:
            return JSONResponse(
                {"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": path.allow}
            )
        where = _holding_nul(parameters, scope["query_string"])
        if where is None:
            return None
        error = {"type": "value_error", "loc": list(where), "msg": NUL_MESSAGE}
        return JSONResponse({"detail": [error]}, status_code=422)


def _holding_nul(path_parameters: dict[str, str], query: bytes) -> tuple[str, str] | None:
    """Where a NUL is: ("path", name) or ("query", name). A NUL reaches a query only as `%00`,
    so the query string is decoded (as Starlette decodes it) only when it holds one."""
    for name, value in path_parameters.items():
        if NUL in value:
            return "path", name
    if b"%00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if NUL in name or NUL in value:
                return "query", name
    return None
