"""How long writers on `documents` wait while each migration after 0002 runs on a large table.

An embedded PostgreSQL gets a database at 0002 with ROWS documents of ~2 KB text. Then each
later migration runs while another connection keeps doing single-row INSERTs and UPDATEs on
`documents`; the longest of those writes, per migration, is the lock time writers see (a write
takes ~1 ms when nothing blocks it). docs/deploy.md shows the table.

    .venv/bin/python scripts/migration_locks.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import psycopg

from docingest.db import migrate
from docingest.embedded import EmbeddedPostgres

REVISIONS = ["0003", "0004", "0005", "0006", "0007"]
Rows = list[tuple[str, float, float]]

# 2 KB a row: 1 KB of hex (incompressible for pglz) twice, so pglz halves it as it does text.
FILL = """
INSERT INTO documents (id, content, category, confidence, model_version, version,
                       created_at, updated_at)
SELECT md5('doc' || g)::uuid, repeat(chunk, 2), 'sport', 0.9, 'v1', g, now(), now()
FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS g,
     LATERAL (SELECT string_agg(md5(g || '-' || k), '') AS chunk
              FROM generate_series(1, 32) AS k) AS c
"""


class Writer(threading.Thread):
    """Single-row writes on `documents`, one after another, autocommit; `longest()` is the
    slowest since the last call."""

    def __init__(self, url: str, rows: int) -> None:
        super().__init__(daemon=True)
        self._url = url
        self._rows = rows
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._longest = 0.0
        self.count = 0

    def run(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as connection:
            number = 0
            while not self._done.is_set():
                number += 1
                started = time.monotonic()
                if number % 2:
                    connection.execute(
                        "INSERT INTO documents (id, content, version, created_at, updated_at) "
                        "VALUES (%s, 'written during the migration', %s, now(), now())",
                        (uuid.uuid4(), self._rows + number),
                    )
                else:
                    connection.execute(
                        "UPDATE documents SET updated_at = now() WHERE id = md5(%s)::uuid",
                        (f"doc{number % self._rows + 1}",),
                    )
                took = time.monotonic() - started
                with self._lock:
                    self._longest = max(self._longest, took)
                    self.count += 1
                time.sleep(0.01)

    def longest(self) -> float:
        with self._lock:
            longest, self._longest = self._longest, 0.0
            return longest

    def stop(self) -> None:
        self._done.set()
        self.join()


def fill(server: EmbeddedPostgres, rows: int) -> str:
    """The database at 0002 with `rows` documents, the template of every run."""
    url = server.create_database("locks_template")
    migrate(url, "0002")
    started = time.monotonic()
    with psycopg.connect(plain(url), autocommit=True) as connection:
        for start in range(1, rows + 1, 100_000):
            connection.execute(FILL, {"start": start, "stop": min(start + 99_999, rows)})
        connection.execute("VACUUM ANALYZE documents")
        size = connection.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('documents'))"
        ).fetchone()[0]  # type: ignore[index]
    print(f"{rows:,} rows ({size}) in {time.monotonic() - started:.0f} s")
    return url


def measure(server: EmbeddedPostgres, template: str, rows: int, steps: Sequence[str]) -> Rows:
    """Migrate a copy of the template to each of `steps` in turn, writing all along."""
    url = template.rsplit("/", 1)[0] + f"/locks_{steps[-1]}_{len(steps)}"
    with psycopg.connect(plain(server.url), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}" TEMPLATE locks_template')
    writer = Writer(plain(url), rows)
    writer.start()
    results = []
    try:
        for revision in steps:
            time.sleep(0.5)
            writer.longest()
            started = time.monotonic()
            migrate(url, revision)
            took = time.monotonic() - started
            time.sleep(0.2)  # a write blocked until the commit finishes within this
            results.append((revision, took, writer.longest()))
    finally:
        writer.stop()
    return results


def plain(url: str) -> str:
    return url.replace("postgresql+psycopg", "postgresql")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="docingest-locks-"))
    try:
        with EmbeddedPostgres(data_dir) as server:
            template = fill(server, args.rows)
            one_by_one = measure(server, template, args.rows, REVISIONS)
            at_once = measure(server, template, args.rows, ["head"])
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print("| migration | took | longest write |")
    print("|---|---:|---:|")
    for revision, took, longest in one_by_one:
        print(f"| {revision} | {took:.1f} s | {longest * 1000:.0f} ms |")
    for _, took, longest in at_once:
        print(f"| 0002 → head in one run | {took:.1f} s | {longest * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
