"""`docingest send` as a user runs it: a subprocess against real API and worker processes."""

import csv
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from docingest.cli import app
from docingest.embedded import free_port
from docingest.keys import digest, generate_key
from tests.faults import Processes, content_for, rows, service_env, wait_until

FRESH_ID = "0b0e8a0e-5f2b-4c53-9a43-2e6d1b9d7c01"


KEY = generate_key()


@pytest.fixture
def service(
    postgres_url: str, redis_url: str, model_path: Path, tmp_path: Path
) -> Iterator[Processes]:
    env = service_env(
        database_url=postgres_url,
        broker_url=redis_url,
        model_path=model_path,
        data_dir=tmp_path / "var",
        RETRY_AFTER_SECONDS="1",
        API_KEYS=f"sender:ingest:{digest(KEY)}",
    )
    processes = Processes(tmp_path, env)
    yield processes
    processes.stop_all()


def send_env(base_url: str) -> dict[str, str]:
    """The service asks for a key (with the `ingest` scope only): `send` reads it from here."""
    return os.environ | {"DOCINGEST_URL": base_url, "DOCINGEST_API_KEY": KEY, "COLUMNS": "200"}


def run_send(
    base_url: str, *args: str, stdin: bytes = b"", cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docingest", "send", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=send_env(base_url),
        timeout=120,
    )


def stored(database_url: str) -> dict[str, str]:
    return {document_id: content for document_id, content, _ in rows(database_url)}


def wait_stored(database_url: str, count: int) -> dict[str, str]:
    wait_until(lambda: len(stored(database_url)) >= count, 60, f"{count} documents stored")
    return stored(database_url)


def jsonl(documents: list[object]) -> bytes:
    return b"".join(orjson.dumps(document) + b"\n" for document in documents)


def test_every_input_kind_and_a_rejects_file_to_fix_and_resend(
    service: Processes, postgres_url: str, tmp_path: Path
) -> None:
    api = service.api()
    service.worker()
    jsonl_ids = [str(uuid.uuid4()) for _ in range(30)]
    lines = [{"id": i, "content": content_for(n, "jsonl")} for n, i in enumerate(jsonl_ids)]
    lines.insert(7, {"id": FRESH_ID, "title": "no content"})
    source = tmp_path / "docs.jsonl"
    source.write_bytes(jsonl([*lines, {"content": content_for(99, "no id")}]) + b"{not json\n")
    with (tmp_path / "docs.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "content"])
        writer.writerows([[str(uuid.uuid4()), content_for(n, "csv")] for n in range(10)])
        writer.writerow(["", content_for(10, "csv, no id")])
        writer.writerow(["not-a-uuid", content_for(11, "csv")])
    folder = tmp_path / "texts"
    folder.mkdir()
    for n in range(5):
        (folder / f"{n}.txt").write_text(content_for(n, "txt"))
    stdin = jsonl([{"content": content_for(n, "stdin")} for n in range(4)])

    inputs = [str(source), str(tmp_path / "docs.csv"), str(folder), "-"]
    done = run_send(api.base_url, *inputs, "--batch-size", "8", stdin=stdin, cwd=tmp_path)

    assert done.returncode == 1, done.stderr
    assert "51 accepted" in done.stderr, done.stderr
    assert "3 rejected" in done.stderr, done.stderr
    lines_out = (tmp_path / "rejects.jsonl").read_bytes().splitlines()
    rejected = sorted((orjson.loads(line) for line in lines_out), key=lambda r: r["line"])
    assert [(r["source"], r["line"]) for r in rejected] == [
        (str(source), 8),
        (str(tmp_path / "docs.csv"), 13),
        (str(source), 33),
    ]
    assert rejected[0]["document"] == {"id": FRESH_ID, "title": "no content"}
    assert rejected[1]["errors"][0]["loc"][-1] == "id"  # refused by the API, not here
    assert rejected[2]["raw"] == "{not json"
    assert rejected[2]["errors"][0]["type"] == "json_invalid"

    documents = wait_stored(postgres_url, 51)
    assert len(documents) == 51
    assert all(documents[i] == content_for(n, "jsonl") for n, i in enumerate(jsonl_ids))
    contents = set(documents.values())
    assert {content_for(n, "txt") for n in range(5)} <= contents
    assert {content_for(n, "stdin") for n in range(4)} <= contents
    assert content_for(10, "csv, no id") in contents

    # The user fixes the rejects file where it stands and sends it again.
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_bytes(jsonl([{"document": {"id": FRESH_ID, "content": content_for(1, "fixed")}}]))
    again = run_send(api.base_url, str(fixed), "--rejects", "again.jsonl", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 accepted" in again.stderr
    assert not (tmp_path / "again.jsonl").exists()
    assert wait_stored(postgres_url, 52)[FRESH_ID] == content_for(1, "fixed")


def test_retry_after_is_honoured_until_the_queue_drains(
    service: Processes, postgres_url: str, tmp_path: Path
) -> None:
    api = service.api(MAX_QUEUED_DOCUMENTS="20")
    source = tmp_path / "many.jsonl"
    source.write_bytes(jsonl([{"content": content_for(n, "burst")} for n in range(100)]))
    sending = subprocess.Popen(
        [sys.executable, "-m", "docingest", "send", str(source), "--batch-size", "10"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=send_env(api.base_url),
    )
    try:
        # No worker yet: the queue fills to the limit and the API answers 429 with Retry-After.
        with pytest.raises(subprocess.TimeoutExpired):
            sending.wait(3)
        service.worker()
        _, errors = sending.communicate(timeout=120)
    finally:
        sending.kill()
    assert sending.returncode == 0, errors
    assert "100 accepted" in errors, errors
    assert "requests retried" in errors, errors
    assert len(wait_stored(postgres_url, 100)) == 100


def test_usage_and_connection_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    nowhere = f"http://127.0.0.1:{free_port()}"

    def send(path: Path) -> tuple[int, str]:
        result = runner.invoke(app, ["send", str(path), "--url", nowhere])
        return result.exit_code, " ".join(result.output.split())  # unwrapped

    code, output = send(tmp_path / "missing.jsonl")
    assert code == 2
    assert "missing.jsonl: no such file" in output

    (tmp_path / "bad.csv").write_text("id,text\n1,hello\n")
    code, output = send(tmp_path / "bad.csv")
    assert code == 2
    assert "no 'content' column" in output

    (tmp_path / "one.jsonl").write_bytes(jsonl([{"content": "hello"}]))
    code, output = send(tmp_path / "one.jsonl")
    assert code == 2
    assert "cannot reach" in output
