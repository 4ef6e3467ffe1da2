"""Scoring speed: the workers' numpy scorer and scikit-learn's pipeline, on the same model.

    .venv/bin/python benchmarks/scoring_speed.py [--model PATH] [--runs 30] [--paths BOTH]

Times `predict` on 500 BBC News articles in one call and on 100 of them one per call, best of
`--runs`, the paths alternating so that a busy moment slows each. `--paths classifier` times
scikit-learn's pipeline alone (`Classifier.predict`), which is what workers ran before they
scored with numpy: run from a checkout of that code (PYTHONPATH), it gives the "before".
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import ensure_model

from docingest.model.classifier import Classifier
from docingest.model.datasets import load_bbc

ROOT = Path(__file__).resolve().parent.parent
BATCH = 500
SINGLES = 100


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=ROOT / "bench-results" / "model.skops")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--paths", choices=["both", "classifier", "scorer"], default="both")
    return parser.parse_args()


def seconds(predict: Callable[[Sequence[str]], object], batches: list[list[str]]) -> float:
    start = time.perf_counter()
    for batch in batches:
        predict(batch)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    texts = load_bbc()[0][:BATCH]
    classifier = Classifier.load(ensure_model(args.model))
    paths: dict[str, Callable[[Sequence[str]], object]] = {}
    if args.paths in ("both", "classifier"):
        paths["scikit-learn pipeline"] = classifier.predict
    if args.paths in ("both", "scorer"):
        from docingest.model.scoring import Scorer

        scorer = Scorer.from_bytes(classifier.scoring_form(), source=str(args.model))
        paths["numpy scorer"] = scorer.predict
    batched = dict.fromkeys(paths, float("inf"))
    single = dict.fromkeys(paths, float("inf"))
    for _ in range(args.runs):
        for name, predict in paths.items():
            batched[name] = min(batched[name], seconds(predict, [texts]))
            single[name] = min(single[name], seconds(predict, [[text] for text in texts[:SINGLES]]))
    for name in paths:
        print(
            f"{name:22} {BATCH} texts in one call {batched[name] * 1e3:5.1f} ms "
            f"({BATCH / batched[name]:,.0f} docs/s); one text a call "
            f"{single[name] / SINGLES * 1e3:.2f} ms ({SINGLES / single[name]:,.0f} docs/s)"
        )


if __name__ == "__main__":
    main()
