"""Hostile uploads against a real `docingest api` process, and the per-key rate limit.

Huge bodies (declared or chunked) and slow ones are refused while the API process's memory
stays flat; the client here is a raw socket, so the test controls every byte and every pause.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from docingest.api import create_app
from docingest.db import migrate
from docingest.keys import ApiKey, Scope, digest, generate_key
from tests.helpers import make_settings

MAX_BODY_BYTES = 1 << 20
BODY_TIMEOUT_SECONDS = 2
CHUNK = b"a" * (256 << 10)
KEY = generate_key()
API_KEYS = ApiKey("loader", frozenset({Scope.INGEST, Scope.READ}), digest(KEY)).env_entry()


def chunked(total: int) -> Iterator[bytes]:
    framed = f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n"
    for _ in range(total // len(CHUNK)):
        yield framed
    yield b"0\r\n\r\n"


# --- per-key rate limit (in-process app: the limiter lives in the API process) ---------------

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(
    redis_url: str, model_path: Path, tmp_path: Path
) -> Iterator[Callable[..., TestClient]]:
    database_url = f"sqlite:///{tmp_path / 'rate.db'}"
    migrate(database_url)
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = make_settings(database_url, redis_url, model_path, tmp_path, **overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(make_client: ClientFactory) -> None:
    other = generate_key()
    keys = f"{API_KEYS},other:read:{digest(other)}"
    client = make_client(api_keys=keys, rate_limit_per_minute=3)
    headers = {"Authorization": f"Bearer {KEY}"}
    statuses = [client.get("/failures", headers=headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = client.get("/failures", headers=headers)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert "Rate limit" in refused.json()["detail"]
    # Counted per key: another key still gets in.
    assert client.get("/failures", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_a_keys_own_limit_overrides_the_default(make_client: ClientFactory, tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(ApiKey("slow", frozenset({Scope.READ}), digest(KEY), 1).toml_entry())
    client = make_client(api_keys_file=path, rate_limit_per_minute=1000)
    headers = {"Authorization": f"Bearer {KEY}"}
    assert [client.get("/failures", headers=headers).status_code for _ in range(2)] == [200, 429]
    assert int(client.get("/failures", headers=headers).headers["retry-after"]) == 60
