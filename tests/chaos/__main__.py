"""`python -m tests.chaos --duration 90 --seed 1 --broker redis`: one fault campaign."""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VAR = ROOT / "var" / "chaos"


def trained_model() -> Path:
    """The default model, trained once and kept in var/chaos (10-30 s of CPU the first time)."""
    from docingest.model import training
    from docingest.model.datasets import load_bbc

    VAR.mkdir(parents=True, exist_ok=True)
    path = VAR / "default.skops"
    with (VAR / "model.lock").open("wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            partial = VAR / "default.partial"
            training.save_model(training.train(*load_bbc()), partial)
            partial.rename(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--duration", type=float, default=90, help="seconds of workload")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    parser.add_argument("--out", type=Path, default=None, help="folder for logs and history")
    parser.add_argument("--keep", action="store_true", help="keep the folder without anomaly")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:  # said before importing anything heavy, which may not even load
        print("chaos: cannot run: building test hosts needs root (network namespaces, veth)")
        return 2
    from tests import reaper
    from tests.chaos.runner import campaign, requirements

    if (missing := requirements(args.broker)) is not None:
        print(f"chaos: cannot run: {missing}")
        return 2
    reaper.install_signal_handlers()
    reaper.start()
    out = args.out or VAR / f"{args.broker}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    return campaign(
        duration=args.duration, seed=args.seed, broker=args.broker,
        model_path=trained_model(), out_dir=out, keep=args.keep,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
