"""Commands that train classifiers and manage the model registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from docingest.cli.app import app, console
from docingest.settings import get_settings


@app.command()
def train(
    output: Annotated[
        Path | None, typer.Option(help="Where to write the model (env MODEL_PATH)")
    ] = None,
    estimator: Annotated[str, typer.Option(help="nb, logreg or sgd")] = "default",
    test_size: Annotated[float, typer.Option(min=0.05, max=0.5)] = 0.2,
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """Train a classifier on the built-in BBC News corpus and save it with skops."""
    from docingest import training

    path = output or get_settings().model_path
    texts, labels = training.load_bbc()
    with console.status(f"training on {len(texts)} BBC News articles"):
        options = {} if estimator == "default" else {"estimator": estimator}
        try:
            model = training.train(texts, labels, test_size=test_size, seed=seed, **options)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--estimator") from error
        training.save_model(model, path)
    metrics = model.metadata["metrics"]
    console.print(
        f"model [bold]{model.metadata['version']}[/] saved to {path}: held-out accuracy "
        f"{metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"
    )
