"""The figures of a run: one table per workload, one JSON document, and an optional chart."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from corpus import WORKLOADS
from measure import PhaseResult
from rich.table import Table

MB = 1024 * 1024
DESIGNS = ("docingest", "baseline")
# docingest on RabbitMQ (bench.py --broker): a column of its own; ratios stay Redis vs article.
RABBITMQ = "docingest-rabbitmq"


@dataclass(slots=True)
class DesignResults:
    """Every phase of one design under one workload, and its processes' peak RSS."""

    design: str
    workload: str
    phases: dict[str, PhaseResult] = field(default_factory=dict)
    peaks: dict[str, dict[int, int]] = field(default_factory=dict)

    def rate(self, phase: str) -> float | None:
        result = self.phases.get(phase)
        return result.rate if result else None

    def load(self, phase: str, attribute: str) -> float | None:
        result = self.phases.get(phase)
        if result is None or result.load is None:
            return None
        value: float = getattr(result.load, attribute)
        return value

    def detail(self, phase: str, key: str) -> float | None:
        result = self.phases.get(phase)
        return result.details.get(key) if result else None

    def peak_mb(self, role: str) -> float | None:
        peaks = self.peaks.get(role)
        return max(peaks.values()) / MB if peaks else None

    def check_total(self, attribute: str) -> int | None:
        checks = [phase.check for phase in self.phases.values() if phase.check is not None]
        return sum(getattr(check, attribute) for check in checks) if checks else None

    def other_cores(self) -> float | None:
        return max((phase.other_cores for phase in self.phases.values()), default=None)


@dataclass(frozen=True, slots=True)
class Target:
    """The issue's target for a docingest figure: `value >= limit` or `value <= limit`."""

    limit: float
    at_least: bool

    def met(self, value: float) -> bool:
        return (operator.ge if self.at_least else operator.le)(value, self.limit)

    def describe(self) -> str:
        if self.limit == 0 and not self.at_least:
            return "0"
        return f"{'≥' if self.at_least else '≤'} {self.limit:,.0f}"


@dataclass(frozen=True, slots=True)
class Figure:
    key: str
    label: str
    value: Callable[[DesignResults], float | None]
    digits: int = 0
    targets: Mapping[str, Target] = field(default_factory=dict)  # per workload
    comparable: bool = True


AT_MOST_ZERO = Target(0, at_least=False)


def _cpu(phase: str, role: str) -> Callable[[DesignResults], float | None]:
    def value(results: DesignResults) -> float | None:
        spent = results.detail(phase, "cpu_ms_per_doc")
        return spent.get(role) if isinstance(spent, dict) else None

    return value


CPU_FIGURES = tuple(
    Figure(
        f"cpu_ms_{phase}_{role}",
        f"  CPU ms/doc, {what}: {role}",
        _cpu(phase, role),
        3,
        comparable=False,
    )
    for phase, what in (
        ("accept_single", "accept single"),
        ("drain_single", "drain single"),
        ("accept_bulk", "accept bulk"),
        ("drain_bulk", "drain bulk"),
    )
    for role in ("api", "workers", "postgres", "redis", "rabbitmq")
)

FIGURES = (
    Figure(
        "accept_single_docs_per_s",
        "accept, single POST c=64 (docs/s)",
        lambda r: r.rate("accept_single"),
        targets={"bbc": Target(4000, at_least=True)},
    ),
    Figure(
        "accept_single_p50_ms", "  latency p50 (ms)", lambda r: r.load("accept_single", "p50_ms"), 1
    ),
    Figure(
        "accept_single_p99_ms",
        "  latency p99 (ms)",
        lambda r: r.load("accept_single", "p99_ms"),
        1,
        targets={"bbc": Target(50, at_least=False)},
    ),
    Figure(
        "generator_cpu_pct",
        "  load generator CPU (% of machine)",
        lambda r: _percent(r.load("accept_single", "cpu_share")),
        1,
        comparable=False,
    ),
    Figure(
        "drain_single_docs_per_s",
        "drain, queue of single POSTs (docs/s)",
        lambda r: r.rate("drain_single"),
    ),
    Figure(
        "e2e_single_docs_per_s",
        "end to end, single POST c=64 (docs/s)",
        lambda r: r.rate("e2e_single"),
        targets={"bbc": Target(2000, at_least=True)},
    ),
    Figure(
        "e2e_single_first_row_s",
        "  first row stored after (s)",
        lambda r: r.detail("e2e_single", "first_row_after_seconds"),
        2,
        comparable=False,
    ),
    Figure(
        "accept_bulk_docs_per_s",
        "accept, bulk {bulk} (docs/s)",
        lambda r: r.rate("accept_bulk"),
        targets={"bbc": Target(30000, at_least=True)},
    ),
    Figure(
        "drain_bulk_docs_per_s",
        "drain, queue of bulk requests (docs/s)",
        lambda r: r.rate("drain_bulk"),
    ),
    Figure(
        "e2e_bulk_docs_per_s",
        "end to end, bulk {bulk} (docs/s)",
        lambda r: r.rate("e2e_bulk"),
        targets={"bbc": Target(4000, at_least=True), "short": Target(15000, at_least=True)},
    ),
    Figure(
        "e2e_bulk_first_row_s",
        "  first row stored after (s)",
        lambda r: r.detail("e2e_bulk", "first_row_after_seconds"),
        2,
        comparable=False,
    ),
    Figure("api_peak_rss_mb", "peak RSS, API process (MB)", lambda r: r.peak_mb("api")),
    Figure(
        "worker_peak_rss_mb",
        "peak RSS, worker process (MB)",
        lambda r: r.peak_mb("workers"),
        targets={workload: Target(250, at_least=False) for workload in WORKLOADS},
    ),
    Figure(
        "lost",
        "lost documents",
        lambda r: r.check_total("lost"),
        targets=dict.fromkeys(WORKLOADS, AT_MOST_ZERO),
    ),
    Figure(
        "duplicated",
        "duplicated documents",
        lambda r: r.check_total("duplicated"),
        targets=dict.fromkeys(WORKLOADS, AT_MOST_ZERO),
    ),
    Figure(
        "other_load_cores",
        "other load on the machine (cores, worst phase)",
        lambda r: r.other_cores(),
        2,
        comparable=False,
    ),
    *CPU_FIGURES,
)


def _percent(share: float | None) -> float | None:
    return None if share is None else share * 100


def _format(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(figure: Figure, results: dict[str, DesignResults]) -> float | None:
    """docingest / baseline, for figures both designs have."""
    if not figure.comparable or "baseline" not in results:
        return None
    ours, theirs = (figure.value(results[design]) for design in DESIGNS)
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def table(workload: str, description: str, results: dict[str, DesignResults], bulk: str) -> Table:
    output = Table(title=f"{workload}: {description}", title_justify="left")
    rabbitmq = RABBITMQ in results
    headings = ["figure", "docingest", "baseline", "docingest/baseline", "target", "met"]
    if rabbitmq:
        headings.insert(2, "on RabbitMQ")
    for heading in headings:
        output.add_column(heading, justify="left" if heading == "figure" else "right")
    for figure in FIGURES:
        values = [figure.value(results[d]) if d in results else None for d in DESIGNS]
        extra = [_format(figure.value(results[RABBITMQ]), figure.digits)] if rabbitmq else []
        target = figure.targets.get(workload)
        met = "-"
        if target is not None and values[0] is not None:
            met = "yes" if target.met(values[0]) else "[bold red]NO[/]"
        factor = ratio(figure, results)
        output.add_row(
            figure.label.format(bulk=bulk),
            _format(values[0], figure.digits),
            *extra,
            _format(values[1], figure.digits),
            "-" if factor is None else f"{factor:,.2f}x",
            target.describe() if target else "",
            met,
        )
    return output


def summary(
    all_results: dict[str, dict[str, DesignResults]], context: dict[str, Any]
) -> dict[str, Any]:
    """Everything the tables show and the per-phase details, for one JSON line."""
    workloads: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []
    for workload, results in all_results.items():
        figures = {
            design: {figure.key: figure.value(result) for figure in FIGURES}
            for design, result in results.items()
        }
        ratios = {figure.key: ratio(figure, results) for figure in FIGURES if figure.comparable}
        workloads[workload] = {
            **figures,
            "ratios": {key: value for key, value in ratios.items() if value is not None},
            "phases": {design: _phases(result) for design, result in results.items()},
        }
        for figure in FIGURES:
            target = figure.targets.get(workload)
            value = figures.get("docingest", {}).get(figure.key)
            if target is not None and value is not None:
                targets.append(
                    {
                        "workload": workload,
                        "figure": figure.key,
                        "target": target.describe(),
                        "value": value,
                        "met": target.met(value),
                    }
                )
    return {
        **context,
        "workloads": workloads,
        "targets": targets,
        "all_targets_met": all(target["met"] for target in targets),
    }


def _phases(result: DesignResults) -> dict[str, Any]:
    phases: dict[str, Any] = {}
    for name, phase in result.phases.items():
        entry: dict[str, Any] = {
            "docs": phase.docs,
            "seconds": round(phase.seconds, 4),
            "docs_per_s": round(phase.rate, 1),
            "other_load_cores": round(phase.other_cores, 3),
            **phase.details,
        }
        if phase.load is not None:
            load = phase.load
            entry["load"] = {
                "generator": load.generator,
                "requests": load.requests,
                "accepted": len(load.accepted),
                "non_202": load.statuses,
                "socket_errors": load.errors,
                "accept_seconds": round(load.seconds, 4),
                "p50_ms": round(load.p50_ms, 2),
                "p99_ms": round(load.p99_ms, 2),
                "max_ms": round(load.max_ms, 2),
                "generator_cpu_seconds": round(load.cpu_seconds - load.init_cpu_seconds, 3),
                "generator_cpu_pct_of_machine": round(load.cpu_share * 100, 2),
            }
        if phase.check is not None:
            entry["check"] = asdict(phase.check)
        phases[name] = entry
    phases["peak_rss_mb"] = {
        role: {str(pid): round(rss / MB, 1) for pid, rss in peaks.items()}
        for role, peaks in result.peaks.items()
    }
    return phases


THROUGHPUT_KEYS = (
    ("accept_single_docs_per_s", "accept\nsingle"),
    ("drain_single_docs_per_s", "drain\nsingle"),
    ("e2e_single_docs_per_s", "end to end\nsingle"),
    ("accept_bulk_docs_per_s", "accept\nbulk"),
    ("drain_bulk_docs_per_s", "drain\nbulk"),
    ("e2e_bulk_docs_per_s", "end to end\nbulk"),
)


def save_chart(report: dict[str, Any], path: Path) -> None:
    """Grouped bars, docingest beside the baseline, on a log scale: the rates span 100 times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = report["workloads"]
    figure, axes = plt.subplots(
        1, len(workloads), figsize=(6.5 * len(workloads), 4.8), squeeze=False
    )
    for axis, (workload, data) in zip(axes[0], workloads.items(), strict=True):
        positions = range(len(THROUGHPUT_KEYS))
        for offset, design in ((-0.2, "docingest"), (0.2, "baseline")):
            values = [(data.get(design) or {}).get(key) or 0 for key, _ in THROUGHPUT_KEYS]
            bars = axis.bar([p + offset for p in positions], values, width=0.4, label=design)
            axis.bar_label(bars, labels=[f"{v:,.0f}" if v else "" for v in values], fontsize=7)
        axis.set_xticks(list(positions), [label for _, label in THROUGHPUT_KEYS], fontsize=8)
        axis.set_yscale("log")
        axis.set_ylabel("documents per second")
        axis.set_title(
            f"{workload} ({report['docs']:,} docs; baseline {report['baseline_docs']:,})"
        )
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
