"""Benchmark docingest on real servers, against the seed article's design (`make bench`).

    .venv/bin/python benchmarks/bench.py [--docs 20000] [--workload bbc|short|both] [--png PATH]

Starts PostgreSQL and Redis (embedded, or uses --database-url / --redis-url), then for each
workload runs docingest's API and workers as the Procfile does and measures: single-POST accept
rate and latency (workers stopped), the drain rate of the queue that left, end-to-end single
POSTs, the same three for bulk requests, peak RSS, lost and duplicated documents. The article's
design (benchmarks/baseline.py) goes through the single-POST phases on the same servers. Prints a
table per workload on stdout and, last, one JSON line; progress goes to stderr. docs/benchmark.md
explains every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import feed
import grown
import orjson
import soak
from corpus import WORKLOADS
from loadgen import Generator, choose_generator
from measure import (
    ROOT,
    Context,
    Design,
    DesignRun,
    PhaseResult,
    baseline_design,
    docingest_design,
    service_env,
)
from report import RABBITMQ, DesignResults, save_chart, summary, table
from rich.console import Console
from services import Sampler, Servers

from docingest.model import training
from docingest.model.datasets import load_bbc
from docingest.settings import Settings

CORES = os.cpu_count() or 1
BASELINE_PROCESSES = BASELINE_THREADS = 4  # the article's `dramatiq app.worker -p 4 -t 4`
progress = Console(stderr=True, width=140)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--docs", type=int, default=20_000, help="documents per docingest phase")
    add("--baseline-docs", type=int, default=3_000, help="per baseline phase; 0 skips it")
    add("--workload", choices=[*WORKLOADS, "both"], default="both")
    add("--database-url", help="a PostgreSQL database to use (its tables are emptied)")
    add("--redis-url", help="a Redis database to use (it is flushed between phases)")
    add(
        "--broker",
        help="an amqp:// URL: docingest also runs on this RabbitMQ node (its docingest queues "
        "are deleted between phases), reported beside Redis",
    )
    add(
        "--rabbitmq",
        action="store_true",
        help="like --broker, on a node of the run's own (Debian's rabbitmq-server, started as "
        "the test suite starts it: tests/rabbitmq.py)",
    )
    add("--api-workers", type=int, default=CORES, help="docingest API processes")
    add("--worker-processes", type=int, default=CORES, help="docingest worker processes")
    add(
        "--worker-threads",
        type=int,
        default=Settings.model_fields["worker_threads"].default,
        help="threads per docingest worker process",
    )
    add("--concurrency", type=int, default=64, help="connections for single POSTs")
    add("--bulk-size", type=int, default=500, help="documents per bulk request")
    add("--bulk-concurrency", type=int, default=4, help="connections for bulk requests")
    add("--generator", choices=["auto", "wrk", "python"], default="auto")
    add("--generator-threads", type=int, default=1, help="wrk threads")
    add("--timeout", type=int, default=600, help="seconds any one wait may take")
    add(
        "--model",
        type=Path,
        default=ROOT / "bench-results" / "model.skops",
        help="trained if missing",
    )
    add("--results-dir", type=Path, default=ROOT / "bench-results", help="logs of each run")
    add(
        "--soak",
        type=int,
        default=0,
        metavar="N",
        help="instead of the phases, the soak test: N documents in bulk requests with the "
        "workers running, memory watched throughout (benchmarks/soak.py)",
    )
    add("--soak-rate", type=float, default=3_000, help="documents a second the soak sends")
    add(
        "--feed",
        type=int,
        default=0,
        metavar="N",
        help="instead of the phases, N pairs of bulk end-to-end runs on BBC texts, alternating: "
        "with a consumer following GET /changes (its lag behind storage measured) and without "
        "(benchmarks/feed.py)",
    )
    add(
        "--grown",
        type=int,
        nargs="?",
        const=grown.DEFAULT_ROWS,
        default=0,
        metavar="N",
        help="instead of the phases, bulk end to end on an empty table and after N stored "
        f"documents ({grown.DEFAULT_ROWS:,} if N is left out): benchmarks/grown.py",
    )
    add("--grown-repeats", type=int, default=3, help="bulk phases on each side of --grown")
    add("--png", type=Path, help="save a bar chart of the rates here")
    add("--json", type=Path, help="also save the JSON report here, indented")
    return parser.parse_args(argv)


def source_digest() -> str:
    """A hash of docingest's code and its client's: a run must measure one version, and others
    may edit it."""
    digest = hashlib.sha256()
    code = [*(ROOT / "docingest").rglob("*.py"), *(ROOT / "clients" / "python").rglob("*.py")]
    for path in sorted(code):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def ensure_model(path: Path) -> Path:
    """Both designs classify with this one file; the built-in model is trained if missing."""
    if not path.exists():
        progress.log(f"training the built-in model into {path}")
        texts, labels = load_bbc()
        training.save_model(training.train(texts, labels), path)
    return path.resolve()


def record(results: DesignResults, phase: PhaseResult) -> None:
    """Keep a phase as soon as it is done, so a later failure still reports it."""
    results.phases[phase.name] = phase
    line = f"{results.design:9} {results.workload:5} {phase.name:13} {phase.rate:>10,.0f} docs/s"
    if phase.load is not None:
        line += f"  p50 {phase.load.p50_ms:.1f} ms  p99 {phase.load.p99_ms:.1f} ms"
    if phase.details.get("first_row_after_seconds") is not None:
        line += f"  first row after {phase.details['first_row_after_seconds']:.2f} s"
    if phase.check is not None:
        line += f"  lost {phase.check.lost}  duplicated {phase.check.duplicated}"
    progress.log(line + f"  (other load {phase.other_cores:.2f} cores)")


def run_design(
    context: Context, design: Design, results: DesignResults, args: argparse.Namespace, docs: int
) -> None:
    """The phases in order; a design without bulk support stops after the single POSTs."""
    with DesignRun(context, design, results.workload) as run:
        run.warm_up()
        modes = [("single", 1, args.concurrency)]
        if design.name.startswith("docingest"):
            modes.append(("bulk", args.bulk_size, args.bulk_concurrency))
        for mode, per_request, connections in modes:
            accepted = run.accept(f"accept_{mode}", docs, per_request, connections)
            record(results, accepted)
            record(results, run.drain(f"drain_{mode}", accepted))
            record(results, run.end_to_end(f"e2e_{mode}", docs, per_request, connections))
            run.stop_workers()
    results.peaks = run.peaks()


def plans(args: argparse.Namespace, servers: Servers, model: Path) -> list[tuple[Design, str, int]]:
    """docingest, on RabbitMQ too with --broker, then the baseline unless --baseline-docs 0:
    design, its database, docs."""
    env = service_env(servers.docingest_database_url, servers.redis_url, model)
    designs = [
        (
            docingest_design(env, args.api_workers, args.worker_processes, args.worker_threads),
            servers.docingest_database_url,
            args.docs,
        )
    ]
    if args.broker:
        env = service_env(servers.rabbitmq_database_url, args.broker, model)
        rabbitmq = docingest_design(
            env, args.api_workers, args.worker_processes, args.worker_threads, name=RABBITMQ
        )
        designs.append((rabbitmq, servers.rabbitmq_database_url, args.docs))
    if args.baseline_docs > 0:
        env = service_env(servers.baseline_database_url, servers.redis_url, model)
        baseline = baseline_design(env, BASELINE_PROCESSES, BASELINE_THREADS)
        designs.append((baseline, servers.baseline_database_url, args.baseline_docs))
    return designs


def run_all(
    args: argparse.Namespace,
    generator: Generator,
    model: Path,
    sampler: Sampler,
    servers: Servers,
    all_results: dict[str, dict[str, DesignResults]],
) -> None:
    """Fill `all_results` as phases end, so that a failure still reports what was measured."""
    texts, _ = load_bbc()
    workloads = list(WORKLOADS) if args.workload == "both" else [args.workload]
    for workload in workloads:
        all_results[workload] = {}
        for design, database_url, docs in plans(args, servers, model):
            context = Context(
                folder=args.run_folder,
                generator=generator,
                sampler=sampler,
                database_url=database_url,
                texts=texts,
                generator_threads=args.generator_threads,
                timeout=args.timeout,
            )
            results = all_results[workload][design.name] = DesignResults(design.name, workload)
            run_design(context, design, results, args, docs)


def describe_run(args: argparse.Namespace, generator: Generator) -> dict[str, Any]:
    return {
        "docs": args.docs,
        "baseline_docs": args.baseline_docs,
        "api_workers": args.api_workers,
        "worker_processes": args.worker_processes,
        "worker_threads": args.worker_threads,
        "baseline": {
            "api_processes": 1,
            "processes": BASELINE_PROCESSES,
            "threads": BASELINE_THREADS,
        },
        "concurrency": args.concurrency,
        "bulk_size": args.bulk_size,
        "bulk_concurrency": args.bulk_concurrency,
        "generator": generator.name,
        "generator_note": generator.note,
        "servers": {
            "postgres": "given" if args.database_url else "embedded",
            "redis": "given" if args.redis_url else "embedded",
            "rabbitmq": "embedded" if args.rabbitmq else "given" if args.broker else None,
        },
        "docingest_source": source_digest(),
        "cores": CORES,
        "python": platform.python_version(),
        "load_average_before": os.getloadavg(),
        "run_folder": str(args.run_folder),
    }


def print_report(
    all_results: dict[str, dict[str, DesignResults]],
    report: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    stdout = Console(width=132, highlight=False)
    for workload, results in all_results.items():
        bulk = f"{args.bulk_size}/request c={args.bulk_concurrency}"
        stdout.print(table(workload, WORKLOADS[workload], results, bulk))
    if report["source_changed_during_run"]:
        stdout.print("[bold red]docingest's code changed during the run: figures mix versions[/]")
    stdout.print(
        f"docingest {args.docs:,} docs a phase, baseline {args.baseline_docs:,}; "
        f"docingest source {report['docingest_source']}; generator: {report['generator_note']}; "
        f"wall time {report['wall_seconds']:.0f} s; "
        f"load average before {report['load_average_before'][0]:.2f}, after "
        f"{report['load_average_after'][0]:.2f}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(
            orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        )
    if args.png:
        save_chart(report, args.png)
        stdout.print(f"chart saved to {args.png}")
    print(orjson.dumps(report, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)


@contextlib.contextmanager
def own_rabbitmq(args: argparse.Namespace) -> Iterator[dict[str, int]]:
    """With --rabbitmq, a node for the run (args.broker becomes its URL), stopped at the end;
    yields the pid to watch for the CPU accounting, by label."""
    if not args.rabbitmq:
        yield {}
        return
    sys.path.insert(0, str(ROOT))  # the test suite's node, not a copy of it
    from tests.rabbitmq import EmbeddedRabbitMQ, installed

    if not installed():
        raise RuntimeError("--rabbitmq needs Debian's rabbitmq-server (as root: make rabbitmq)")
    node = EmbeddedRabbitMQ(args.run_folder / "rabbitmq")
    node.start()
    progress.log(f"RabbitMQ node {node.node} started in {node.start_seconds:.1f} s")
    args.broker = node.url
    try:
        yield {"rabbitmq": node.pid}
    finally:
        node.stop()


def run_feed(
    args: argparse.Namespace,
    generator: Generator,
    model: Path,
    context: dict[str, Any],
    started: float,
) -> int:
    """`--feed N`: the runs with and without a consumer of the feed, then their report."""
    try:
        report = feed.feed(args, generator, model)
    except (RuntimeError, TimeoutError, subprocess.SubprocessError) as failure:
        progress.print(f"[bold red]benchmark failed:[/] {failure}\nlogs in {args.run_folder}")
        return 1
    except KeyboardInterrupt:
        progress.print(f"interrupted; every service is stopped. Logs in {args.run_folder}")
        return 130
    finish_context(context, started)
    report = context | report | {"summary": feed.summary(report)}
    feed.print_report(report, args)
    return 0 if report["summary"]["lost"] == report["summary"]["duplicated"] == 0 else 1


def finish_context(context: dict[str, Any], started: float) -> None:
    """What the report says of the run as a whole, once it is over: was the machine quiet, was
    the code measured the code at the start."""
    context["load_average_after"] = os.getloadavg()
    context["source_changed_during_run"] = source_digest() != context["docingest_source"]
    context["wall_seconds"] = round(time.monotonic() - started, 1)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.png and importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("--png needs matplotlib: pip install -e '.[dev]'")
    # Ctrl-C and `kill` both stop every service, even where SIGINT came in ignored (`cmd &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    args.run_folder = (args.results_dir / f"run-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    (args.run_folder / "logs").mkdir(parents=True)
    generator = choose_generator(args.generator)
    progress.log(f"run folder {args.run_folder}; generator: {generator.note}")
    context = describe_run(args, generator)
    model = ensure_model(args.model)
    if args.soak:
        verdict = soak.soak(args, model)
        soak.print_verdict(verdict)
        return 0 if all(verdict["checks"].values()) else 1
    if args.feed:
        return run_feed(args, generator, model, context, started)
    if args.grown:
        verdict = grown.grown(args, model, generator) | {"run": context}
        grown.print_verdict(verdict)
        print(orjson.dumps(verdict, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)
        return 0 if verdict["lost"] == verdict["duplicated"] == 0 else 1
    all_results: dict[str, dict[str, DesignResults]] = {}
    error = None
    try:
        with (
            Sampler() as sampler,
            Servers(args.run_folder, args.database_url, args.redis_url) as servers,
            own_rabbitmq(args) as rabbitmq,
        ):
            sampler.watch("bench", os.getpid(), tree=False)
            for label, pid in (servers.pids() | rabbitmq).items():
                sampler.watch(label, pid)
            run_all(args, generator, model, sampler, servers, all_results)
    except (RuntimeError, TimeoutError, subprocess.SubprocessError) as failure:  # PhaseError too
        error = str(failure)
        progress.print(
            f"[bold red]benchmark failed:[/] {error}\nlogs in {args.run_folder / 'logs'}"
        )
    except KeyboardInterrupt:
        progress.print(f"interrupted; every service is stopped. Logs in {args.run_folder / 'logs'}")
        return 130
    finish_context(context, started)
    report = summary(all_results, context)
    if error:
        report["error"] = error
    print_report(all_results, report, args)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
