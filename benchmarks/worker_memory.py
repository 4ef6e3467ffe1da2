"""Peak memory of real worker processes, once they classified and stored a stream of documents.

    .venv/bin/python benchmarks/worker_memory.py [--processes 2] [--threads 8] [--docs 5000]

Starts an embedded Redis and a SQLite database in a temporary folder, then `docingest worker`
on them with the benchmark's model (the built-in BBC model, trained if missing), sends `--docs`
BBC News articles in messages of `--batch` documents, waits until every one is stored, and
prints, for each process of the worker's tree, its peak resident set (VmHWM) and resident set
now (VmRSS) from /proc/<pid>/status, and whether scikit-learn's or SciPy's compiled modules are
mapped into it (/proc/<pid>/maps): what a worker holds is what it imported.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from bench import ensure_model
from corpus import make_documents
from services import memory_kb
from sqlalchemy import Engine, text

from docingest.connections import connect
from docingest.db import migrate
from docingest.embedded import EmbeddedRedis, wait_until
from docingest.model.datasets import load_bbc
from docingest.queue.enqueue import Enqueuer
from docingest.schemas import DocumentIn
from docingest.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# Compiled modules of these packages sit in folders of their names in site-packages.
LIBRARIES = ("sklearn", "scipy")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--docs", type=int, default=5000, help="documents sent")
    parser.add_argument("--batch", type=int, default=500, help="documents per message")
    parser.add_argument("--model", type=Path, default=ROOT / "bench-results" / "model.skops")
    return parser.parse_args()


def mapped(pid: int) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return [library for library in LIBRARIES if f"/site-packages/{library}/" in maps]


def stored(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM documents")).scalar_one())


def main() -> None:
    args = parse_args()
    model = ensure_model(args.model)
    texts, _ = load_bbc()
    with (
        tempfile.TemporaryDirectory(prefix="worker-memory-") as folder,
        EmbeddedRedis(Path(folder) / "redis") as redis,
    ):
        url = f"sqlite:///{folder}/docingest.db"
        migrate(url)
        env = os.environ | {
            "DATABASE_URL": url,
            "BROKER_URL": redis.url,
            "MODEL_PATH": str(model),
            "DATA_DIR": folder,
        }
        command = [sys.executable, "-m", "docingest", "worker"]
        command += ["--processes", str(args.processes), "--threads", str(args.threads)]
        with (Path(folder) / "worker.log").open("wb") as log:
            worker = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            measure(
                args,
                worker,
                Settings(_env_file=None, database_url=url, broker_url=redis.url),
                texts,
            )
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)


def measure(
    args: argparse.Namespace, worker: subprocess.Popen[bytes], settings: Settings, texts: list[str]
) -> None:
    connections = connect(settings)
    enqueuer = Enqueuer(connections.queue, connections.ledger)
    documents = [
        DocumentIn(id=d.id, content=d.content) for d in make_documents(texts, "bbc", args.docs)
    ]
    started = time.monotonic()
    for start in range(0, len(documents), args.batch):
        enqueuer.send(documents[start : start + args.batch])
    wait_until(lambda: stored(connections.engine) == len(documents), 600, "all stored")
    seconds = time.monotonic() - started
    connections.close()
    tree = psutil.Process(worker.pid)
    print(f"{len(documents)} documents stored in {seconds:.1f} s")
    print(f"{'pid':>8} {'role':10} {'VmHWM MB':>9} {'VmRSS MB':>9}  mapped")
    for process in [tree, *tree.children(recursive=True)]:
        role = "main" if process.pid == worker.pid else "child"
        kb = memory_kb(process.pid)
        libraries = ", ".join(mapped(process.pid)) or "-"
        print(
            f"{process.pid:>8} {role:10} {kb['VmHWM'] / 1024:9.1f} {kb['VmRSS'] / 1024:9.1f}  "
            f"{libraries}"
        )


if __name__ == "__main__":
    main()
