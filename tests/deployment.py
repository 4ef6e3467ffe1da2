"""A deployment on several hosts (tests/hosts.py): PostgreSQL, the broker (Redis, or a RabbitMQ
cluster), two API hosts and two worker hosts. Shared by the multi-host tests and the fault
campaign (tests/chaos), so that both drive the same site, assembled in one place."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from docingest.db import make_engine, migrate
from docingest.keys import ApiKey, Scope, digest, generate_key
from docingest.model.registry import ensure_active
from tests.faults import Process, service_env
from tests.hosts import (
    PREFIX,
    SUBNET,
    Broker,
    Host,
    HostApi,
    Network,
    PostgresServer,
    RabbitCluster,
    RedisServer,
    ReplicatedRedis,
    running,
)

RABBITMQ_NODES = 3  # a cluster, one node per host
BROKERS = ("redis", "amqp")


@dataclass
class Site:
    """The servers in their hosts (once per broker), and the empty hosts for the service."""

    broker_kind: str
    network: Network
    postgres: PostgresServer
    broker: Broker
    server: RedisServer | RabbitCluster
    api_hosts: list[Host]
    worker_hosts: list[Host]


@contextlib.contextmanager
def build_site(kind: str, *, redis_replica: bool = False) -> Iterator[Site]:
    """Network, PostgreSQL and the broker of `kind` ("redis" or "amqp"), torn down on exit;
    `redis_replica`: Redis with a replica to fail over to, behind a floating address."""
    if kind not in BROKERS:
        raise ValueError(f"unknown broker {kind!r}, expected one of {BROKERS}")
    # Outside pytest's temporary root, which is private to root: PostgreSQL runs as its own user.
    data_dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{kind}-"))
    try:
        with Network() as network, contextlib.ExitStack() as servers:
            postgres = servers.enter_context(
                running(PostgresServer(network.host("pg"), data_dir / "pg"))
            )
            server: RedisServer | RabbitCluster
            if kind == "redis" and redis_replica:
                pair = [network.host("broker"), network.host("replica")]
                server = ReplicatedRedis(pair, data_dir / "redis", f"{SUBNET}.200")
            elif kind == "redis":
                server = RedisServer(network.host("broker"), data_dir / "redis")
            else:
                nodes = [network.host(f"rabbit{n}") for n in range(1, RABBITMQ_NODES + 1)]
                server = RabbitCluster(nodes, data_dir)
            broker: Broker = servers.enter_context(running(server))
            if isinstance(server, RabbitCluster):
                print(f"RabbitMQ: {len(nodes)} nodes clustered in {server.started_in:.1f} s")
            yield Site(
                broker_kind=kind,
                network=network,
                postgres=postgres,
                broker=broker,
                server=server,
                api_hosts=[network.host("api1"), network.host("api2")],
                worker_hosts=[network.host("worker1"), network.host("worker2")],
            )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class Deployment:
    """The service on a site: a fresh database, an API per API host, a worker per worker host."""

    site: Site
    database_url: str
    env: dict[str, str]
    key: str
    cwd: Path
    apis: list[HostApi] = field(default_factory=list)

    def start_worker(self, host: Host) -> Process:
        args = [sys.executable, "-m", "docingest", "worker"]
        return host.popen("worker", args, self.env, self.cwd)


@contextlib.contextmanager
def deploy(site: Site, model_path: Path, cwd: Path, **env: str) -> Iterator[Deployment]:
    """Start the service on `site`; on exit, print the hosts' logs, kill their processes, and
    leave the broker restored and empty for the next deployment. `env` adds settings."""
    database_url = site.postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        ensure_active(engine, model_path)  # once, before two workers would race to import it
    finally:
        engine.dispose()
    key = generate_key()
    settings = {
        "API_KEYS": ApiKey("multihost", frozenset({Scope.ADMIN}), digest(key)).env_entry(),
        "BROKER_TIMEOUT_SECONDS": "2", "RETRY_AFTER_SECONDS": "1", "WORKER_PROCESSES": "1",
        "WORKER_THREADS": "2",
    } | env  # fmt: skip
    full_env = service_env(
        database_url=database_url, broker_url=site.broker.url, model_path=model_path,
        data_dir=cwd, **settings,
    )  # fmt: skip
    deployment = Deployment(site, database_url, full_env, key, cwd)
    hosts = site.api_hosts + site.worker_hosts
    try:
        deployment.apis = [host.api(full_env, cwd) for host in site.api_hosts]
        for api in deployment.apis:
            api.wait_ready()
        for host in site.worker_hosts:
            deployment.start_worker(host)
        yield deployment
    finally:
        for host in hosts:
            host.restore()
            print(host.log_tails())
            host.kill_all()
        site.broker.restore()
        site.broker.purge()
