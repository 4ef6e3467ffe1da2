"""The API does what its OpenAPI document says, and the document says what the API does.

Schemathesis, run as a client would run it (its CLI, tests/contract.toml), tests a real
`docingest api` process with a worker on PostgreSQL and Redis, once with an admin key and once
in open mode; a client's models generated from /openapi.json parse real answers. The HTTP API's
reference page, generated from the same document, is checked by tests/unit/test_reference.py.
Faster checks of the same rules run in-process.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from docingest.api import create_app
from docingest.api.bulk import NDJSON_PATTERN
from docingest.api.routing import NUL_MESSAGE
from docingest.schemas import CONTENT_PATTERN
from docingest.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


# --- the same rules, in-process -------------------------------------------------------------


def test_the_schema_carries_each_apps_own_limits() -> None:
    """Built per app: a second app with other limits leaves the first one's document as it was
    (the routes, and what they declare, are shared)."""
    first = create_app(Settings(_env_file=None, max_document_chars=123, max_bulk_documents=7))
    schema = first.openapi()
    create_app(Settings(_env_file=None, max_document_chars=5, max_bulk_documents=2)).openapi()
    content = schema["components"]["schemas"]["DocumentIn"]["properties"]["content"]
    assert (content["maxLength"], content["pattern"]) == (123, CONTENT_PATTERN)
    bulk = schema["paths"]["/documents/bulk"]["post"]["requestBody"]["content"]
    assert bulk["application/json"]["schema"] | {"items": None} == {
        "type": "array", "items": None, "minItems": 1, "maxItems": 7,
    }  # fmt: skip
    assert bulk["application/x-ndjson"]["schema"]["pattern"] == NDJSON_PATTERN


def test_a_202_points_to_the_status_and_links_to_the_reads() -> None:
    schema = create_app(Settings(_env_file=None)).openapi()
    accepted = schema["paths"]["/documents"]["post"]["responses"]["202"]
    assert accepted["headers"]["Location"]["required"]
    reads = {
        operation["operationId"]: path
        for path, item in schema["paths"].items()
        for operation in item.values()
    }
    links = accepted["links"]
    assert {name: reads[link["operationId"]] for name, link in links.items()} == {
        "status": "/documents/{document_id}/status",
        "document": "/documents/{document_id}",
    }
    assert {link["parameters"]["document_id"] for link in links.values()} == {"$response.body#/id"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/documents/bulk", "POST"),
        ("OPTIONS", f"/documents/{uuid.UUID(int=1)}", "DELETE, GET"),
        ("PUT", "/documents", "GET, POST"),
        ("DELETE", f"/documents/{uuid.UUID(int=1)}/status", "GET"),
        ("HEAD", "/health", "GET"),
    ],
)
def test_an_undeclared_method_is_a_405_allowing_every_method_of_the_path(
    method: str, path: str, allow: str, client: TestClient
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    if method != "HEAD":
        assert response.json() == {"detail": "Method Not Allowed"}


@pytest.mark.parametrize(
    ("method", "url", "loc"),
    [
        ("GET", "/documents?model_version=%00", ["query", "model_version"]),
        ("GET", "/documents?category=a%00b", ["query", "category"]),
        ("GET", "/models/a%00b", ["path", "version"]),
        ("POST", "/models/a%00b/activate", ["path", "version"]),
        ("GET", "/health?anything=%00", ["query", "anything"]),
    ],
)
def test_nul_in_a_parameter_is_a_422_naming_it(
    method: str, url: str, loc: list[str], client: TestClient
) -> None:
    """On PostgreSQL these were 500s: its text cannot hold NUL."""
    response = client.request(method, url)
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": [{"type": "value_error", "loc": loc, "msg": NUL_MESSAGE}]}


# --- a client generated from the document -----------------------------------------------------
