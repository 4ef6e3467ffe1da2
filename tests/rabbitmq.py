"""A RabbitMQ node of the test suite's own, from Debian's `rabbitmq-server` package.

The machine may run its own RabbitMQ (the system node, on 5672); the tests never use or touch
it. This node has its own name, ports, data, logs, configuration, plugins (none) and Erlang
cookie, all under one temporary folder; it only shares the machine's epmd, where its distinct
node name keeps it apart. The scripts under /usr/lib/rabbitmq/bin run as the calling user (the
/usr/sbin wrappers would switch to the `rabbitmq` user and read the system node's settings).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

import pika
import pika.exceptions

from docingest.embedded import free_port

SCRIPTS = Path("/usr/lib/rabbitmq/bin")


def installed() -> bool:
    return (SCRIPTS / "rabbitmq-server").exists()


class EmbeddedRabbitMQ:
    """`start` returns once the node accepts AMQP connections; `url` is its AMQP URL."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir.resolve()
        self.node = f"ditest-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = _free_port_below(55_000)  # the CLI's own ports are this + 10000..10010
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.start_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._env = self._environment()

    def _environment(self) -> dict[str, str]:
        """Every path and port the scripts would otherwise take from the system node's."""
        base = self.base_dir
        home = base / "home"
        for folder in (home, base / "mnesia", base / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(uuid.uuid4().hex.upper())
            cookie.chmod(0o400)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.file.level = info\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq/rabbitmq-env.conf
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return keep | {
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.dist_port + 10_000),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self.dist_port + 10_010),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        }

    def start(self, timeout: float = 30) -> None:
        """Start the node (same name, ports and data on a restart) and wait for AMQP."""
        started = time.monotonic()
        log = (self.base_dir / "server.out").open("ab")
        with log:
            self._process = subprocess.Popen(
                [str(SCRIPTS / "rabbitmq-server")],
                env=self._env,
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + timeout
        while not self._accepts_amqp():
            if self._process.poll() is not None:
                raise RuntimeError(f"RabbitMQ exited at start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"RabbitMQ not up after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.2)
        self.start_seconds = time.monotonic() - started

    @property
    def pid(self) -> int:
        """The start script's process; the Erlang VM is its child (for CPU accounting)."""
        if self._process is None:
            raise RuntimeError("the node is not running")
        return self._process.pid

    def _accepts_amqp(self) -> bool:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            with contextlib.suppress(pika.exceptions.AMQPError):
                pika.BlockingConnection(pika.URLParameters(self.url)).close()
                return True
        return False

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM: RabbitMQ shuts down cleanly (quorum queues write their state); then the
        process group goes, helpers included (epmd is not in it: it outlives every node)."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL to the whole group: a crash of the node."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._process = None

    def new_vhost(self) -> str:
        """A new virtual host, open to guest; its URL."""
        vhost = f"test-{uuid.uuid4().hex[:12]}"
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return self.url.removesuffix("%2F") + vhost

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """`rabbitmqctl -n NODE …` against this node only; its standard output."""
        result = subprocess.run(
            [str(SCRIPTS / "rabbitmqctl"), "-n", self.node, *args],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return result.stdout

    def log_tail(self, lines: int = 30) -> str:
        logs = [self.base_dir / "server.out", *sorted((self.base_dir / "log").glob("*.log"))]
        tails = []
        for path in logs:
            with contextlib.suppress(OSError):
                tails += [
                    f"--- {path.name}",
                    *path.read_text(errors="replace").splitlines()[-lines:],
                ]
        return "\n".join(tails)

    def remove(self) -> None:
        shutil.rmtree(self.base_dir, ignore_errors=True)

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


def _free_port_below(limit: int) -> int:
    """A free port under `limit`, tried at random above the ephemeral range's usual start."""
    for _ in range(100):
        port = random.randint(20_000, limit)
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return port
    raise RuntimeError(f"no free port below {limit}")
