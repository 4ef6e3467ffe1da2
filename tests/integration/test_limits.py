"""Hostile uploads against a real `docingest api` process, and the per-key rate limit.

Huge bodies (declared or chunked) and slow ones are refused while the API process's memory
stays flat; the client here is a raw socket, so the test controls every byte and every pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from docingest.api import create_app
from docingest.api.auth import Requirement, RouteRequirements
from docingest.db import migrate
from docingest.keys import ApiKey, Scope, digest, generate_key
from docingest.settings import Settings
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


# --- refused from the headers, and the bytes buffered at once (in-process app, raw ASGI) --------
# Each request is driven by hand: the test decides when (and whether) body bytes arrive, so an
# answer that comes while the body is withheld was decided before any of it was read.

BIG = 1 << 20  # MAX_BODY_BYTES of these apps
ANSWER_SECONDS = 3.0  # far below BODY_TIMEOUT_SECONDS: a prompt answer, not the 408


class Exchange:
    """One HTTP request to an ASGI app, its body fed by the test."""

    def __init__(
        self, app: Any, method: str, path: str, key: str, *, length: int | None = None
    ) -> None:
        headers = [
            (b"host", b"test"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
        ]
        headers.append(
            (b"transfer-encoding", b"chunked")
            if length is None
            else (b"content-length", str(length).encode())
        )
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.start: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.body = b""
        self.reads_before_answer = 0  # body messages the app took before it answered
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        message = await self.incoming.get()
        if not self.start.done() and message["type"] == "http.request":
            self.reads_before_answer += 1
        return message

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.start.set_result(message)
        else:
            self.body += message.get("body", b"")

    def feed(self, chunk: bytes, *, more: bool = True) -> None:
        self.incoming.put_nowait({"type": "http.request", "body": chunk, "more_body": more})

    async def status(self, within: float = ANSWER_SECONDS) -> int:
        """The answer's status code; TimeoutError if none came `within` seconds."""
        start = await asyncio.wait_for(asyncio.shield(self.start), within)
        return int(start["status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.start.result()["headers"]).get(name)

    async def close(self) -> None:
        self.incoming.put_nowait({"type": "http.disconnect"})
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


def run_app(settings: Settings, scenario: Callable[[Any], Awaitable[None]]) -> None:
    """`scenario(app)` inside the app's lifespan, on an event loop of its own."""

    async def main() -> None:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            await scenario(app)

    asyncio.run(main())


@pytest.fixture
def app_settings(redis_url: str, model_path: Path, tmp_path: Path) -> Callable[..., Settings]:
    database_url = f"sqlite:///{tmp_path / 'limits.db'}"
    migrate(database_url)

    def make(**overrides: Any) -> Settings:
        return make_settings(
            database_url, redis_url, model_path, tmp_path, max_body_bytes=BIG, **overrides
        )

    return make


def keys(**scopes: frozenset[Scope]) -> tuple[str, dict[str, str]]:
    """API_KEYS for keys of these names and scopes, and each name's secret."""
    secrets = {name: generate_key() for name in scopes}
    entries = [ApiKey(n, s, digest(secrets[n])).env_entry() for n, s in scopes.items()]
    return ",".join(entries), secrets


def test_a_key_without_the_routes_scope_is_refused_before_its_body(
    app_settings: Callable[..., Settings],
) -> None:
    """A read key declaring a bulk body just under the limit: 403 from the headers alone."""
    api_keys, secret = keys(reader=frozenset({Scope.READ}))

    async def scenario(app: Any) -> None:
        for path in ("/documents/bulk", "/documents"):
            exchange = Exchange(app, "POST", path, secret["reader"], length=BIG - 1)
            try:
                assert await exchange.status() == 403
                assert exchange.reads_before_answer == 0
                assert b"lacks the 'ingest' scope" in exchange.body
            finally:
                await exchange.close()

    run_app(app_settings(api_keys=api_keys), scenario)


def test_a_rate_limited_key_is_refused_before_its_body(
    app_settings: Callable[..., Settings],
) -> None:
    api_keys, secret = keys(loader=frozenset({Scope.INGEST}))

    async def scenario(app: Any) -> None:
        body = b'{"content": "the one request a minute allows"}'
        first = Exchange(app, "POST", "/documents", secret["loader"], length=len(body))
        first.feed(body, more=False)
        assert await first.status() == 202
        await first.close()
        second = Exchange(app, "POST", "/documents/bulk", secret["loader"], length=BIG - 1)
        try:
            assert await second.status() == 429
            assert second.reads_before_answer == 0
            assert second.header(b"retry-after") is not None
        finally:
            await second.close()

    run_app(app_settings(api_keys=api_keys, rate_limit_per_minute=1), scenario)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_bodies_beyond_the_buffer_bound_get_503_and_small_ones_still_pass(
    app_settings: Callable[..., Settings], framing: str
) -> None:
    """Three big bodies held open fill MAX_BUFFERED_BYTES: a fourth (declared, or chunked and
    growing) waits briefly, then gets 503 + Retry-After; another client's small POST still gets
    its 202, and the bytes come back once the big ones are done."""
    api_keys, secret = keys(
        loader=frozenset({Scope.INGEST}), other=frozenset({Scope.INGEST, Scope.READ})
    )

    async def small_post() -> int:
        body = b'{"content": "a small document from another client"}'
        small = Exchange(app_, "POST", "/documents", secret["other"], length=len(body))
        small.feed(body, more=False)
        try:
            return await small.status()
        finally:
            await small.close()

    async def scenario(app: Any) -> None:
        nonlocal app_
        app_ = app
        holders = [
            Exchange(app, "POST", "/documents/bulk", secret["loader"], length=BIG) for _ in range(3)
        ]
        for holder in holders:
            holder.feed(b"[" + b" " * 1000)  # started, then idle: its reservation is held
        await asyncio.sleep(0.2)
        length = None if framing == "chunked" else BIG
        late = Exchange(app, "POST", "/documents/bulk", secret["loader"], length=length)
        if length is None:
            for _ in range(8):
                late.feed(b" " * (BIG // 8))
        try:
            assert await late.status() == 503
            assert late.header(b"retry-after") == b"5"
            assert await small_post() == 202
        finally:
            for exchange in (*holders, late):
                await exchange.close()
        # The holders gone, their bytes are free: a big body is read again.
        again = Exchange(app, "POST", "/documents/bulk", secret["loader"], length=BIG)
        again.feed(b"[" + b" " * (BIG - 2) + b"]", more=False)
        try:
            assert await again.status() == 422  # read, parsed: an empty array
        finally:
            await again.close()

    app_: Any = None
    settings = app_settings(api_keys=api_keys, max_buffered_bytes=3 * BIG + BIG // 2)
    run_app(settings, scenario)


def _declared_requirements(route: Any) -> set[Requirement]:
    """The `Requirement`s FastAPI runs for a route: its whole dependency tree, walked."""
    found: set[Requirement] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, Requirement):
            found.add(dependant.call)
        pending += dependant.dependencies
    return found


def test_the_gate_asks_what_each_route_declares(app_settings: Callable[..., Settings]) -> None:
    """For every route that reads a body, the requirement the Gate checks before the body is the
    one FastAPI runs for the route: the Gate cannot drift from the routes."""
    app = create_app(app_settings(api_keys=API_KEYS))
    table = RouteRequirements(app.routes)
    checked = 0
    for route in iter_route_contexts(app.routes):
        for method in sorted(set(route.methods or ()) - {"GET", "HEAD", "OPTIONS"}):
            path = re.sub(r"\{[^}]*\}", str(uuid.uuid4()), route.path_format)
            scope = {"type": "http", "method": method, "path": path, "root_path": ""}
            assert {table.of(scope)} == _declared_requirements(route), (method, path)
            checked += 1
    assert checked >= 5
