"""The campaign: build the site, deploy, run the workload while the schedule's faults are
injected, heal, drain, read the final state and check the history against it.

`campaign(...)` returns the exit status (0: no anomaly) after printing the table and, last,
`chaos: seed=<n> broker=<b> operations=<n> faults=<n> anomalies=<n>`. On an anomaly (or an
error of the campaign itself) the history, the schedule and the anomalies go to a folder it
names; the same seed replays the same schedule (`tests/chaos/schedule.py`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from docingest.db import make_engine
from tests.chaos.checker import Anomaly, check, counts
from tests.chaos.history import Final, History, Op, Row, dump
from tests.chaos.schedule import Fault, Injector, make_schedule, roles_of
from tests.chaos.workload import REQUEST_TIMEOUT, Client, make_ids
from tests.deployment import Deployment, build_site, deploy
from tests.faults import pending_documents
from tests.hosts import RabbitCluster, missing_requirements

CLIENTS = 6
IDS = 200
DRAIN_TIMEOUT = 180.0
# Pending entries a fault leaked (an API killed between reserving and publishing, a publish
# whose outcome stayed unknown) are the reconciler's to clear, by default after 10 minutes, and
# on RabbitMQ, which cannot say what its queues carry, once a day old: soon enough here for the
# final check to see whether it does.
RECONCILE = {
    "RECONCILE_SECONDS": "5",
    "RECONCILE_AFTER_SECONDS": "15",
    "RECONCILE_ABANDON_SECONDS": "60",
}


# Redis runs with a replica it fails over to; a 202 waits for the replica to hold the messages,
# so that the failover loses none (docs/deploy.md).
REPLICATED = {"REDIS_MIN_REPLICAS": "1"}


def requirements(broker: str) -> str | None:
    """Why the campaign cannot run here, or None."""
    if (missing := missing_requirements()) is not None:
        return missing
    if broker == "amqp" and not RabbitCluster.available():
        return "Debian's rabbitmq-server is not installed (`make rabbitmq` installs it as root)"
    return None


def campaign(
    *, duration: float, seed: int, broker: str, model_path: Path, out_dir: Path, keep: bool = False
) -> int:
    """Run one campaign; its exit status. `out_dir` receives the service's logs and the
    servers' output (`campaign.log`), and the history on an anomaly; it is removed when nothing
    was found, unless `keep`."""
    if (missing := requirements(broker)) is not None:
        print(f"chaos: cannot run: {missing}")
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    say = functools.partial(print, file=sys.stdout, flush=True)
    say(f"chaos: seed={seed} broker={broker} duration={duration:.0f} s; logs in {out_dir}")
    # The hosts' log tails, printed as each server stops, go to the log, not between the lines.
    with (out_dir / "campaign.log").open("w") as log, contextlib.redirect_stdout(log):
        result = _run(duration, seed, broker, model_path, out_dir, say)
    say("\n".join(result.table))
    anomalies = len(result.anomalies)
    if result.anomalies or result.problems or keep:
        result.write(out_dir)
        say(f"chaos: history, schedule, anomalies and logs in {out_dir}")
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
    say(
        f"chaos: seed={seed} broker={broker} operations={len(result.ops)} "
        f"faults={len(result.injected)} anomalies={anomalies}"
    )
    return 1 if result.anomalies or result.problems else 0


@dataclass
class Result:
    seed: int
    broker: str
    duration: float
    ops: list[Op]
    final: Final
    schedule: list[Fault]
    injected: list[dict[str, Any]]
    anomalies: list[Anomaly]
    problems: list[str]
    table: list[str]

    def write(self, folder: Path) -> None:
        """history.json (operations and final state), schedule.json, anomalies.json."""
        dump(folder / "history.json", self.ops, self.final,
             {"seed": self.seed, "broker": self.broker})  # fmt: skip
        schedule = {
            "seed": self.seed, "broker": self.broker, "duration": self.duration,
            "schedule": [fault.as_json() for fault in self.schedule],
            "injected": sorted(self.injected, key=lambda f: float(f["began"])),
            "errors": self.problems,
        }  # fmt: skip
        (folder / "schedule.json").write_text(json.dumps(schedule, indent=1) + "\n")
        anomalies = [asdict(anomaly) for anomaly in self.anomalies]
        (folder / "anomalies.json").write_text(json.dumps(anomalies, indent=1) + "\n")


def _run(
    duration: float,
    seed: int,
    broker: str,
    model_path: Path,
    out_dir: Path,
    say: Callable[[str], None],
) -> Result:
    settings = RECONCILE | (REPLICATED if broker == "redis" else {})
    with (
        build_site(broker, redis_replica=broker == "redis") as site,
        deploy(site, model_path, out_dir, **settings) as deployment,
    ):
        schedule = make_schedule(seed, duration, roles_of(deployment))
        say(f"chaos: deployed; {len(schedule)} faults scheduled over {duration:.0f} s")
        history = History()
        injector = Injector(deployment)
        ids = make_ids(seed, IDS)
        stopping = threading.Event()
        urls = [api.base_url for api in deployment.apis]
        clients = [
            Client(n, seed, urls, deployment.key, ids, history, stopping) for n in range(CLIENTS)
        ]
        started = time.monotonic()
        for client in clients:
            client.start()
        player = threading.Thread(target=injector.play, args=(schedule, started, stopping))
        player.start()
        stopping.wait(duration)
        stopping.set()
        for client in clients:
            client.join(REQUEST_TIMEOUT * 3)
        player.join()
        say(f"chaos: workload stopped after {time.monotonic() - started:.1f} s; healing")
        injector.heal()
        say("chaos: healed; draining")
        final = final_state(deployment, ids)
        ops = history.snapshot()
        anomalies = check(ops, final)
        problems = [f"client {c.number}: {c.failure!r}" for c in clients if c.failure]
        problems += injector.errors
        table = format_table(ops, injector, final, anomalies, problems)
        return Result(seed, broker, duration, ops, final, schedule, list(injector.injected),
                      anomalies, problems, table)  # fmt: skip


def final_state(deployment: Deployment, ids: list[str]) -> Final:
    """Wait for the queue to drain, replay any failure, and read what is left."""
    with httpx.Client(
        base_url=deployment.apis[0].base_url, timeout=30, trust_env=False,
        headers={"Authorization": f"Bearer {deployment.key}"},
    ) as api:  # fmt: skip
        drain(deployment)
        failures, dead = failed_ids(api), dead_letters(api)
        replayed = 0
        if failures or dead:
            print(f"chaos: {len(failures)} failures, {len(dead)} dead letters; replaying them")
            answer = api.post("/failures/replay")
            answer.raise_for_status()
            replayed = len(failures) + len(dead)
            drain(deployment)
            failures = failed_ids(api) + [f"dead letter {letter}" for letter in dead_letters(api)]
        statuses: dict[str, tuple[str, int | None]] = {}
        for document_id in ids:
            response = api.get(f"/documents/{document_id}/status")
            if response.status_code == 404:
                statuses[document_id] = ("absent", None)
            else:
                response.raise_for_status()
                found = response.json()
                statuses[document_id] = (found["status"], found["version"])
    return Final(
        rows=read_rows(deployment.database_url),
        statuses=statuses,
        pending=pending(deployment),
        failures=failures,
        replayed=replayed,
    )


def drain(deployment: Deployment) -> None:
    """Until the broker holds no message (twice in a row) and the pending set is empty, or
    DRAIN_TIMEOUT: what is left then is for the checker to report."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    idle_polls = 0
    while time.monotonic() < deadline:
        idle = deployment.site.broker.idle() and pending(deployment) == 0
        idle_polls = idle_polls + 1 if idle else 0
        if idle_polls >= 2:
            return
        time.sleep(1)
    print(f"chaos: not drained after {DRAIN_TIMEOUT:.0f} s: {deployment.site.broker.state()}")


def failed_ids(api: httpx.Client) -> list[str]:
    response = api.get("/failures", params={"limit": 1000})
    response.raise_for_status()
    return [str(failure["id"]) for failure in response.json()]


def dead_letters(api: httpx.Client) -> list[str]:
    """Messages Dramatiq gave up on (they carry pending entries the reconciler keeps)."""
    response = api.get("/failures/dead-letters", params={"limit": 1000})
    response.raise_for_status()
    return [json.dumps(letter)[:200] for letter in response.json()]


def pending(deployment: Deployment) -> int:
    """The pending set's size: Redis's hash, or the SQL ledger's table (RabbitMQ)."""
    if deployment.site.broker_kind == "redis":
        return pending_documents(deployment.site.broker.url)
    return _scalar(deployment.database_url, "SELECT count(*) FROM pending_documents")


def _scalar(database_url: str, query: str) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


def read_rows(database_url: str) -> list[Row]:
    engine = make_engine(database_url)
    query = "SELECT id, version, content, deleted_at IS NOT NULL, label FROM documents"
    try:
        with engine.connect() as connection:
            return [
                Row(str(i), int(v), c, bool(d), label)
                for i, v, c, d, label in connection.execute(text(query))
            ]
    finally:
        engine.dispose()


def format_table(
    ops: list[Op], injector: Injector, final: Final, anomalies: list[Anomaly], problems: list[str]
) -> list[str]:
    """Operations by kind and answer, faults of each kind, anomalies of each kind."""
    answers: Counter[tuple[str, str]] = Counter(
        (op.kind, "no answer" if op.status is None else str(op.status)) for op in ops
    )
    lines = [f"{'operations':<36} {len(ops):>6}"]
    lines += [
        f"  {kind + ' ' + status:<34} {n:>6}" for (kind, status), n in sorted(answers.items())
    ]
    lines.append(f"{'faults':<36} {len(injector.injected):>6}")
    lines += [f"  {kind:<34} {n:>6}" for kind, n in injector.counts().items()]
    lines.append(f"{'final state':<36} rows={len(final.rows)} pending={final.pending} "
                 f"failures replayed={final.replayed} left={len(final.failures)}")  # fmt: skip
    lines.append(f"{'anomalies':<36} {len(anomalies):>6}")
    lines += [f"  {kind:<34} {n:>6}" for kind, n in counts(anomalies).items()]
    lines += [f"  ! {a.kind} {a.id}: {a.detail}" for a in anomalies[:20]]
    lines += [f"  campaign error: {problem}" for problem in problems]
    return lines
