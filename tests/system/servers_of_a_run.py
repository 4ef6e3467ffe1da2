"""Not a test module of the suite (its name is no `test_*.py`): tests/system/test_reaper.py runs
it in a pytest of its own, which it interrupts once the servers below are up."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from docingest.embedded import EmbeddedPostgres, EmbeddedRedis
from tests import rabbitmq
from tests.faults import Process, Processes

# A process that forks a child of its own and then waits, as a Dramatiq worker does.
FORKING_SLEEPER = "import os, time; os.fork(); time.sleep(600)"


def test_servers_up_until_interrupted(
    redis_server: EmbeddedRedis | None,
    postgres_server: EmbeddedPostgres | None,
    procs: Processes,
    request: pytest.FixtureRequest,
) -> None:
    assert redis_server is not None
    assert redis_server._process is not None
    assert postgres_server is not None
    sleeper = Process("sleeper", [sys.executable, "-c", FORKING_SLEEPER], {}, procs.cwd)
    procs.started.append(sleeper)
    servers = {
        "redis": redis_server._process.pid,
        "postmaster": int((postgres_server.data_dir / "postmaster.pid").read_text().split()[0]),
        "process": sleeper.pid,
    }
    if rabbitmq.installed():
        servers["rabbitmq"] = request.getfixturevalue("rabbitmq_server").pid
    Path(os.environ["SERVERS_OF_A_RUN"]).write_text(json.dumps(servers))
    threading.Event().wait(600)  # until the run is interrupted
