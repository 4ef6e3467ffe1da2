"""`docingest send` as a user runs it: a subprocess against real API and worker processes."""

import csv
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from docingest.client.send import stable_id
from docingest.embedded import wait_until
from docingest.keys import digest, generate_key
from tests.faults import Processes, content_for, keyed_processes, rows
from tests.unit.test_send import jsonl, unwrapped

FRESH_ID = "0b0e8a0e-5f2b-4c53-9a43-2e6d1b9d7c01"


KEY = generate_key()
READ_KEY = generate_key()


@pytest.fixture
def service(
    postgres_url: str, redis_url: str, model_path: Path, tmp_path: Path
) -> Iterator[Processes]:
    processes = keyed_processes(
        tmp_path,
        database_url=postgres_url,
        broker_url=redis_url,
        model_path=model_path,
        api_keys=f"sender:ingest:{digest(KEY)},reader:read:{digest(READ_KEY)}",
    )
    yield processes
    processes.stop_all()


def send_env(base_url: str) -> dict[str, str]:
    """The service asks for a key (with the `ingest` scope only): `send` reads it from here."""
    return os.environ | {"DOCINGEST_URL": base_url, "DOCINGEST_API_KEY": KEY, "COLUMNS": "200"}


def run_send(
    base_url: str, *args: str, stdin: bytes = b"", cwd: Path
) -> subprocess.CompletedProcess[str]:
    return run_cli(["send", *args], stdin=stdin, cwd=cwd, env=send_env(base_url))


def run_cli(
    args: list[str], *, stdin: bytes = b"", cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docingest", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def stored(database_url: str) -> dict[str, str]:
    return {document_id: content for document_id, content, _ in rows(database_url)}


def wait_stored(database_url: str, count: int) -> dict[str, str]:
    wait_until(lambda: len(stored(database_url)) >= count, 60, f"{count} documents stored")
    return stored(database_url)


def rejects_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


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


def test_folders_read_regular_files_only_and_symlinks_when_asked(
    service: Processes, postgres_url: str, tmp_path: Path
) -> None:
    api = service.api()
    service.worker()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "secret.txt").write_text(content_for(0, "secret"))
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(content_for(1, "txt"))
    (folder / "sub" / "b.txt").write_text(content_for(2, "txt"))
    (folder / "leak.txt").symlink_to(tmp_path / "other" / "secret.txt")
    (folder / "sub" / "up").symlink_to(folder)  # a loop, once links are followed
    os.mkfifo(folder / "fifo.txt")  # would block a reader forever: no writer ever comes
    (folder / "huge.txt").write_bytes(b"x" * 4_000_001)  # over the default cap

    done = run_send(api.base_url, str(folder), cwd=tmp_path)

    assert done.returncode == 1, done.stderr  # huge.txt is rejected
    summary = unwrapped(done.stderr)
    assert "2 accepted" in summary, summary
    assert "1 rejected" in summary, summary
    assert "3 files skipped" in summary, summary
    assert "2 symlink" in summary, summary
    assert "1 not a regular file" in summary, summary
    [huge] = rejects_of(tmp_path / "rejects.jsonl")
    assert huge["source"] == str(folder / "huge.txt")
    assert huge["errors"][0]["type"] == "too_long"
    assert sorted(wait_stored(postgres_url, 2).values()) == [
        content_for(1, "txt"),
        content_for(2, "txt"),
    ]

    followed = run_send(
        api.base_url, str(folder), "--follow-symlinks", "--rejects", "again.jsonl", cwd=tmp_path
    )
    assert followed.returncode == 1, followed.stderr
    summary = unwrapped(followed.stderr)
    assert "3 accepted" in summary, summary  # a and b again (the same ids), and the secret
    assert "2 files skipped" in summary, summary
    assert "1 folder already read (symlink loop)" in summary, summary
    assert "1 not a regular file" in summary, summary
    assert content_for(0, "secret") in wait_stored(postgres_url, 3).values()


def test_a_resend_updates_the_documents_instead_of_copying_them(
    service: Processes, postgres_url: str, tmp_path: Path
) -> None:
    """A run cut short (exit 2) is simply run again: no document may be stored twice."""
    api = service.api()
    service.worker()
    source = tmp_path / "docs.jsonl"
    source.write_bytes(jsonl([{"content": content_for(n, "jsonl")} for n in range(5)]))
    with (tmp_path / "docs.csv").open("w", newline="") as file:
        csv.writer(file).writerows([["content"], *([content_for(n, "csv")] for n in range(3))])
    folder = tmp_path / "texts"
    folder.mkdir()
    for n in range(2):
        (folder / f"{n}.txt").write_text(content_for(n, "txt"))
    stdin = jsonl([{"content": content_for(n, "stdin")} for n in range(2)])
    inputs = [str(source), str(tmp_path / "docs.csv"), str(folder), "-"]

    def send() -> None:
        done = run_send(api.base_url, *inputs, "--batch-size", "4", stdin=stdin, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "12 accepted" in done.stderr, done.stderr

    def versions() -> dict[str, int]:
        return {document_id: version for document_id, _, version in rows(postgres_url)}

    send()
    wait_stored(postgres_url, 12)
    first = versions()
    send()
    # Versions come from one counter: a document updated by the resend has a higher one.
    wait_until(
        lambda: len(versions()) > 12 or all(versions()[i] > v for i, v in first.items()),
        60,
        "the resend stored",
    )
    assert versions().keys() == first.keys()
    documents = stored(postgres_url)
    assert documents[stable_id("-", 2, content_for(1, "stdin"))] == content_for(1, "stdin")
    origin = str(source.resolve())
    assert documents[stable_id(origin, 3, content_for(2, "jsonl"))] == content_for(2, "jsonl")


def test_unreadable_lines_and_files_become_rejects_and_the_rest_is_sent(
    service: Processes, postgres_url: str, tmp_path: Path
) -> None:
    api = service.api()
    service.worker()
    long_text = content_for(1, "long") + " word" * 40_000  # over the csv module's own limit
    table = tmp_path / "docs.csv"
    table.write_bytes(
        b"\xef\xbb\xbfcontent\n"  # a byte order mark is allowed
        + f'"{content_for(0, "csv")}"\n'.encode()
        + b'"caf\xe9 latin-1 text"\n'  # line 3: not UTF-8
        + f'"{long_text}"\n'.encode()
        + b'"'
        + b"many lines\n" * 500_000
        + b'"\n'  # line 5: one field over 4,000,000 chars
        + f'"{content_for(2, "csv")}"\n'.encode()
    )
    lines = tmp_path / "docs.jsonl"
    lines.write_bytes(
        jsonl([{"content": content_for(3, "jsonl")}])
        + b'{"content": "caf\xe9"}\n'
        + jsonl([{"content": content_for(4, "jsonl")}])
    )
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "good.txt").write_text(content_for(5, "txt"))
    (folder / "latin1.txt").write_bytes("caf\xe9 sales up".encode("latin-1"))

    done = run_send(api.base_url, str(table), str(lines), str(folder), cwd=tmp_path)

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "6 accepted" in done.stderr, done.stderr
    assert "4 rejected" in done.stderr, done.stderr
    rejected = [
        (r["source"], r["line"], r["errors"][0]["type"])
        for r in rejects_of(tmp_path / "rejects.jsonl")
    ]
    assert sorted(rejected, key=str) == sorted(
        [
            (str(table), 3, "utf8_invalid"),
            (str(table), 5, "csv_invalid"),
            (str(lines), 2, "utf8_invalid"),
            (str(folder / "latin1.txt"), None, "utf8_invalid"),
        ],
        key=str,
    )
    contents = set(wait_stored(postgres_url, 6).values())
    assert contents == {
        content_for(0, "csv"),
        long_text,
        content_for(2, "csv"),
        content_for(3, "jsonl"),
        content_for(4, "jsonl"),
        content_for(5, "txt"),
    }


def test_send_and_stats_print_only_what_was_asked(service: Processes, tmp_path: Path) -> None:
    """httpx logs each request at INFO: with the CLI's logging at INFO, none may show."""
    api = service.api()
    source = tmp_path / "docs.jsonl"
    source.write_bytes(jsonl([{"content": content_for(n, "quiet")} for n in range(6)]))
    env = send_env(api.base_url) | {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}

    done = run_cli(["send", str(source), "--batch-size", "2"], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "6 accepted" in done.stderr, done.stderr
    assert "HTTP Request" not in done.stderr, done.stderr
    assert done.stdout == ""

    figures = run_cli(
        ["stats", "--url", api.base_url, "--json"],
        cwd=tmp_path,
        env=env | {"DOCINGEST_API_KEY": READ_KEY},
    )
    assert figures.returncode == 0, figures.stderr
    assert figures.stderr == ""
    assert "statuses" in orjson.loads(figures.stdout)
