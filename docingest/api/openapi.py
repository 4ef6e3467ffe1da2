"""The app's OpenAPI document, made to say what the API does.

FastAPI derives the document from the routes; what no single route declares is added here, once
for all: the answers every operation of a kind may give (a body too large, a service down), the
headers those answers carry, and the NUL rule on parameters (`routing.RequestCheck`). Clients are
generated from this document, and tests/*/test_contract.py holds the API to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from docingest.api.deps import BACKING_SERVICES
from docingest.api.limits import reads_body
from docingest.schemas import NO_NUL_PATTERN

Schema = dict[str, Any]
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def extend_openapi(app: FastAPI, edit: Callable[[Schema], None]) -> None:
    """Have `edit` change the app's document once, after FastAPI and earlier edits built it."""
    build = app.openapi

    def openapi() -> Schema:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        edit(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def operations(schema: Schema) -> Iterator[Schema]:
    for item in schema["paths"].values():
        yield from (operation for method, operation in item.items() if method in HTTP_METHODS)


def _header(description: str, schema: Schema) -> Schema:
    return {"description": description, "required": True, "schema": schema}


RETRY_AFTER = {
    "Retry-After": _header("Seconds to wait before trying again", {"type": "integer", "minimum": 0})
}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": _header("The scheme to authenticate with", {"const": "Bearer"})
}
_ERROR = {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}


def error_response(description: str, *, headers: Mapping[str, Schema] | None = None) -> Schema:
    """An error answer: JSON with a `detail`, and the headers it always carries."""
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": _ERROR}},
    }
    if headers:
        response["headers"] = dict(headers)
    return response


ERROR_RESPONSES: dict[int | str, Schema] = {
    code: error_response(description, headers=RETRY_AFTER if code in (429, 503) else None)
    for code, description in {
        404: "Not found",
        408: "The body did not arrive within BODY_TIMEOUT_SECONDS",
        409: "The model's artifact fails its checks (checksum, trusted types); not activated",
        413: "Request body larger than MAX_BODY_BYTES, or more documents than allowed",
        415: "A body that is not JSON (or NDJSON where the operation takes it), or is compressed",
        422: "The body or a parameter is not what this operation takes; `detail` says where "
        "and why",
        429: "Too many documents waiting (MAX_QUEUED_DOCUMENTS, MAX_QUEUED_BYTES); nothing was "
        "accepted, retry after `Retry-After` seconds",
        503: "The broker, the ledger or the database is unreachable, or every database "
        "connection is busy; retry after `Retry-After` seconds",
    }.items()
}
# Any request whose method reads a body: limits.BodySizeLimit (408, 413) and auth.Gate (415).
_BODY_ANSWERS = {code: ERROR_RESPONSES[code] for code in (408, 413, 415)}


def describe_common_answers(app: FastAPI) -> None:
    """Add to each operation the answers its kind may give, and to its string parameters the
    NUL rule: a NUL anywhere in a path or query is a 422 (`routing.RequestCheck`)."""

    def edit(schema: Schema) -> None:
        for route in iter_route_contexts(app.routes):
            if isinstance(route.route, APIRoute) and route.route.include_in_schema:
                item = schema["paths"][route.route.path_format]
                for method in route.route.methods or ():
                    _describe(item[method.lower()], method, route.route.dependant)

    extend_openapi(app, edit)


def _describe(operation: Schema, method: str, dependant: Dependant) -> None:
    for parameter in operation.get("parameters", ()):
        _forbid_nul(parameter["schema"])
    answers = {422: ERROR_RESPONSES[422]}
    if reads_body(method):
        answers |= _BODY_ANSWERS
    if _uses(dependant, BACKING_SERVICES):
        answers[503] = ERROR_RESPONSES[503]
    for code, answer in answers.items():
        operation["responses"].setdefault(str(code), answer)


def _forbid_nul(schema: Schema) -> None:
    """A free-form string parameter gets the NUL rule as its pattern (a format, an enum or a
    pattern of its own already rules NUL out)."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string" and not branch.keys() & {"format", "enum", "pattern"}:
            branch["pattern"] = NO_NUL_PATTERN


def _uses(dependant: Dependant, calls: frozenset[Callable[..., Any]]) -> bool:
    return any(d.call in calls or _uses(d, calls) for d in dependant.dependencies)
