"""Whatever a test run starts dies with it, however the run ends.

Each pytest process (the main one, and each pytest-xdist worker) starts a watchdog: this file
run as a script, in a session of its own (a Ctrl-C to the terminal's process group or a
`kill -- -PGID` of make's group never reaches it), reading a pipe whose other end only the
pytest process holds. Twice a second the watchdog notes every descendant of that process,
and of the processes it was told about (`watch`: a daemon such as PostgreSQL's postmaster,
which pg_ctl detaches from the run); whatever it has seen stays noted with its start time.
When the pipe closes, because the run ended, was interrupted or was SIGKILLed, it sends
SIGTERM to each noted process still running (the same pid and start time: never a reused
pid), then SIGKILL after 5 s, and, if told a test network was built (`watch_network`),
removes its namespaces (tests/hosts.py). epmd is left alone, as the fixtures always did:
it is the machine's, shared by every Erlang node, other runs' included.

Before that, the fixtures' own teardown normally stops everything: `install_signal_handlers`
makes SIGTERM (as from `timeout`, or CI cancelling a job) raise KeyboardInterrupt, as SIGINT
does, so that pytest unwinds and runs the teardown of every fixture set up.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from typing import IO, NoReturn

import psutil

_watchdog: subprocess.Popen[bytes] | None = None
_pipe: IO[bytes] | None = None


def start() -> None:
    """Start this process's watchdog (once)."""
    global _watchdog, _pipe
    if _watchdog is not None and _watchdog.poll() is None:
        return
    _watchdog = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _pipe = _watchdog.stdin


def watchdog_pid() -> int | None:
    return _watchdog.pid if _watchdog is not None else None


def _tell(line: str) -> None:
    if _pipe is not None:
        with contextlib.suppress(OSError):
            _pipe.write(line.encode() + b"\n")
            _pipe.flush()


def watch(pid: int) -> None:
    """Also end `pid` and its descendants with the run, though it is no child of ours."""
    _tell(f"pid {pid}")


def watch_network() -> None:
    """A test network (tests/hosts.py) exists: remove it if the run dies before its teardown."""
    _tell("network")


def _terminate(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """SIGTERM unwinds the run like Ctrl-C: pytest then tears every fixture down."""
    signal.signal(signal.SIGTERM, _terminate)


# --- the watchdog itself -----------------------------------------------------------------------

Seen = dict[int, float]  # pid -> start time


def _note(seen: Seen, roots: list[int], own: int) -> None:
    for root in roots:
        try:
            process = psutil.Process(root)
            family = [process, *process.children(recursive=True)]
        except psutil.Error:
            continue
        for member in family:
            with contextlib.suppress(psutil.Error):
                if member.pid != own and member.name() != "epmd":
                    seen.setdefault(member.pid, member.create_time())


def _still_running(seen: Seen) -> list[psutil.Process]:
    alive = []
    for pid, started in seen.items():
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


def _end(seen: Seen) -> None:
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        alive = _still_running(seen)
        if not alive:
            return
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)
        psutil.wait_procs(alive, timeout=grace)


def _watch(owner: int) -> None:
    own = os.getpid()
    seen: Seen = {}
    roots = [owner]
    network = False
    stdin = sys.stdin.buffer
    buffer = b""
    with contextlib.suppress(psutil.Error):
        _note(seen, roots, own)
        seen.pop(owner, None)  # the owner exits by itself; a pid reused later is no concern
    while True:
        readable, _, _ = select.select([stdin], [], [], 0.5)
        if readable:
            chunk = os.read(stdin.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                kind, _, value = line.decode().partition(" ")
                if kind == "pid":
                    roots.append(int(value))
                elif kind == "network":
                    network = True
        _note(seen, roots, own)
        seen.pop(owner, None)
    _note(seen, roots[1:], own)
    _end(seen)
    if network:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from tests.hosts import remove_leftovers

        with contextlib.suppress(Exception):
            remove_leftovers()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch(int(sys.argv[1]))
