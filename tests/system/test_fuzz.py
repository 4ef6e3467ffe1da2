"""Hostile input: requests generated from the OpenAPI schema, and bodies built to hurt.

The app runs in-process (ASGI) on the suite's real Redis and a fresh SQLite database (PostgreSQL
where the database is the point). Whatever comes in, the answer is a JSON 4xx or a success,
never a 5xx and never a crash; and no accepted document can stop other documents from being
stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import schemathesis

from docingest.api.bulk import NDJSON_TYPES
from docingest.keys import ApiKey, Scope, digest, generate_key
from tests.faults import Processes, service_env
from tests.integration.test_fuzz import chunks, ndjson_body

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


# --- generated from the schema ------------------------------------------------------------------


schemathesis.serializer(*NDJSON_TYPES)(ndjson_body)


# --- built by hand -----------------------------------------------------------------------------


def test_a_real_server_answers_413_to_a_streamed_huge_body(
    sqlite_url: str, redis_url: str, model_path: Path, tmp_path: Path
) -> None:
    """Through uvicorn: 8 MiB against a 1 MiB limit, declared or chunked, is a 413 the client
    reads (not a reset connection), and the server keeps serving."""
    env = service_env(
        database_url=sqlite_url, broker_url=redis_url, model_path=model_path, data_dir=tmp_path
    )
    processes = Processes(tmp_path, env | {"MAX_BODY_BYTES": str(1 << 20)})
    try:
        api = processes.api()
        huge = b'{"content": "' + b"a" * (8 << 20) + b'"}'
        with httpx.Client(base_url=api.base_url, timeout=30) as http:
            for body in (huge, chunks(huge)):
                response = http.post("/documents", headers=JSON, content=body)
                assert response.status_code == 413
                assert "larger than the limit" in response.json()["detail"]
            assert http.get("/health").status_code == 200
    finally:
        processes.stop_all()


# --- a document the database refuses ----------------------------------------------------------
