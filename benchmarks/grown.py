"""Cost as the table grows: bulk end to end on an empty table, then after N stored documents.

    .venv/bin/python benchmarks/bench.py --grown [N] [--grown-repeats 3] [--docs 20000]

The Procfile's processes on PostgreSQL and Redis (embedded, or the URLs given), workers
running. First `--grown-repeats` end-to-end bulk phases, each on an emptied table; then the
table is filled with N documents straight in PostgreSQL (`prefill`: one INSERT … SELECT from
generate_series, ids sorted so the primary key is built at its right edge, with their change
rows, numbered, as the relay would have left them), vacuumed, analysed and checkpointed; then
as many bulk phases on the full table, which is kept between them. Half the ids of the
prefill, and of every phase, are random (ids a client chose, uuid4), half time-ordered (ids
the API assigned, UUIDv7). Prints the median rate of each side, its spread and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg
from loadgen import Generator
from measure import PhaseResult, warm_docingest
from rich.console import Console
from sqlalchemy.engine import make_url

from docingest.documents.store import content_digest
from docingest.model.datasets import load_bbc

progress = Console(stderr=True, width=140)

DEFAULT_ROWS = 5_000_000

# Rows of the corpus the prefill cycles through, with what a worker would have stored for them.
_CORPUS = """
CREATE TEMPORARY TABLE prefill_corpus (
    n integer PRIMARY KEY, content text NOT NULL, sha text NOT NULL, category text NOT NULL
)
"""

# A UUIDv7 in SQL (PostgreSQL 13+, without 18's uuidv7()): a random uuid whose first 48 bits are
# replaced by a time in milliseconds and whose version nibble 4 (0100) becomes 7 (0111).
_V7 = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send(%(start_ms)s + g) from 3) from 1 for 6), 52, 1), 53, 1), 'hex')::uuid"
)

# One statement: ids sorted first (the primary key then grows at its right edge, which is what
# makes a 5-million-row fill take minutes rather than an hour), each row's content looked up
# by its number in that order. Times one millisecond apart, ending at the start of the fill.
_DOCUMENTS = f"""
INSERT INTO documents (id, content, category, confidence, alternatives, model_version, version,
                       created_at, updated_at, content_sha256)
SELECT s.id, c.content, c.category, 0.9,
       json_build_array(json_build_object('category', c.category, 'probability', 0.9)),
       'prefill', s.g, s.at, s.at, c.sha
FROM (
    SELECT g, CASE WHEN g %% 2 = 0 THEN gen_random_uuid() ELSE {_V7} END AS id,
           to_timestamp((%(start_ms)s + g) / 1000.0) AS at
    FROM generate_series(1, %(rows)s) AS g
    ORDER BY id
) AS s
CROSS JOIN LATERAL (
    SELECT content, sha, category FROM prefill_corpus WHERE n = s.g %% %(corpus)s
) AS c
"""

# Each prefilled document's `stored` change, numbered in version order as the relay would have.
_CHANGES = """
INSERT INTO changes (position, document_id, version, kind, category, confidence, alternatives,
                     model_version, label, at)
SELECT version, id, version, 'stored', category, confidence, alternatives, model_version, NULL,
       updated_at
FROM documents WHERE model_version = 'prefill' ORDER BY version
"""


def plain_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def prefill(database_url: str, rows: int, texts: list[str], labels: list[str]) -> dict[str, float]:
    """N documents and their changes, straight into PostgreSQL, in place of every document and
    change there was; seconds of each step, and the sizes it left (MB)."""
    seconds: dict[str, float] = {}
    with psycopg.connect(plain_url(database_url), autocommit=True) as connection:
        connection.execute("TRUNCATE documents, changes")
        connection.execute("UPDATE change_relay SET pruned = 0")
        connection.execute(_CORPUS)
        with connection.cursor().copy("COPY prefill_corpus FROM STDIN") as copy:
            for n, (content, label) in enumerate(zip(texts, labels, strict=True)):
                copy.write_row((n, content, content_digest(content), label))
        start_ms = int(time.time() * 1000) - rows
        for step, statement, params in (
            ("documents", _DOCUMENTS, {"start_ms": start_ms, "rows": rows, "corpus": len(texts)}),
            ("changes", _CHANGES, {}),
            ("vacuum analyze", "VACUUM (ANALYZE) documents, changes", {}),
            ("checkpoint", "CHECKPOINT", {}),
        ):
            began = time.monotonic()
            connection.execute(statement, params or None)  # type: ignore[arg-type]
            seconds[step] = round(time.monotonic() - began, 1)
            progress.log(f"prefill: {step} in {seconds[step]:.1f} s")
        sizes = connection.execute(
            "SELECT pg_total_relation_size('documents'), pg_relation_size('documents_pkey'),"
            " pg_total_relation_size('changes')"
        ).fetchone()
        assert sizes is not None
        seconds["documents_mb"] = round(sizes[0] / 2**20)
        seconds["documents_pkey_mb"] = round(sizes[1] / 2**20)
        seconds["changes_mb"] = round(sizes[2] / 2**20)
    return seconds


def grown(args: argparse.Namespace, model: Path, generator: Generator) -> dict[str, Any]:
    phases: dict[str, list[PhaseResult]] = {"empty": [], "grown": []}
    with warm_docingest(args, generator, model, "grown") as run:
        bulk = (args.bulk_size, args.bulk_concurrency)
        for n in range(args.grown_repeats):
            phase = run.end_to_end(f"e2e_bulk_empty_{n + 1}", args.docs, *bulk, server_ids=True)
            _log(phase)
            phases["empty"].append(phase)
        run.table.truncate()
        texts, labels = load_bbc()
        filled = prefill(run.context.database_url, args.grown, texts, labels)
        for n in range(args.grown_repeats):
            phase = run.end_to_end(
                f"e2e_bulk_grown_{n + 1}", args.docs, *bulk, keep_rows=True, server_ids=True
            )
            _log(phase)
            phases["grown"].append(phase)
        run.stop_workers()
    return _verdict(args, phases, filled)


def _log(phase: PhaseResult) -> None:
    check = phase.check
    assert check is not None
    progress.log(
        f"{phase.name:18} {phase.rate:>8,.0f} docs/s  lost {check.lost}  duplicated "
        f"{check.duplicated}  (other load {phase.other_cores:.2f} cores)"
    )


def _verdict(
    args: argparse.Namespace, phases: dict[str, list[PhaseResult]], filled: dict[str, float]
) -> dict[str, Any]:
    rates = {side: [round(p.rate) for p in runs] for side, runs in phases.items()}
    medians = {side: statistics.median(values) for side, values in rates.items()}
    return {
        "rows": args.grown,
        "docs_per_phase": args.docs,
        "rates": rates,
        "medians": medians,
        "grown_over_empty": round(medians["grown"] / medians["empty"], 3),
        "lost": sum(p.check.lost for runs in phases.values() for p in runs if p.check),
        "duplicated": sum(p.check.duplicated for runs in phases.values() for p in runs if p.check),
        "other_cores": {
            side: [round(p.other_cores, 2) for p in runs] for side, runs in phases.items()
        },
        "other_cores_worst": round(max(p.other_cores for r in phases.values() for p in r), 2),
        "cpu_ms_per_doc": {
            side: [p.details["cpu_ms_per_doc"] for p in runs] for side, runs in phases.items()
        },
        # CPU a document, median per role: what other work on shared cores changes least.
        "cpu_ms_per_doc_median": {
            side: {
                role: round(
                    statistics.median(p.details["cpu_ms_per_doc"].get(role, 0.0) for p in runs), 4
                )
                for role in ("postgres", "workers", "api", "redis")
            }
            for side, runs in phases.items()
        },
        "prefill": filled,
    }


def print_verdict(verdict: dict[str, Any]) -> None:
    stdout = Console(width=132, highlight=False)
    for side in ("empty", "grown"):
        values = verdict["rates"][side]
        label = "empty table" if side == "empty" else f"after {verdict['rows']:,} documents"
        cpu = verdict["cpu_ms_per_doc_median"][side]
        stdout.print(
            f"bulk end to end, {label:>26}: median {verdict['medians'][side]:>8,.0f} docs/s "
            f"(runs: {', '.join(f'{v:,}' for v in values)}; other load "
            f"{', '.join(str(v) for v in verdict['other_cores'][side])} cores); CPU a document: "
            f"PostgreSQL {cpu['postgres']:.3f} ms, workers {cpu['workers']:.3f} ms"
        )
    stdout.print(
        f"grown / empty: {verdict['grown_over_empty']:.2f}; lost {verdict['lost']}, duplicated "
        f"{verdict['duplicated']}; other load up to {verdict['other_cores_worst']} cores; "
        f"prefill: {verdict['prefill']}"
    )
