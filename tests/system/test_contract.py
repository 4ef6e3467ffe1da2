"""The API does what its OpenAPI document says, and the document says what the API does.

Schemathesis, run as a client would run it (its CLI, tests/contract.toml), tests a real
`docingest api` process with a worker on PostgreSQL and Redis, once with an admin key and once
in open mode; a client's models generated from /openapi.json parse real answers. Faster checks
of the same rules run in-process (tests/integration/test_contract.py).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from docingest.keys import ApiKey, Scope, digest, generate_key
from tests.faults import Processes, service_env
from tests.helpers import UNAMBIGUOUS

CONFIG = Path(__file__).resolve().parents[1] / "contract.toml"
# Coverage cases are built at the limits: small ones keep those requests small and quick.
LIMITS = {"MAX_DOCUMENT_CHARS": "1000", "MAX_BULK_DOCUMENTS": "100"}


@dataclass(frozen=True)
class Service:
    base_url: str
    key: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}


@pytest.fixture(params=["admin key", "open mode"])
def service(
    request: pytest.FixtureRequest,
    postgres_url: str,
    redis_url: str,
    model_path: Path,
    tmp_path: Path,
) -> Iterator[Service]:
    """A `docingest api` process and a worker, as in production, on PostgreSQL."""
    env = service_env(
        database_url=postgres_url,
        broker_url=redis_url,
        model_path=model_path,
        data_dir=tmp_path,
        **LIMITS,
    )
    key = generate_key() if request.param == "admin key" else None
    if key:
        env["API_KEYS"] = ApiKey("contract", frozenset({Scope.ADMIN}), digest(key)).env_entry()
    processes = Processes(tmp_path, env)
    try:
        processes.worker()
        yield Service(processes.api().base_url, key)
    finally:
        processes.stop_all()


def test_the_api_keeps_its_openapi_contract(service: Service, tmp_path: Path) -> None:
    """Every phase (examples, coverage, fuzzing, stateful), every check but the two that
    tests/contract.toml leaves out and says why: zero failures."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
        "run", f"{service.base_url}/openapi.json",
    ]  # fmt: skip
    if service.key:
        command += ["--header", f"Authorization: Bearer {service.key}"]
    schema = httpx.get(f"{service.base_url}/openapi.json", timeout=10).json()
    operations = sum(len(item) for item in schema["paths"].values())
    started = time.monotonic()
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=240)
    print(f"schemathesis ran {time.monotonic() - started:.0f} s:\n{run.stdout[-20_000:]}")
    assert run.returncode == 0, f"{run.stderr[-5000:]}\n{run.stdout[-15_000:]}"
    assert f"Tested: {operations}\n" in run.stdout, "some operations were not tested"


# --- the same rules, in-process -------------------------------------------------------------


# --- a client generated from the document -----------------------------------------------------


def generated_models(schema_url: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The document's models, as datamodel-code-generator writes them for a client; imported
    as a module of its own (pydantic resolves its annotations there) for this test only."""
    (folder / "openapi.json").write_bytes(httpx.get(schema_url, timeout=10).content)
    output = folder / "api_models.py"
    subprocess.run(
        [
            sys.executable, "-m", "datamodel_code_generator",
            "--input", str(folder / "openapi.json"), "--input-file-type", "openapi",
            "--output", str(output), "--output-model-type", "pydantic_v2.BaseModel",
            "--no-formatters", "--disable-timestamp",
        ],
        check=True,
    )  # fmt: skip
    spec = importlib.util.spec_from_file_location("api_models", output)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def stored(http: httpx.Client, document_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = http.get(f"/documents/{document_id}")
        if response.status_code == 200:
            document: dict[str, Any] = response.json()
            return document
        assert response.status_code == 404, response.text
        time.sleep(0.1)
    raise TimeoutError(f"document {document_id} not stored after {timeout} s")


@pytest.mark.parametrize("service", ["open mode"], indirect=True)
def test_a_generated_client_parses_real_answers(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = generated_models(f"{service.base_url}/openapi.json", tmp_path, monkeypatch)
    with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as http:
        answer = http.post("/documents", json={"content": UNAMBIGUOUS["sports"]})
        accepted = models.DocumentAccepted.model_validate(answer.json())
        assert answer.headers["location"] == f"/documents/{accepted.id}/status"
        status = models.DocumentStatus.model_validate(http.get(answer.headers["location"]).json())
        assert status.id == accepted.id
        document = models.DocumentOut.model_validate(stored(http, str(accepted.id)))
        assert (document.id, document.category) == (accepted.id, "sports")
        page = models.DocumentPage.model_validate(http.get("/documents").json())
        assert [item.id for item in page.items] == [accepted.id]
        bulk = http.post("/documents/bulk", json=[{"content": "x"}, {"content": " "}])
        assert models.BulkAccepted.model_validate(bulk.json()).rejected == 1
        refused = http.get("/documents", params={"cursor": "not a cursor"})
        assert refused.status_code == 422
        error = models.HTTPValidationError.model_validate(refused.json())
        assert error.detail[0].loc == ["query", "cursor"]
    # What the server refuses, the generated request model refuses too: the rules are declared.
    for content in ("", " \t\u3000", "a\x00b", "x" * 1001):
        with pytest.raises(ValueError, match="validation error"):
            models.DocumentIn(content=content)
