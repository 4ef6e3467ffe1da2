"""`docingest send` as a user runs it: a subprocess against real API and worker processes."""

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from docingest.cli import app
from docingest.client.textfiles import RULE
from docingest.embedded import free_port


def jsonl(documents: list[object]) -> bytes:
    return b"".join(orjson.dumps(document) + b"\n" for document in documents)


def unwrapped(text: str) -> str:
    return " ".join(text.split())


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


def test_help_states_the_decoding_rule_and_the_stable_ids() -> None:
    runner = CliRunner()
    send_help = unwrapped(runner.invoke(app, ["send", "--help"], env={"COLUMNS": "200"}).output)
    train_help = unwrapped(runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output)
    assert RULE in send_help
    assert RULE in train_help
    assert "sending the same files again gives the same ids" in send_help
