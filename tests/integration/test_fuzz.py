"""Hostile input: requests generated from the OpenAPI schema, and bodies built to hurt.

The app runs in-process (ASGI) on the suite's real Redis and a fresh SQLite database (PostgreSQL
where the database is the point). Whatever comes in, the answer is a JSON 4xx or a success,
never a 5xx and never a crash; and no accepted document can stop other documents from being
stored.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.python import asgi as schemathesis_asgi

from docingest.api import create_app
from docingest.api.bulk import NDJSON_TYPES
from docingest.connections import Connections, connected
from docingest.keys import ApiKey, Scope, digest, generate_key
from docingest.model.classifier import Classifier
from docingest.queue.names import DOCUMENTS_QUEUE
from docingest.settings import Settings
from docingest.worker.ingest import ingest
from tests.helpers import UNAMBIGUOUS, make_settings

MAX_BODY_BYTES = 256 * 1024
# The fuzzed app's limits, which its schema declares: small enough that any body the schema
# allows fits in MAX_BODY_BYTES (JSON escapes a character in at most 12 bytes), so that valid
# requests are accepted, and invalid ones refused with a 422 rather than a 413.
LIMITS: dict[str, Any] = {
    "max_body_bytes": MAX_BODY_BYTES,
    "max_document_chars": 1000,
    "max_bulk_documents": 10,
}
JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}
# Every request carries an admin key: the fuzzing reaches past access control.
ADMIN_KEY = generate_key()
API_KEYS = ApiKey("fuzz", frozenset({Scope.ADMIN}), digest(ADMIN_KEY)).env_entry()
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def fuzz_settings(database_url: str, redis_url: str, model_path: Path, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        redis_url,
        model_path,
        tmp_path,
        api_keys=API_KEYS,
        **LIMITS,
    )


@pytest.fixture
def fuzz_app(
    sqlite_url: str, redis_url: str, model_path: Path, tmp_path: Path
) -> Iterator[FastAPI]:
    app = create_app(fuzz_settings(sqlite_url, redis_url, model_path, tmp_path))
    try:
        yield app
    finally:
        # Schemathesis runs the app's lifespan itself and would keep it until exit.
        schemathesis_asgi.shutdown_lifespans()


@pytest.fixture
def client(
    sqlite_url: str, redis_url: str, model_path: Path, tmp_path: Path
) -> Iterator[TestClient]:
    app = create_app(fuzz_settings(sqlite_url, redis_url, model_path, tmp_path))
    with TestClient(app, raise_server_exceptions=False, headers=ADMIN) as client:
        yield client


# --- generated from the schema ------------------------------------------------------------------


def ndjson_body(context: object, value: Any) -> bytes:
    """The schema gives an NDJSON body as one string; anything else is sent as its JSON."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.encode("utf-8", "surrogatepass")


schemathesis.serializer(*NDJSON_TYPES)(ndjson_body)

# Each test's requests go to its own app (`fuzz_app`). The schema is open mode's (no security):
# with the keyed one, schemathesis would also send requests "without" the key, which the ADMIN
# header added to every request turns into accepted ones.
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None, **LIMITS)).openapi())

# Every check about what the API answers (tests/*/test_contract.py runs them all against real
# processes). negative_data_rejection does not apply to the bulk route, which by design answers
# 202 with a 422 per invalid item.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.positive_data_acceptance,
    checks.unsupported_method,
]


FEED_EXCEPTIONS = (checks.positive_data_acceptance, checks.negative_data_rejection)
# A webhook's URL valid in form may still lead nowhere public (a host that does not resolve, a
# private address): a 422 by design, as its schema says (tests/integration/test_webhooks.py).
WEBHOOK_EXCEPTIONS = (checks.positive_data_acceptance,)


@SCHEMA.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    database=None,
    derandomize=True,  # the same requests on every run: CI fails or passes for a reason
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_generated_requests_get_no_server_error(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    """Valid and invalid requests for every operation: never a 5xx, always what the schema says.

    A long poll on the feed holds its request for `wait` seconds when nothing comes (its waits
    are tested in test_changes.py): a generated wait is cut to 0.2 s, as tests/contract.toml
    does for the contract run."""
    if case.path == "/changes" and _seconds((case.query or {}).get("wait")) > 0.2:
        case.query = {**(case.query or {}), "wait": 0.2}
    selected = [
        check
        for check in CHECKS
        if not (check is checks.negative_data_rejection and case.path == "/documents/bulk")
        # A valid position the feed never handed out is a 410 by design (its schema says so);
        # and `?category=x` is how a one-item list is sent, which schemathesis counts as a
        # string violating the list's schema (the feed's own tests: test_changes.py).
        and not (case.path == "/changes" and check in FEED_EXCEPTIONS)
        and not ((case.method, case.path) == ("POST", "/webhooks") and check in WEBHOOK_EXCEPTIONS)
    ]
    case.call_and_validate(app=fuzz_app, checks=selected, headers=ADMIN)


def _seconds(value: object) -> float:
    """A generated `wait` as a number (examples give it as text); 0 for what is not one."""
    try:
        return float(str(value))
    except ValueError:
        return 0.0


# --- built by hand -----------------------------------------------------------------------------

DEEP = 100_000
HOSTILE: dict[str, tuple[str, str, dict[str, str], bytes]] = {
    "invalid UTF-8 in a document": (
        "POST", "/documents", JSON, b'{"content": "caf\xe9 \xff\xfe"}',
    ),
    "invalid UTF-8 in a bulk array": (
        "POST", "/documents/bulk", JSON, b'[{"content": "\xc3\x28 \xa0\xa1"}]',
    ),
    "a lone surrogate in a document": (
        "POST", "/documents", JSON, b'{"content": "abc \\ud800 def"}',
    ),
    "a lone surrogate in a bulk array": (
        "POST", "/documents/bulk", JSON, b'[{"content": "abc \\udfff"}]',
    ),
    "100,000 unclosed [ as a document": ("POST", "/documents", JSON, b"[" * DEEP),
    "100,000 unclosed [ as a bulk array": ("POST", "/documents/bulk", JSON, b"[" * DEEP),
    "100,000 nested arrays as a document": (
        "POST", "/documents", JSON, b"[" * DEEP + b"]" * DEEP,
    ),
    "100,000 nested arrays as content": (
        "POST", "/documents/bulk", JSON, b'[{"content": ' + b"[" * DEEP + b"]" * DEEP + b"}]",
    ),
    "20,000 nested objects as content": (
        "POST", "/documents", JSON, b'{"content": ' + b'{"a": ' * 20_000 + b"1" + b"}" * 20_001,
    ),
    "null": ("POST", "/documents", JSON, b"null"),
    "a number too large for a float": ("POST", "/documents", JSON, b'{"content": 1e999}'),
    "a number too large for a float, in bulk": (
        "POST", "/documents/bulk", JSON, b'[{"content": -1e999}]',
    ),
    "NaN": ("POST", "/documents", JSON, b'{"content": NaN}'),
    "Infinity": ("POST", "/documents", JSON, b'{"content": Infinity}'),
    "an id that is no UUID": ("POST", "/documents", JSON, b'{"id": "../../etc", "content": "x"}'),
    "an unknown field": ("POST", "/documents", JSON, b'{"content": "x", "admin": true}'),
    "blank content": ("POST", "/documents", JSON, b'{"content": " \\t\\n\\u3000"}'),
    "one document too many in bulk": (
        "POST", "/documents/bulk", JSON, b"[" + b",".join([b'{"content":"x"}'] * 10_001) + b"]",
    ),
    "an empty NDJSON body": ("POST", "/documents/bulk", NDJSON, b"\n \n\r\n"),
    "invalid UTF-8 in the path": ("GET", "/documents/%FF%FE%FD", {}, b""),
    "invalid UTF-8 in a query": ("GET", "/failures?limit=%FF", {}, b""),
    "a 5,000-digit integer in a query": ("GET", "/failures?offset=" + "9" * 5000, {}, b""),
    "an offset past 64 bits": ("GET", f"/failures?offset={2**63}", {}, b""),
}  # fmt: skip


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_bodies_get_a_json_4xx(name: str, client: TestClient, redis_url: str) -> None:
    method, path, headers, body = HOSTILE[name]
    response = client.request(method, path, headers=headers, content=body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == "application/json"
    assert "detail" in response.json()
    assert client.get("/ready").status_code == 200


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


OVERSIZED = b'{"content": "' + b"a" * (2 * MAX_BODY_BYTES) + b'"}'


@pytest.mark.parametrize("path", ["/documents", "/documents/bulk", "/failures/replay"])
@pytest.mark.parametrize("length", ["content-length", "chunked"])
def test_a_body_over_the_limit_is_a_json_413(path: str, length: str, client: TestClient) -> None:
    body: Any = OVERSIZED if length == "content-length" else chunks(OVERSIZED)
    response = client.post(path, headers=JSON, content=body)
    assert response.status_code == 413, response.text[:500]
    assert response.json() == {
        "detail": f"Request body is larger than the limit of {MAX_BODY_BYTES} bytes"
    }


# --- a document the database refuses ----------------------------------------------------------


def run_worker_once(connections: Connections, classifier: Classifier) -> list[str]:
    """A worker's job in-process: ingest each queued message once; return what the actor raised
    (Dramatiq would retry such a message, to the same end, then dead-letter it)."""
    consumer = connections.queue.broker.consume(DOCUMENTS_QUEUE, prefetch=100, timeout=200)
    raised = []
    try:
        for message in consumer:
            if message is None:
                break
            try:
                ingest(message.args[0], engine=connections.engine, classifier=classifier,
                       ledger=connections.ledger)  # fmt: skip
            except Exception as error:
                raised.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
            consumer.ack(message)
    finally:
        consumer.close()
    return raised


def test_a_nul_character_never_holds_its_batch_hostage(
    postgres_url: str, redis_url: str, model_path: Path, tmp_path: Path, classifier: Classifier
) -> None:
    """PostgreSQL text cannot hold NUL (U+0000). A document containing one must be refused (4xx),
    or be stored or recorded as failed without stopping the rest of its batch from being stored.
    """
    settings_ = fuzz_settings(postgres_url, redis_url, model_path, tmp_path)
    good = {"id": str(uuid.uuid4()), "content": UNAMBIGUOUS["sports"]}
    nul = {"id": str(uuid.uuid4()), "content": "an ordinary text with a \x00 inside"}
    with TestClient(create_app(settings_), raise_server_exceptions=False, headers=ADMIN) as client:
        response = client.post("/documents/bulk", json=[good, nul])
        assert response.status_code == 202, response.text
        items = response.json()["items"]
        assert items[0]["status"] == 202
        if items[1]["status"] != 202:
            assert 400 <= items[1]["status"] < 500  # refused at the door: nothing to store
            return

        with connected(settings_) as connections:
            raised = run_worker_once(connections, classifier)
        good_status = client.get(f"/documents/{good['id']}/status").json()
        nul_status = client.get(f"/documents/{nul['id']}/status").json()
        print(f"actor raised: {raised}; good: {good_status}; with NUL: {nul_status}")
        assert good_status["status"] == "stored", (good_status, raised)
        assert nul_status["status"] in ("stored", "failed"), (nul_status, raised)
