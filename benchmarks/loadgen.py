"""Load generators: wrk with bench.lua, or pyload.py when wrk cannot be had.

Both read the same body files, send each body exactly once, and write the same result file, so
the harness treats them alike. The generator runs as its own process and is reaped with wait4,
which gives its exact CPU time: on 2 cores it competes with the service, and that share is
reported.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "bench.lua"
PYTHON_GENERATOR = HERE / "pyload.py"
SOCKET_TIMEOUT = "30s"


@dataclass(frozen=True, slots=True)
class Generator:
    name: str
    note: str

    def command(self, job: LoadJob) -> list[str]:
        """The command line of one run; both tools take the same positional arguments."""
        args = [str(job.bodies_prefix), job.path, job.content_type, str(job.out_dir)]
        if self.name == "wrk":
            return [
                "wrk",
                "-t", str(job.threads),
                "-c", str(job.connections),
                "-d", f"{job.timeout}s",
                "--timeout", SOCKET_TIMEOUT,
                "-s", str(WRK_SCRIPT),
                job.url, "--", *args, str(job.threads),
            ]  # fmt: skip
        return [
            sys.executable,
            str(PYTHON_GENERATOR),
            job.url,
            *args,
            "--connections",
            str(job.connections),
            "--timeout",
            str(job.timeout),
        ]


@dataclass(frozen=True, slots=True)
class LoadJob:
    url: str
    path: str
    content_type: str
    bodies_prefix: Path
    out_dir: Path
    threads: int
    connections: int
    timeout: int


@dataclass(slots=True)
class LoadResult:
    generator: str
    first_send: float
    last_response: float
    requests: int
    responses: int
    complete: bool
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_seconds: float
    init_cpu_seconds: float
    accepted: dict[str, int | None] = field(repr=False)
    statuses: dict[int, int]
    errors: dict[str, int]

    @property
    def seconds(self) -> float:
        return self.last_response - self.first_send

    @property
    def rate(self) -> float:
        """Accepted documents per second, first request sent to last response received."""
        return len(self.accepted) / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_share(self) -> float:
        """The generator's CPU while sending, as a fraction of the whole machine.

        Reading the body files before the first request is left out.
        """
        if self.seconds <= 0:
            return 0.0
        sending = max(0.0, self.cpu_seconds - self.init_cpu_seconds)
        return sending / self.seconds / (os.cpu_count() or 1)


def choose_generator(requested: str) -> Generator:
    """wrk if asked or available (installed with apt-get as root); else the Python one."""
    if requested == "python":
        return Generator("python", "Python asyncio generator (asked for with --generator)")
    problem = _ensure_wrk()
    if problem is None:
        return Generator("wrk", "wrk (Debian package) with benchmarks/bench.lua")
    if requested == "wrk":
        raise SystemExit(f"--generator wrk: {problem}")
    return Generator(
        "python",
        f"Python asyncio generator, because wrk is unavailable ({problem}); its own CPU use "
        "competes with the service more than wrk's would",
    )


def _ensure_wrk() -> str | None:
    """None when wrk is ready, else why not. A stale package list makes the first try fail."""
    if shutil.which("wrk"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not installed, and installing it needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install, update = ["apt-get", "install", "-y", "wrk"], ["apt-get", "update"]
    for commands in ([install], [update, install]):
        for command in commands:
            attempt = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=600, check=False
            )
        if shutil.which("wrk"):
            return None
    return f"apt-get install -y wrk failed: {attempt.stderr.strip()[-300:]}"


def run_load(
    generator: Generator, job: LoadJob, log_path: Path, on_wait: Callable[[], None]
) -> LoadResult:
    """Run one generator to completion (or its timeout) and read its result file.

    `on_wait` is called about every 10 ms meanwhile, to watch the service during the load.
    """
    job.out_dir.mkdir(parents=True, exist_ok=True)
    for stale in job.out_dir.iterdir():
        stale.unlink()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            generator.command(job),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        cpu_seconds = _reap(process, time.monotonic() + job.timeout + 60, on_wait)
    result_file = job.out_dir / "result.txt"
    if process.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"{generator.name} failed (exit {process.returncode}); see {log_path}")
    return parse_result(generator.name, result_file, cpu_seconds)


def _reap(process: subprocess.Popen[bytes], deadline: float, on_wait: Callable[[], None]) -> float:
    """Wait for the process with wait4, which reports its CPU time; kill it at the deadline."""
    try:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                return usage.ru_utime + usage.ru_stime
            if time.monotonic() > deadline:
                raise TimeoutError(f"load generator still running at its deadline: {process.args}")
            on_wait()
            time.sleep(0.01)
    except BaseException:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        raise


def parse_result(name: str, path: Path, cpu_seconds: float) -> LoadResult:
    stats: dict[str, float] = {}
    finished: list[bool] = []
    accepted: dict[str, int | None] = {}
    statuses: dict[int, int] = {}
    for line in path.read_text().splitlines():
        kind, *values = line.split()
        if kind == "ok":
            accepted[values[0]] = None if values[1] == "-" else int(values[1])
        elif kind == "status":
            statuses[int(values[0])] = statuses.get(int(values[0]), 0) + int(values[1])
        elif kind == "finished":
            finished.append(float(values[0]) == 1)
        else:
            stats[kind] = float(values[0])
    sent, responses = int(stats["sent"]), int(stats["responses"])
    return LoadResult(
        generator=name,
        first_send=stats["first_send"],
        last_response=stats["last_response"],
        requests=sent,
        responses=responses,
        complete=all(finished) and sent == int(stats["total"]),
        p50_ms=stats["p50_us"] / 1000,
        p99_ms=stats["p99_us"] / 1000,
        max_ms=stats["max_us"] / 1000,
        cpu_seconds=cpu_seconds,
        init_cpu_seconds=stats["init_cpu"],
        accepted=accepted,
        statuses=statuses,
        errors={
            key.removeprefix("error_"): int(value)
            for key, value in stats.items()
            if key.startswith("error_") and value
        },
    )
