"""Where a stored document's CPU goes in a worker, stage by stage (`make breakdown`).

    .venv/bin/python benchmarks/breakdown.py [--workload bbc|short] [--batch 500] [--rounds 20]
                                             [--store copy|rows|both]

Runs the worker's own functions in this process, on embedded PostgreSQL and Redis, over batches
of the workload's documents, and prints microseconds of CPU per document for each stage: the
message's JSON decoding, validation of each queued document, tokenizing and TF-IDF
(vectorise), the model's probabilities (predict), the top-3 ranking (all three by the scorer
workers classify with, `docingest.model.scoring.Scorer`), building rows, the upsert
with its commit (this process's CPU and PostgreSQL's server CPU apart), settling in the ledger
and the batch's metrics. Stages are timed apart, with the CPU clock of this thread; PostgreSQL's
share is its processes' CPU over the store stage. Compare with `bench.py`'s worker CPU per
document: what the batch path leaves out is Dramatiq's own work per message.

`--store` picks how the batch reaches PostgreSQL: `copy` (binary COPY into a staging table and
one INSERT … SELECT, what the store does from `COPY_MIN_ROWS` documents on), `rows` (one
executemany of the upsert, what it did before), or `both`, alternating batch by batch on the
same table, each path's store stage reported on its own line.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import psutil
from bench import ensure_model
from corpus import WORKLOADS, make_documents
from services import Servers

from docingest.connections import Connections, connect
from docingest.documents import store
from docingest.documents.store import store_batch
from docingest.model.classifier import Classifier
from docingest.model.datasets import load_bbc
from docingest.model.scoring import Scorer
from docingest.observe.worker_metrics import worker_metrics
from docingest.queue.messages import ingest_message
from docingest.schemas import QueuedDocument, utcnow
from docingest.settings import Settings
from docingest.worker.ingest import QUEUED, build_rows

ROOT = Path(__file__).resolve().parent.parent
CLASSIFY = "classify (vectorise + predict + top-3)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workload", choices=list(WORKLOADS), default="bbc")
    parser.add_argument("--batch", type=int, default=500, help="documents per batch")
    parser.add_argument("--rounds", type=int, default=20, help="batches measured")
    parser.add_argument("--model", type=Path, default=ROOT / "bench-results" / "model.skops")
    parser.add_argument(
        "--store",
        choices=["copy", "rows", "both"],
        default="copy",
        help="COPY and INSERT … SELECT, one executemany of the upsert, or both alternating",
    )
    return parser.parse_args()


class Stages:
    """CPU seconds per stage, summed over the rounds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.thread_time()
        yield
        self.add(stage, time.thread_time() - started)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def postgres_cpu(pid: int) -> float:
    """User + system seconds of the postmaster and its backends so far."""
    total = 0.0
    parent = psutil.Process(pid)
    for process in [parent, *parent.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def encoded_batches(workload: str, batch: int, rounds: int) -> list[bytes]:
    """Queue messages as the API publishes them: one batch each, versions from 1."""
    texts, _ = load_bbc()
    docs = make_documents(texts, workload, batch * rounds)
    accepted_at = utcnow()
    bodies = []
    for start in range(0, len(docs), batch):
        documents = [
            QueuedDocument(
                id=uuid.UUID(doc.id), content=doc.content, version=1, accepted_at=accepted_at
            ).to_message()
            for doc in docs[start : start + batch]
        ]
        bodies.append(ingest_message(documents).encode())
    return bodies


def measure(args: argparse.Namespace, servers: Servers, stages: Stages) -> None:
    settings = Settings(
        _env_file=None, database_url=servers.docingest_database_url, broker_url=servers.redis_url
    )
    connections = connect(settings, pre_ping=False)
    model = ensure_model(args.model)
    scorer = Scorer.from_bytes(Classifier.load(model).scoring_form(), source=str(model))
    postgres_pid = servers.pids()["postgres"]
    try:
        paths = ["copy", "rows"] if args.store == "both" else [args.store]
        rounds = (args.rounds + 1) * len(paths)  # a first batch per path warms it up, untimed
        for n, body in enumerate(encoded_batches(args.workload, args.batch, rounds)):
            path, timed = paths[n % len(paths)], stages if n >= len(paths) else Stages()
            one_batch(body, scorer, connections, postgres_pid, timed, path, len(paths) > 1)
    finally:
        connections.close()


def one_batch(
    body: bytes,
    scorer: Scorer,
    connections: Connections,
    postgres_pid: int,
    stages: Stages,
    path: str,
    named: bool,
) -> None:
    """The steps of `docingest.worker.ingest.ingest`, each timed on its own; the store's by
    `path` (named in its stages' names when both are measured)."""
    with stages.timed("decode message"):
        documents = orjson.loads(body)["args"][0]
    with stages.timed("validate"):
        queued = QUEUED.validate_python(documents)
    texts = [document.content for document in queued]
    with stages.timed("vectorise"):
        features = scorer._features(texts)  # the scorer's steps, timed apart
    with stages.timed("predict"):
        scorer._probabilities_of(features)
    with stages.timed(CLASSIFY):
        predicted = scorer.predict(texts)
    with stages.timed("build rows"):
        rows, _ = build_rows(queued, predicted, scorer.version, utcnow())
    store.COPY_MIN_ROWS = 1 if path == "copy" else len(rows) + 1
    suffix = f" [{path}]" if named else ""
    before = postgres_cpu(postgres_pid)
    with stages.timed(f"upsert + commit (worker){suffix}"):
        store_batch(connections.engine, rows, [])
    stages.add(f"upsert + commit (PostgreSQL){suffix}", postgres_cpu(postgres_pid) - before)
    with stages.timed("settle (ledger)"):
        connections.ledger.settle([(document.id, document.version) for document in queued])
    with stages.timed("metrics"):
        worker_metrics.record_batch(
            [document.accepted_at for document in queued],
            failed=0,
            classification_seconds=0.0,
            database_seconds=0.0,
        )


def report(stages: Stages, documents: int, paths: int) -> None:
    """µs per document; a store path's stages over the documents it stored (1/`paths`)."""
    per_doc = {
        stage: seconds / documents * 1e6 * (paths if stage.endswith("]") else 1)
        for stage, seconds in stages.seconds.items()
    }
    classify = per_doc.pop(CLASSIFY)
    per_doc["top-3"] = classify - per_doc["vectorise"] - per_doc["predict"]
    # With both paths, the total counts each document's store once: by the first path's figures.
    counted = {s: m for s, m in per_doc.items() if not s.endswith("]") or s.endswith("[copy]")}
    total = sum(counted.values())
    print(f"{'stage':40} {'µs/doc':>8} {'share':>6}")
    for stage, micros in per_doc.items():
        print(f"{stage:40} {micros:8.1f} {micros / total:6.1%}")
    print(f"{'total' + (' (the copy path)' if paths > 1 else ''):40} {total:8.1f}")


def main() -> None:
    args = parse_args()
    stages = Stages()
    folder = ROOT / "bench-results" / "breakdown"
    with Servers(folder, None, None) as servers:
        measure(args, servers, stages)
    paths = 2 if args.store == "both" else 1
    report(stages, args.batch * args.rounds * paths, paths)


if __name__ == "__main__":
    main()
