"""An interrupted run leaves no server behind (tests/reaper.py): a pytest that started a Redis,
a PostgreSQL, a RabbitMQ node (when installed) and a process of the harness gets SIGTERM (its
fixtures' teardown stops them; Ctrl-C's SIGINT takes the same path) or SIGKILL (no teardown at
all: the watchdog ends them); then none of its processes may be running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from docingest.embedded import wait_until

ROOT = Path(__file__).resolve().parents[2]
CASE = Path(__file__).with_name("servers_of_a_run.py")


def _family(pids: list[int]) -> dict[int, float]:
    """These processes and their descendants, with their start times."""
    found: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            for member in [process, *process.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    found[member.pid] = member.create_time()
    return found


def _running(family: dict[int, float]) -> list[str]:
    running = []
    for pid, started in family.items():
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                running.append(f"{pid} {' '.join(process.cmdline())[:120]}")
    return running


# SIGINT takes SIGTERM's path: tests/reaper.py makes SIGTERM raise KeyboardInterrupt too.
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_an_interrupted_run_leaves_no_process_running(
    signum: signal.Signals, tmp_path: Path
) -> None:
    servers_file = tmp_path / "servers.json"
    # Servers of its own, and a pytest of its own (no xdist worker's variables).
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("PYTEST_")
    }
    env["SERVERS_OF_A_RUN"] = str(servers_file)
    log_path = tmp_path / "pytest.log"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(CASE),
               f"--basetemp={tmp_path / 'run'}"]  # fmt: skip
    with log_path.open("wb") as log:
        run = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: servers_file.exists() or run.poll() is not None, 180, "the servers")
        assert run.poll() is None, log_path.read_text()
        servers = json.loads(servers_file.read_text())
        family = _family([run.pid, *servers.values()])
        names = {psutil.Process(pid).name() for pid in family if psutil.pid_exists(pid)}
        assert {"valkey-server", "postgres"} <= names, names
        family.pop(run.pid)
        run.send_signal(signum)
        run.wait(90)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not _running(family), 30, "every process of the run ended")
        assert _running(family) == [], log_path.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
