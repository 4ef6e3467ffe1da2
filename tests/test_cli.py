from pathlib import Path

from typer.testing import CliRunner

from docingest.classifier import Classifier
from docingest.cli import app

runner = CliRunner()


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "api", "worker", "train", "migrate"):
        assert f" {command} " in result.output


def test_train_writes_a_loadable_model(tmp_path: Path) -> None:
    output = tmp_path / "models" / "bbc.skops"
    result = runner.invoke(app, ["train", "--output", str(output), "--estimator", "nb"])
    assert result.exit_code == 0, result.output
    assert "held-out accuracy" in result.output
    assert Classifier.load(output).metadata["estimator"] == "nb"


def test_train_refuses_an_unknown_estimator(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--output", str(tmp_path / "m"), "--estimator", "magic"])
    assert result.exit_code != 0
    assert not (tmp_path / "m").exists()
