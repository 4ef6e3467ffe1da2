"""Access control over every route of the app, API keys, CORS, and what must never leak.

The route table is checked against `app.routes`: a route added without an entry here fails
`test_every_route_is_in_the_table`, so nobody adds an endpoint without deciding who may call it.
"""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from docingest.api import create_app
from docingest.api.auth import OpenExposureError
from docingest.cli import app as cli
from docingest.cli.keys import refuse_open_exposure
from docingest.embedded import free_port
from docingest.keys import ApiKey, Keyring, Scope, digest, generate_key, load_keys_file
from docingest.settings import PublicEndpoint, Settings, mask_password
from tests.helpers import make_settings, migrated_sqlite

# (method, path) -> the scope it needs (a tuple: any one of them), or the PUBLIC_ENDPOINTS name
# that opens it (open by default when that name is in the default PUBLIC_ENDPOINTS).
EXPECTED: dict[tuple[str, str], Scope | tuple[Scope, ...] | PublicEndpoint] = {
    ("POST", "/documents"): Scope.INGEST,
    ("POST", "/documents/bulk"): Scope.INGEST,
    # A reviewer (`label`) reads what it reviews.
    ("GET", "/documents"): (Scope.READ, Scope.LABEL),
    ("GET", "/documents/{document_id}"): (Scope.READ, Scope.LABEL),
    ("GET", "/documents/{document_id}/status"): Scope.READ,
    ("DELETE", "/documents/{document_id}"): Scope.ADMIN,
    ("PUT", "/documents/{document_id}/label"): Scope.LABEL,
    ("DELETE", "/documents/{document_id}/label"): Scope.LABEL,
    ("GET", "/documents/{document_id}/label/history"): (Scope.READ, Scope.LABEL),
    ("GET", "/review/queue"): Scope.LABEL,
    ("GET", "/changes"): Scope.READ,
    ("GET", "/changes/head"): Scope.READ,
    ("GET", "/webhooks"): Scope.ADMIN,
    ("POST", "/webhooks"): Scope.ADMIN,
    ("GET", "/webhooks/{webhook_id}"): Scope.ADMIN,
    ("DELETE", "/webhooks/{webhook_id}"): Scope.ADMIN,
    ("POST", "/webhooks/{webhook_id}/resume"): Scope.ADMIN,
    ("GET", "/failures"): Scope.READ,
    ("GET", "/failures/dead-letters"): Scope.READ,
    ("POST", "/failures/replay"): Scope.ADMIN,
    ("GET", "/model"): Scope.READ,
    ("GET", "/models"): Scope.READ,
    ("GET", "/models/{version}"): Scope.READ,
    ("GET", "/models/{version}/confusion-matrix.png"): Scope.READ,
    ("POST", "/models/{version}/activate"): Scope.ADMIN,
    ("GET", "/stats"): Scope.READ,
    ("GET", "/metrics"): "metrics",
    ("GET", "/health"): "health",
    ("GET", "/ready"): "ready",
    # H3's: an HTML page and its static files, no data (its JS sends the key).
    ("GET", "/dashboard"): "dashboard",
    ("GET", "/dashboard/{name}"): "dashboard",
    ("GET", "/review"): "dashboard",
    ("GET", "/review/{name}"): "dashboard",
    ("GET", "/openapi.json"): "docs",
    ("GET", "/docs"): "docs",
    ("GET", "/docs/oauth2-redirect"): "docs",
    ("GET", "/redoc"): "docs",
}
# The endpoints that answer without a key unless PUBLIC_ENDPOINTS says otherwise.
PUBLIC_BY_DEFAULT = Settings(_env_file=None).public_endpoints
PATH_VALUES = {"document_id": str(uuid.uuid4()), "version": "no-such-version", "name": "app.js"}

# What a public endpoint needs once closed (left out of PUBLIC_ENDPOINTS): `read`, and for the
# review page a reviewer's `label` too.
CLOSED_NEEDS = {path: {Scope.READ, Scope.LABEL} for path in ("/review", "/review/{name}")}
SCOPES = {
    "ingester": {Scope.INGEST},
    "reader": {Scope.READ},
    "labeller": {Scope.LABEL},
    "admin": {Scope.ADMIN},
    "writer": {Scope.INGEST, Scope.READ},
}
SECRETS = {name: generate_key() for name in SCOPES}
API_KEYS = ",".join(
    ApiKey(name, frozenset(SCOPES[name]), digest(secret)).env_entry()
    for name, secret in SECRETS.items()
)


def routes() -> list[tuple[str, str]]:
    """Every (method, path) the app serves; HEAD mirrors GET and is left out."""
    app = create_app(Settings(_env_file=None))
    return sorted(
        (method, str(route.path_format))
        for route in iter_route_contexts(app.routes)
        for method in route.methods or ()
        if method != "HEAD"
    )


ROUTES = routes()


def url(path: str) -> str:
    return path.format(**{name: PATH_VALUES.get(name, "1") for name in _names(path)})


def _names(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One database for the module: its hundreds of requests only read or are refused."""
    return migrated_sqlite(tmp_path_factory.mktemp("auth"))


ClientFactory = Callable[..., TestClient]


@pytest.fixture(scope="module")
def make_client(
    sqlite_url: str,
    redis_server_url: str,
    model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ClientFactory]:
    """TestClients of apps with the given settings, over the suite's Redis and one SQLite."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = make_settings(
            sqlite_url, redis_server_url, model_path, tmp_path_factory.mktemp("d"), **overrides
        )
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def keyed(make_client: ClientFactory) -> TestClient:
    return make_client(api_keys=API_KEYS)


@pytest.fixture(scope="module")
def closed(make_client: ClientFactory) -> TestClient:
    """Nothing public: even /health needs a key."""
    return make_client(api_keys=API_KEYS, public_endpoints=frozenset())


@pytest.fixture(scope="module")
def open_mode(make_client: ClientFactory) -> TestClient:
    """No key configured, nothing declared public."""
    return make_client(public_endpoints=frozenset())


def call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> int:
    body: dict[str, str] | None = {} if method in ("POST", "PUT", "PATCH") else None
    response = client.request(method, url(path), headers=headers, json=body)
    assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
    if response.status_code in (401, 403):
        assert response.headers["content-type"] == "application/json"
        assert isinstance(response.json()["detail"], str)
    if response.status_code == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    return int(response.status_code)


def test_every_route_is_in_the_table() -> None:
    missing = [route for route in ROUTES if route not in EXPECTED]
    assert not missing, f"routes with no expected scope in this module's EXPECTED: {missing}"


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_route_needs_its_scope(
    method: str, path: str, keyed: TestClient, closed: TestClient
) -> None:
    """{no key, unknown key, key without the scope, key with it} -> 401, 401, 403, allowed."""
    expected = EXPECTED.get((method, path))
    assert expected is not None, f"{method} {path} has no entry in EXPECTED"
    if isinstance(expected, tuple):
        needed, client = set(expected), keyed
    elif isinstance(expected, Scope):
        needed, client = {expected}, keyed
    else:
        # Open by default, or closed (then it needs a key) when the operator says so.
        needed, client = CLOSED_NEEDS.get(path, {Scope.READ}), closed
        public_status = call(keyed, method, path, {})
        opened = expected in PUBLIC_BY_DEFAULT
        assert (public_status not in (401, 403)) == opened, (method, path, public_status)
    assert call(client, method, path, {}) == 401
    assert call(client, method, path, {"Authorization": f"Bearer {generate_key()}"}) == 401
    assert call(client, method, path, {"Authorization": f"Basic {SECRETS['admin']}"}) == 401
    for name, scopes in SCOPES.items():
        allowed = bool(scopes & (needed | {Scope.ADMIN}))
        assert (call(client, method, path, bearer(name)) not in (401, 403)) == allowed, name


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_open_mode_lets_everyone_in(method: str, path: str, open_mode: TestClient) -> None:
    assert call(open_mode, method, path, {}) not in (401, 403)


def test_metrics_can_be_opened(make_client: ClientFactory) -> None:
    client = make_client(api_keys=API_KEYS, public_endpoints={"metrics"})
    assert call(client, "GET", "/metrics", {}) == 200


def test_the_schema_says_which_key_each_operation_needs(keyed: TestClient) -> None:
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    replay = schema["paths"]["/failures/replay"]["post"]
    assert replay["security"] == [{"apiKey": []}]
    assert {"401", "403"} <= set(replay["responses"])
    assert "security" not in schema["paths"]["/health"]["get"]


# --- keys ---------------------------------------------------------------------------------------


def test_a_key_is_known_by_its_digest_only() -> None:
    secret = generate_key()
    keyring = Keyring([ApiKey("bot", frozenset({Scope.READ}), digest(secret))])
    found = keyring.find(secret)
    assert found is not None
    assert found.name == "bot"
    assert keyring.find(secret + "x") is None
    assert keyring.find(digest(secret)) is None  # the stored digest is not a key
    assert secret not in repr(found)


def test_the_keys_file(tmp_path: Path) -> None:
    secret = generate_key()
    key = ApiKey("bot", frozenset({Scope.INGEST}), digest(secret), rate_limit_per_minute=7)
    path = tmp_path / "keys.toml"
    path.write_text(key.toml_entry())
    assert load_keys_file(path) == [key]
    path.write_text(key.toml_entry().replace('"ingest"', '"root"'))
    with pytest.raises(ValueError, match="scopes must be among"):
        load_keys_file(path)


@pytest.mark.parametrize(
    "entry",
    [
        "bot:read",  # no digest
        "bot:read:" + "0" * 63,  # too short
        "bot::" + "0" * 64,  # no scope
        "bot:root:" + "0" * 64,  # unknown scope
        "b/t:read:" + "0" * 64,  # a name logs could not hold as is
    ],
)
def test_a_bad_api_keys_entry_stops_the_app(entry: str) -> None:
    with pytest.raises(ValueError):
        create_app(Settings(_env_file=None, api_keys=entry))


def test_keys_create_prints_a_key_that_works(make_client: ClientFactory) -> None:
    result = CliRunner().invoke(cli, ["keys", "create", "bot", "--scope", "read"])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    entry = next(line for line in result.stderr.splitlines() if line.startswith("bot:"))
    assert entry == f"bot:read:{digest(secret)}"
    client = make_client(api_keys=entry)
    assert call(client, "GET", "/failures", {"Authorization": f"Bearer {secret}"}) == 200
    assert call(client, "POST", "/documents", {"Authorization": f"Bearer {secret}"}) == 403


@pytest.mark.parametrize(
    ("host", "keys", "allow", "refused"),
    [
        ("127.0.0.1", "", False, False),
        ("localhost", "", False, False),
        ("::1", "", False, False),
        ("0.0.0.0", "", False, True),
        ("192.168.1.10", "", False, True),
        ("myhost", "", False, True),
        ("0.0.0.0", "", True, False),
        ("0.0.0.0", API_KEYS, False, False),
    ],
)
def test_open_mode_is_refused_beyond_loopback(
    host: str, keys: str, allow: bool, refused: bool
) -> None:
    """By the CLI for the host it binds, and by the app itself for its HOST setting."""
    settings = Settings(_env_file=None, api_keys=keys, allow_open_access=allow)
    app_settings = settings.model_copy(update={"host": host})
    if refused:
        with pytest.raises(typer.Exit):
            refuse_open_exposure(settings, host)
        with pytest.raises(OpenExposureError, match=f"refusing to serve on {host} without API"):
            create_app(app_settings)
    else:
        refuse_open_exposure(settings, host)
        create_app(app_settings)


def test_uvicorn_refuses_to_serve_an_open_app_beyond_loopback(tmp_path: Path) -> None:
    """`uvicorn docingest.api:app` with HOST=0.0.0.0 and no key stops at start-up, saying why."""
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEYS", "API_KEYS_FILE")}
    env |= {"HOST": "0.0.0.0", "ALLOW_OPEN_ACCESS": "false"}
    command = [sys.executable, "-m", "uvicorn", "docingest.api:app", "--port", str(free_port())]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, timeout=60)
    assert result.returncode != 0
    assert b"refusing to serve on 0.0.0.0 without API keys" in result.stderr


JSON_ROUTES = [
    ("POST", "/documents"),
    ("POST", "/documents/bulk"),
    ("POST", "/failures/replay"),
    ("POST", "/models/no-such-model/activate"),
    ("DELETE", f"/documents/{uuid.UUID(int=1)}"),
]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_a_body_must_be_json(
    method: str, path: str, content_type: str, open_mode: TestClient, keyed: TestClient
) -> None:
    """What a browser sends across sites without a preflight, HTML forms' types, is refused."""
    headers = {"Content-Type": content_type} if content_type else {}
    for client, auth in ((open_mode, {}), (keyed, bearer("admin"))):
        response = client.request(
            method, path, content=b'[{"content": "x"}]', headers=headers | auth
        )
        assert response.status_code == 415, response.text
        assert "application/json" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_a_compressed_body_is_refused_with_what_is_taken(
    method: str, path: str, open_mode: TestClient
) -> None:
    """Not read as JSON and refused as invalid, which would send a client looking for a typo."""
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = open_mode.request(method, path, content=gzip.compress(b"{}"), headers=headers)
    assert response.status_code == 415, response.text
    assert response.headers["accept-encoding"] == "identity"
    assert "Content-Encoding" in response.json()["detail"]
    headers["Content-Encoding"] = "identity"
    assert open_mode.post("/documents", json={"content": "x"}, headers=headers).status_code == 202


def test_ndjson_only_where_it_is_taken(open_mode: TestClient) -> None:
    body = b'{"content": "one"}\n{"content": "two"}\n'
    ndjson = {"Content-Type": "application/x-ndjson"}
    assert open_mode.post("/documents/bulk", content=body, headers=ndjson).status_code == 202
    assert open_mode.post("/documents", content=body[:18], headers=ndjson).status_code == 415
    json = {"Content-Type": "application/json; charset=utf-8"}
    assert open_mode.post("/documents", content=body[:18], headers=json).status_code == 202


FOREIGN = [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://localhost:9999", "Host": "localhost:8000"},
    {"Host": "evil.example"},
    {"Host": "rebound.evil.example:8000", "Origin": "http://rebound.evil.example:8000"},
    {"Host": "192.168.1.10:8000"},
]


@pytest.mark.parametrize("headers", FOREIGN, ids=lambda h: " ".join(h.values()))
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/documents"), ("POST", "/failures/replay"), ("GET", "/documents")],
)
def test_open_mode_refuses_other_sites_and_hosts(
    method: str, path: str, headers: dict[str, str], open_mode: TestClient
) -> None:
    """A page of another site (Origin) cannot write, replay or read; nor one reached through
    DNS rebinding (its Host is the attacker's name)."""
    response = open_mode.request(method, path, json={"content": "x"}, headers=headers)
    assert response.status_code == 403, response.text
    assert "open mode" in response.json()["detail"]


def test_open_mode_answers_its_own_pages_and_cors_origins(make_client: ClientFactory) -> None:
    client = make_client(cors_origins=("https://app.example",))
    for headers in (
        {"Host": "localhost:8000", "Origin": "http://localhost:8000"},
        {"Host": "127.0.0.1:8000"},
        {"Host": "[::1]:8000"},
        {"Origin": "https://app.example"},
    ):
        response = client.post("/documents", json={"content": "x"}, headers=headers)
        assert response.status_code == 202, (headers, response.text)
    assert response.headers["access-control-allow-origin"] == "https://app.example"


def test_the_api_command_refuses_to_serve_everyone_openly(monkeypatch: pytest.MonkeyPatch) -> None:
    from docingest.settings import get_settings

    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.delenv("API_KEYS", raising=False)
    monkeypatch.delenv("API_KEYS_FILE", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["api"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in result.stderr


# --- CORS, leaks -------------------------------------------------------------------


def test_cors_is_off_by_default(keyed: TestClient) -> None:
    response = keyed.options(
        "/documents",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in response.headers


def test_cors_origins_are_allowed_when_configured(make_client: ClientFactory) -> None:
    client = make_client(api_keys=API_KEYS, cors_origins=("https://app.example",))
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = client.options("/documents", headers={"Origin": "https://app.example"} | preflight)
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = client.options("/documents", headers={"Origin": "https://evil.example"} | preflight)
    assert "access-control-allow-origin" not in other.headers


def test_no_error_leaks_a_password_sql_or_a_key(
    redis_server_url: str, model_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that refuses connections: a JSON 503, and neither the answer nor the logs
    carry its password, SQL, a traceback or the caller's key."""
    password = "hunter2-" + uuid.uuid4().hex
    settings = make_settings(
        f"postgresql://docingest:{password}@127.0.0.1:9/docingest",
        f"redis://:{password}@127.0.0.1:9/0",
        model_path,
        tmp_path,
        api_keys=API_KEYS,
    )
    assert password not in settings.masked_database_url()
    assert password not in mask_password(settings.broker_url)
    assert password not in repr(settings)
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get(f"/documents/{uuid.uuid4()}", headers=bearer("reader"))
        ready = client.get("/ready")
    assert response.status_code == 503
    assert ready.status_code == 503
    for text in (response.text, ready.text, caplog.text):
        for secret in (password, SECRETS["reader"], "SELECT", "Traceback"):
            assert secret not in text, (secret, text[:500])
