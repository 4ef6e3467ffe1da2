"""The service as users run it: real API and worker processes, started as the Procfile says."""

import http.client
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from docingest.embedded import free_port
from docingest.keys import digest, generate_key
from tests.faults import Processes, service_env
from tests.helpers import UNAMBIGUOUS

ROOT = Path(__file__).resolve().parents[2]


def procfile() -> dict[str, str]:
    entries = (line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line)
    return {name.strip(): command.strip() for name, command in entries}


def wait_until_up(base_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base_url} not ready after {timeout} s")


def wait_for_document(
    base_url: str, document_id: str, headers: dict[str, str] | None = None, timeout: float = 60
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{base_url}/documents/{document_id}", headers=headers, timeout=5)
        if response.status_code == 200:
            document: dict[str, object] = response.json()
            return document
        assert response.status_code == 404
        time.sleep(0.1)
    raise TimeoutError(f"document {document_id} not stored after {timeout} s")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal the main process, as a platform does, and wait for its graceful exit (`up` gives
    each of its processes 30 s: on a loaded CI machine the last can need most of it)."""
    process.send_signal(sig)
    try:
        return process.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


def post_each_category(base_url: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    ids = {}
    for category, text in UNAMBIGUOUS.items():
        response = httpx.post(
            f"{base_url}/documents", json={"content": text}, headers=headers, timeout=5
        )
        assert response.status_code == 202, response.text
        ids[category] = response.json()["id"]
    return ids


KEY = generate_key()
AUTHORIZED = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def procfile_service(
    postgres_url: str, redis_url: str, model_path: Path, tmp_path: Path
) -> Iterator[str]:
    """release, then web and worker, each run by a shell exactly as the Procfile writes it.

    The web process binds 0.0.0.0, which it refuses to do without API keys: it gets one.
    """
    port = free_port()
    env = os.environ | {
        "API_KEYS": f"e2e:ingest+read:{digest(KEY)}",
        "DATABASE_URL": postgres_url,
        "BROKER_URL": redis_url,
        "MODEL_PATH": str(model_path),
        "PORT": str(port),
        "WORKER_PROCESSES": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    entries = procfile()
    subprocess.run(["bash", "-c", entries["release"]], env=env, check=True, cwd=tmp_path)
    processes = [
        subprocess.Popen(["bash", "-c", f"exec {entries[name]}"], env=env, cwd=tmp_path,
                         start_new_session=True)
        for name in ("web", "worker")
    ]  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        # uvicorn re-raises the signal after its graceful shutdown, so the parent sees -SIGTERM.
        codes = [stop(process) for process in processes]
        assert codes in ([0, 0], [-signal.SIGTERM, 0]), f"web/worker exit codes {codes}"


def test_procfile_processes_classify_and_store(procfile_service: str) -> None:
    base_url = procfile_service
    wait_until_up(base_url)
    assert httpx.post(f"{base_url}/documents", json={"content": "x"}).status_code == 401
    ids = post_each_category(base_url, AUTHORIZED)
    for category, document_id in ids.items():
        document = wait_for_document(base_url, document_id, AUTHORIZED)
        assert document["category"] == category, document
        assert document["model_version"]


def test_an_idle_connection_outlives_the_clients_own_idle_expiry(
    procs: Processes, postgres_url: str, redis_url: str, model_path: Path, tmp_path: Path
) -> None:
    """A connection idle for 6 s still serves: with uvicorn's 5 s keep-alive the server closed it
    just as clients whose pools keep connections 5 s (httpx) sent on it, and they saw it dropped
    without an answer (once in 20,000 requests of a multi-host test)."""
    procs.env = service_env(
        database_url=postgres_url, broker_url=redis_url, model_path=model_path, data_dir=tmp_path
    )
    connection = http.client.HTTPConnection("127.0.0.1", procs.api().port, timeout=10)
    try:
        for pause in (0, 6):
            time.sleep(pause)
            connection.request("GET", "/health")  # the same socket: http.client keeps it open
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200, f"after {pause} s idle"
    finally:
        connection.close()


def test_make_run_all_in_one_on_the_embedded_default(model_path: Path, tmp_path: Path) -> None:
    """`docingest up`: embedded Redis, SQLite, API and worker; SIGINT stops everything cleanly."""
    port = free_port()
    unset = ("DATABASE_URL", "BROKER_URL", "REDIS_URL")
    env = {name: value for name, value in os.environ.items() if name not in unset}
    env |= {"MODEL_PATH": str(model_path), "PORT": str(port)}
    command = f"{shlex.quote(sys.executable)} -m docingest up"
    process = subprocess.Popen(shlex.split(command), env=env, cwd=tmp_path, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base_url)
        response = httpx.post(
            f"{base_url}/documents", json={"content": UNAMBIGUOUS["tech"]}, timeout=5
        )
        assert response.status_code == 202
        document = wait_for_document(base_url, response.json()["id"])
        assert document["category"] == "tech"
        assert (tmp_path / "var" / "docingest.db").exists()
        assert (tmp_path / "var" / "redis" / "appendonlydir").is_dir()
    finally:
        assert stop(process, signal.SIGINT) == 0
    leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline", "cwd"])
                 if p.info["cwd"] == str(tmp_path)]  # fmt: skip
    assert leftovers == []
