"""The API does what its OpenAPI document says, and the document says what the API does."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from docingest.api.routing import NUL_MESSAGE


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
