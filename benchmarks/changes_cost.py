"""What the change feed costs a stored batch: `store_batch` of 500 BBC documents, timed with the
feed (on PostgreSQL the upsert and its changes' insert are one statement, a CTE) and without it
(the same COPY and upsert, without the CTE), alternating, on PostgreSQL; then one relay pass
over a batch's changes.

    .venv/bin/python benchmarks/changes_cost.py [--runs 20] [--batch 500] [--database-url URL]

Without --database-url it starts an embedded PostgreSQL in a temporary folder. Prints the
medians and one JSON line.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from unittest.mock import patch

import orjson
from sqlalchemy import Engine, select, text
from sqlalchemy.dialects import postgresql

from docingest.changes.relay import relay
from docingest.db import make_engine, migrate
from docingest.documents import store
from docingest.embedded import EmbeddedPostgres
from docingest.ledger.floor import raise_floor
from docingest.model.datasets import load_bbc
from docingest.schemas import utcnow
from docingest.tables import DOCUMENTS


def rows(texts: list[str], labels: list[str], start: int, batch: int) -> list[dict[str, Any]]:
    now = utcnow()
    chosen = [
        (texts[(start + n) % len(texts)], labels[(start + n) % len(texts)]) for n in range(batch)
    ]
    return [
        {
            "id": uuid.uuid4(),
            "content": content,
            "content_sha256": store.content_digest(content),
            "version": start + n + 1,
            "created_at": now,
            "updated_at": now,
            "category": label,
            "confidence": 0.9,
            "alternatives": [{"category": label, "probability": 0.9}],
            "model_version": "bench",
        }
        for n, (content, label) in enumerate(chosen)
    ]


def store_without_feed() -> Any:
    """`store_batch` without the feed (a batch of documents, no failures): the same COPY into
    the staging table and `INSERT … SELECT … ON CONFLICT`, without the CTE that writes the rows'
    changes."""
    names = DOCUMENTS.columns.keys()
    staged = select(*(store.STAGING.c[name] for name in names)).order_by(store.STAGING.c.id)
    plain = store._on_conflict(postgresql.insert(DOCUMENTS).from_select(names, staged), DOCUMENTS)
    assert "changes" not in str(plain.compile(dialect=postgresql.dialect()))

    def store_batch(engine: Engine, documents: list[dict[str, Any]]) -> None:
        with (
            patch.object(store, "_copy_upsert", lambda: plain),
            engine.begin() as connection,
        ):
            store._store_documents(connection, store._sorted_newest(documents))
            raise_floor(connection, max(row["version"] for row in documents))

    return store_batch


def measure(engine: Engine, runs: int, batch: int) -> dict[str, Any]:
    texts, labels = load_bbc()
    timings: dict[str, list[float]] = {"on": [], "off": []}
    relay_seconds = []
    without = store_without_feed()
    start = 0
    for run in range(2 * runs + 2):
        mode = "on" if run % 2 == 0 else "off"
        batch_rows = rows(texts, labels, start, batch)
        start += batch
        began = time.perf_counter()
        (store.store_batch if mode == "on" else without)(engine, batch_rows)
        seconds = time.perf_counter() - began
        if run >= 2:  # the first pair warms the caches and the statements up
            timings[mode].append(seconds)
        if mode == "on":
            began = time.perf_counter()
            relay(engine)
            relay_seconds.append(time.perf_counter() - began)
    with engine.connect() as connection:
        changes = connection.execute(text("SELECT count(*) FROM changes")).scalar_one()
    on, off = statistics.median(timings["on"]), statistics.median(timings["off"])
    return {
        "batch": batch,
        "runs": runs,
        "median_on_ms": round(on * 1000, 2),
        "median_off_ms": round(off * 1000, 2),
        "cost_percent": round((on / off - 1) * 100, 1),
        "relay_pass_median_ms": round(statistics.median(relay_seconds[1:]) * 1000, 2),
        "changes_written": changes,
    }


@contextmanager
def migrated_engine(database_url: str | None, name: str) -> Iterator[Engine]:
    """An engine on `database_url`, migrated; without it, on an embedded PostgreSQL in a
    temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=f"docingest-{name}-"))
    try:
        server = None if database_url else EmbeddedPostgres(folder / "pg")
        with server or nullcontext():
            url = database_url or server.url  # type: ignore[union-attr]
            migrate(url)
            engine = make_engine(url)
            try:
                yield engine
            finally:
                engine.dispose()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with migrated_engine(args.database_url, "changes-cost") as engine:
        result = measure(engine, args.runs, args.batch)
    print(
        f"store_batch of {result['batch']} BBC documents, median of {result['runs']} each: "
        f"feed on {result['median_on_ms']} ms, off {result['median_off_ms']} ms "
        f"({result['cost_percent']:+} %); a relay pass over one batch: "
        f"{result['relay_pass_median_ms']} ms"
    )
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
