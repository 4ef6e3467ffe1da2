"""The fault schedule, drawn up front from the seed (the same seed and broker give the same
schedule), and the injector that plays it against a deployment.

Each fault has a kind, a target host, a start (seconds from the workload's start) and a
duration: how long the process stays killed, stopped or the host cut off before it is healed.
Two faults never hit one host at once, at most two run at a time, and at most one broker node
is down at a time (a RabbitMQ cluster keeps its majority; a whole-broker outage is already the
multi-host tests' scenario).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import redis

from docingest.embedded import wait_until
from tests.deployment import Deployment
from tests.faults import Process
from tests.hosts import Host, HostApi, RedisServer, ReplicatedRedis

FAULT_KINDS = (
    "sigkill-api",
    "sigterm-api",
    "sigstop-api",
    "sigkill-worker",
    "sigterm-worker",
    "sigstop-worker",
    "cut-host",
    "restart-broker",
    "restart-postgres",
    "broker-refuses-writes",
)
# Redis only (a RabbitMQ cluster's quorum queues fail over by themselves when a node is lost).
REDIS_FAILOVER = "redis-failover-to-lagging-replica"
MAX_CONCURRENT = 2
FIRST_AT = (2.0, 5.0)  # seconds into the workload
GAP = (2.0, 7.0)  # between two fault starts
LENGTH = (1.0, 8.0)


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str  # a host's name
    start: float
    duration: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Roles:
    """Host names by role, which decide the targets of each kind of fault."""

    apis: tuple[str, ...]
    workers: tuple[str, ...]
    brokers: tuple[str, ...]
    postgres: str
    kinds: tuple[str, ...] = FAULT_KINDS

    def targets(self, kind: str) -> tuple[str, ...]:
        if kind.endswith("-api"):
            return self.apis
        if kind.endswith("-worker"):
            return self.workers
        if kind in ("restart-broker", "broker-refuses-writes", REDIS_FAILOVER):
            return self.brokers
        if kind == "restart-postgres":
            return (self.postgres,)
        return (*self.apis, *self.workers, *self.brokers, self.postgres)


def make_schedule(seed: int, duration: float, roles: Roles) -> list[Fault]:
    """Faults starting within `duration` seconds and healed by its end, from `seed` alone."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    at = rng.uniform(*FIRST_AT)
    while at < duration - LENGTH[0]:
        kind = rng.choice(roles.kinds)
        target = rng.choice(roles.targets(kind))
        length = min(rng.uniform(*LENGTH), duration - at)
        active = [f for f in faults if f.start + f.duration > at]
        busy = {f.target for f in active}
        broker_down = any(f.target in roles.brokers for f in active)
        if (
            len(active) < MAX_CONCURRENT
            and target not in busy
            and not (target in roles.brokers and broker_down)
        ):
            faults.append(Fault(kind, target, round(at, 2), round(length, 2)))
        at += rng.uniform(*GAP)
    return faults


def roles_of(deployment: Deployment) -> Roles:
    site = deployment.site
    return Roles(
        apis=tuple(host.name for host in site.api_hosts),
        workers=tuple(host.name for host in site.worker_hosts),
        brokers=tuple(host.name for host in site.broker.hosts),
        postgres=site.postgres.host.name,
        kinds=(*FAULT_KINDS, REDIS_FAILOVER)
        if isinstance(site.server, ReplicatedRedis)
        else FAULT_KINDS,
    )


class Injector:
    """Plays a schedule against a deployment, each fault in a thread of its own that heals it
    after its duration; `heal` makes sure, at the end, that everything is back."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        site = deployment.site
        self.hosts: dict[str, Host] = {host.name: host for host in site.network.hosts.values()}
        self.apis: dict[str, HostApi] = {api.name.split("-")[0]: api for api in deployment.apis}
        self.workers: dict[str, Process] = {}
        for host in site.worker_hosts:
            self.workers[host.name] = next(p for p in host.processes if p.name.endswith("worker"))
        self.injected: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.roles = roles_of(deployment)
        self._active: list[Fault] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def play(self, schedule: list[Fault], started: float, stopping: threading.Event) -> None:
        """Start each fault at its time (from `started`, monotonic) until `stopping` is set.

        A fault whose target (or, for a broker host, another broker host) is still being
        healed waits for it: healing a RabbitMQ node takes longer than the schedule planned,
        and two nodes down at once would be another fault than the one drawn."""
        for fault in schedule:
            if stopping.wait(max(0.0, started + fault.start - time.monotonic())):
                return
            while self._conflicts(fault):
                if stopping.wait(0.2):
                    return
            with self._lock:
                self._active.append(fault)
            thread = threading.Thread(target=self._run, args=(fault, started), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _conflicts(self, fault: Fault) -> bool:
        brokers = self.roles.brokers
        with self._lock:
            return any(
                active.target == fault.target
                or (active.target in brokers and fault.target in brokers)
                for active in self._active
            )

    def _run(self, fault: Fault, started: float) -> None:
        began = time.monotonic()
        try:
            heal = self._inject(fault)
            time.sleep(max(0.0, began + fault.duration - time.monotonic()))
            heal()
        except Exception as error:  # reported with the table; heal() restores what is left
            self.errors.append(f"{fault}: {type(error).__name__}: {error}")
        with self._lock:
            self._active.remove(fault)
            self.injected.append(
                fault.as_json()
                | {
                    "began": round(began - started, 2),
                    "healed": round(time.monotonic() - started, 2),
                }
            )

    def _inject(self, fault: Fault) -> Any:
        """Inject `fault` now; returns what heals it."""
        kind, target = fault.kind, fault.target
        if kind == "cut-host":
            host = self.hosts[target]
            host.cut()
            return host.restore
        if kind == "restart-postgres":
            self.deployment.site.postgres.stop()
            return self.deployment.site.postgres.start
        if kind == "restart-broker":
            return self._restart_broker(target)
        if kind == REDIS_FAILOVER:
            return self._fail_over(fault)
        if kind == "broker-refuses-writes":
            return self._refuse_writes(target)
        process = self.apis[target] if kind.endswith("-api") else self.workers[target]
        if kind.startswith("sigstop"):
            os.killpg(process.pid, signal.SIGSTOP)
            return lambda: os.killpg(process.pid, signal.SIGCONT)
        if kind.startswith("sigkill"):
            process.kill()
        else:
            process.stop(timeout=15)  # SIGTERM, graceful; SIGKILL after 15 s
        return lambda: self._start(kind, target)

    def _start(self, kind: str, target: str) -> None:
        host = self.hosts[target]
        if kind.endswith("-api"):
            self.apis[target] = host.api(self.deployment.env, self.deployment.cwd)
        else:
            self.workers[target] = self.deployment.start_worker(host)

    def _restart_broker(self, target: str) -> Any:
        server = self.deployment.site.server
        host = self.hosts[target]
        if isinstance(server, ReplicatedRedis):
            return server.restart(host)
        host.kill_all()
        if isinstance(server, RedisServer):
            return server.start
        node = next(node for node in server.nodes if node.host is host)
        return lambda: node.wait(node.launch())

    def _fail_over(self, fault: Fault) -> Any:
        """Fail over from whichever host is the primary now. The workers no other fault holds
        pause while the replica falls behind, so that a backlog waits on the primary when it
        dies, as it would during a database outage: what the replica lacks is then still
        queued, and lost unless each 202 waited for the replica (REDIS_MIN_REPLICAS)."""
        server = self.deployment.site.server
        assert isinstance(server, ReplicatedRedis)
        with self._lock:
            busy = {active.target for active in self._active if active is not fault}
        paused = [process for name, process in self.workers.items() if name not in busy]
        for process in paused:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGSTOP)
        try:
            return server.fail_over(lag=min(3.0, fault.duration / 2))
        finally:
            for process in paused:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGCONT)

    def _refuse_writes(self, target: str) -> Any:
        """Redis out of memory (`maxmemory` 1 byte, no eviction: every write is refused with
        OOM); RabbitMQ's memory alarm (a watermark no node is under: publishers are blocked
        cluster-wide, set through `target`'s node)."""
        server = self.deployment.site.server
        if isinstance(server, RedisServer):
            client = redis.Redis.from_url(server.url, socket_timeout=10)
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", "1")
            return lambda: client.config_set("maxmemory", "0")
        node = next(node for node in server.nodes if node.host.name == target)
        node.ctl("set_vm_memory_high_watermark", "0.000001")
        return lambda: node.ctl("set_vm_memory_high_watermark", "0.4")

    def heal(self) -> None:
        """Wait for every fault's own healing, then restore whatever is still off: hosts, a
        stopped or dead process, a server that did not come back."""
        for thread in self._threads:
            thread.join(120)
        for host in self.hosts.values():
            host.restore()
        if isinstance(self.deployment.site.server, ReplicatedRedis):
            self.deployment.site.server.ensure_running()
        for process in [*self.apis.values(), *self.workers.values()]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)
        for name, process in list(self.apis.items()):
            if not process.alive():
                self._start("sigkill-api", name)
        for name, process in list(self.workers.items()):
            if not process.alive():
                self._start("sigkill-worker", name)
        for api in self.apis.values():
            wait_until(functools.partial(_ready, api), 120, f"{api.name} ready after healing")

    def counts(self) -> dict[str, int]:
        tally = dict.fromkeys(self.roles.kinds, 0)
        for fault in self.injected:
            tally[fault["kind"]] += 1
        return tally


def _ready(api: HostApi) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{api.base_url}/ready", timeout=5, trust_env=False).status_code == 200
    return False
