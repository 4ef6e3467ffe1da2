"""Several hosts: PostgreSQL, the broker, two API hosts and two worker hosts, each a network
namespace of its own on one bridge (tests/hosts.py), for Redis and for RabbitMQ.

1. 18,000 new documents in bulk requests, round-robin over both API hosts, while 200 ids get 10
   versions each through alternating API hosts (each sent after the previous one's 202): every
   id stored once, at the version of its last 202.
2. Mid-stream, one worker host is cut off the network for 30 s and comes back; then every
   process of the other worker host gets SIGKILL and it is restarted: nothing lost, duplicated
   or stale, and how long redelivery took.
3. The broker host is cut off for 10 s during ingestion: both API hosts answer 503 with
   Retry-After (never 500, never a hang past the client's timeout) and recover by themselves.

Each test records a row (sent, accepted, stored, duplicated, lost, stale, redelivery seconds)
before asserting; the rows (ROW lines, the header first) are in the run's figures section at
the end and written to `multihost-figures.json` in pytest's base temporary folder. The test's
clients run in the machine's own namespace and reach the hosts through the bridge's address
(tests/hosts.py checks that route before anything is sent).
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from docingest.embedded import wait_until
from tests.deployment import BROKERS, Deployment, Site, build_site, deploy
from tests.faults import (
    HEARTBEAT_TIMEOUT_SECONDS,
    Figures,
    Sent,
    assert_nothing_lost,
    content_for,
    count_rows,
    held_by_silent_workers,
    new_documents,
    not_stored,
    post_bulk,
    post_one,
    stale,
    wait_for_figures,
)
from tests.hosts import HostApi, RabbitCluster, missing_requirements

if (_missing := missing_requirements()) is not None:
    pytest.skip(_missing, allow_module_level=True)

pytestmark = pytest.mark.multihost

REQUEST_TIMEOUT = 10.0  # the clients' timeout: an API answer slower than this is a hang
CUT_WORKER_SECONDS = 30
CUT_BROKER_SECONDS = 10
HELD_AFTER_SECONDS = 10  # a document accepted this long before the restore must not wait for it


# --- the site and a deployment on it (tests/deployment.py) ------------------------------------


@pytest.fixture(scope="module", params=BROKERS)
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    kind: str = request.param
    if kind == "amqp" and not RabbitCluster.available():
        pytest.skip("Debian's rabbitmq-server is not installed (`make test` installs it as root)")
    with build_site(kind) as site:
        yield site


@pytest.fixture
def deployment(site: Site, model_path: Path, tmp_path: Path) -> Iterator[Deployment]:
    """A fresh database, two API hosts and two worker hosts, per test."""
    with deploy(site, model_path, tmp_path) as deployment:
        yield deployment


# --- bounded client load, round-robin over the API hosts ---------------------------------------


@dataclass(frozen=True)
class Answer:
    at: float
    api: str
    status: int
    seconds: float


class Load:
    """Client threads posting to the API hosts in the background.

    Every loop is bounded in count (its arguments) and in time (`seconds`), and ends early at
    `stop()`. What the API answered goes to `sent` (tests/faults.py); each HTTP answer is also
    kept in `answers` (when, from which API host, status, latency). A client thread's failure
    (an unexpected status, a refused update) is kept in `failures`, not raised, so that the
    test records its figures before asserting.
    """

    def __init__(self, deployment: Deployment, sent: Sent, *, seconds: float) -> None:
        self.deployment = deployment
        self.sent = sent
        self.deadline = time.monotonic() + seconds
        self.stopping = threading.Event()
        self.answers: list[Answer] = []
        self.failures: list[BaseException] = []
        self._pools: list[ThreadPoolExecutor] = []
        self._futures: list[Future[None]] = []
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None:
            self.stop()
        self.wait()

    @property
    def going(self) -> bool:
        return not self.stopping.is_set() and time.monotonic() < self.deadline

    def client(self, n: int) -> httpx.Client:
        """This thread's client of API host n % 2 (round-robin by request number)."""
        clients: list[httpx.Client] | None = getattr(self._local, "clients", None)
        if clients is None:
            clients = [self._new_client(api.base_url) for api in self.deployment.apis]
            self._local.clients = clients
        return clients[n % len(clients)]

    def _new_client(self, base_url: str) -> httpx.Client:
        def record(response: httpx.Response) -> None:
            response.read()
            answer = Answer(time.monotonic(), base_url, response.status_code,
                            response.elapsed.total_seconds())  # fmt: skip
            with self._lock:
                self.answers.append(answer)

        client = httpx.Client(
            base_url=base_url, timeout=REQUEST_TIMEOUT, trust_env=False,
            headers={"Authorization": f"Bearer {self.deployment.key}"},
            event_hooks={"response": [record]},
        )  # fmt: skip
        with self._lock:
            self._clients.append(client)
        return client

    def _submit(self, threads: int, tasks: list[Callable[[], None]]) -> None:
        pool = ThreadPoolExecutor(threads)
        self._pools.append(pool)
        self._futures += [pool.submit(self._guarded, task) for task in tasks]

    def _guarded(self, task: Callable[[], None]) -> None:
        try:
            if self.going:
                task()
        except BaseException as error:
            self.failures.append(error)
            self.stopping.set()

    def bulk(self, *, batches: int, size: int, label: str, threads: int, pause: float) -> None:
        """`batches` bulk requests of `size` new documents; request n goes to API host n % 2;
        each is retried as Retry-After says (post_bulk) and followed by `pause` seconds."""

        def request(n: int) -> None:
            post_bulk(self.client(n), new_documents(size, f"{label}{n}-"), self.sent)
            self.stopping.wait(pause)

        self._submit(threads, [functools.partial(request, n) for n in range(batches)])

    def updates(self, ids: list[str], *, versions: int, threads: int, pause: float) -> None:
        """Each id posted `versions` times, alternating API hosts, each version sent after the
        previous one's 202; different ids run concurrently."""

        def sequence(k: int, document_id: str) -> None:
            for v in range(versions):
                if not self.going:
                    return
                document = {"id": document_id, "content": content_for(v, f"{document_id}-v")}
                post_one(self.client(k + v), document, self.sent)
                self.stopping.wait(pause)

        self._submit(threads, [functools.partial(sequence, k, i) for k, i in enumerate(ids)])

    def stop(self) -> None:
        self.stopping.set()
        self.wait()

    def wait(self) -> None:
        """Until every task ran (bounded by the deadline), then close the clients."""
        for future in self._futures:
            future.result(timeout=max(1.0, self.deadline - time.monotonic()) + REQUEST_TIMEOUT)
        for pool in self._pools:
            pool.shutdown()
        for client in self._clients:
            client.close()

    def first_202_after(self, moment: float) -> dict[str, float]:
        """Per API host, seconds from `moment` to its first 202."""
        with self._lock:
            answers = list(self.answers)
        first: dict[str, float] = {}
        for answer in answers:
            if answer.status == 202 and answer.at > moment and answer.api not in first:
                first[answer.api] = answer.at - moment
        return first

    def statuses_between(self, start: float, end: float) -> dict[str, dict[int, int]]:
        with self._lock:
            answers = list(self.answers)
        counts: dict[str, dict[int, int]] = {}
        for answer in answers:
            if start <= answer.at <= end:
                per_api = counts.setdefault(answer.api, {})
                per_api[answer.status] = per_api.get(answer.status, 0) + 1
        return counts


def ready_status(api: HostApi) -> int | str:
    """GET /ready: its status, or the transport error (a hang past the timeout) by name."""
    try:
        return httpx.get(
            f"{api.base_url}/ready", timeout=REQUEST_TIMEOUT, trust_env=False
        ).status_code
    except httpx.HTTPError as error:
        return type(error).__name__


def accepted_versions(sent: Sent) -> dict[str, int]:
    """Per id, the newest version accepted so far (while clients are still sending)."""
    return {document_id: version for document_id, (version, _) in sent.newest().items()}


def new_ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


def seconds_until(condition: Callable[[], bool], timeout: float, poll: float = 0.5) -> float | None:
    """How long until `condition` holds, or None if not within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(poll)
    return None


# --- the figures of each test ------------------------------------------------------------------


@dataclass
class Row:
    test: str
    broker: str
    sent: int
    accepted: int
    stored: int
    duplicated: int
    lost: int
    stale: int
    redelivery_seconds: float | None
    notes: str

    def line(self) -> str:
        redelivery = "-" if self.redelivery_seconds is None else f"{self.redelivery_seconds:.1f}"
        return (
            f"{self.test:<26} {self.broker:<6} {self.sent:>6} {self.accepted:>8} {self.stored:>6} "
            f"{self.duplicated:>10} {self.lost:>5} {self.stale:>5} {redelivery:>10}  {self.notes}"
        )


HEADER = (
    f"{'test':<26} {'broker':<6} {'sent':>6} {'accepted':>8} {'stored':>6} {'duplicated':>10} "
    f"{'lost':>5} {'stale':>5} {'redelivery':>10}  notes"
)


class Report:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(
        self,
        test: str,
        deployment: Deployment,
        sent: Sent,
        result: Figures,
        *,
        redelivery: float | None,
        notes: str,
    ) -> Row:
        row = Row(
            test=test, broker=deployment.site.broker_kind, sent=result.sent,
            accepted=result.accepted, stored=result.stored, duplicated=result.duplicated,
            lost=result.lost, stale=stale(sent, deployment.database_url),
            redelivery_seconds=redelivery, notes=notes,
        )  # fmt: skip
        self.rows.append(row)
        if len(self.rows) == 1:
            print(f"ROW {HEADER}")
        print(result.line(f"{test} [{row.broker}]"))
        print(f"broker at the end: {deployment.site.broker.state()}")
        print(f"ROW {row.line()}")
        return row


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    """The rows of every multi-host test, in a JSON file; their ROW lines (the header first) are
    in the run's figures section (conftest.py), where a table written at teardown never showed."""
    report = Report()
    yield report
    path = tmp_path_factory.getbasetemp() / "multihost-figures.json"
    rows: list[dict[str, Any]] = [asdict(row) for row in report.rows]
    path.write_text(json.dumps(rows, indent=2) + "\n")


# --- the tests ---------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_round_robin_ingestion_with_sequenced_updates(
    deployment: Deployment, report: Report
) -> None:
    sent = Sent()
    ids = new_ids(200)
    with Load(deployment, sent, seconds=150) as load:
        load.updates(ids, versions=10, threads=16, pause=0)
        load.bulk(batches=60, size=300, label="bulk", threads=2, pause=0)
    last_202 = time.monotonic()
    broker = deployment.site.broker
    result = wait_for_figures(sent, deployment.database_url, timeout=150, idle=broker.idle)
    drained = time.monotonic() - last_202
    row = report.add(
        "1 round-robin + updates", deployment, sent, result, redelivery=None,
        notes=f"all stored {drained:.1f} s after the last 202",
    )  # fmt: skip
    assert load.failures == []
    assert result.sent == 20_000
    assert_nothing_lost(result)
    assert row.stale == 0


@pytest.mark.timeout(400)
def test_worker_hosts_cut_off_and_killed(deployment: Deployment, report: Report) -> None:
    site = deployment.site
    cut_host, killed_host = site.worker_hosts
    workers = [host.address for host in site.worker_hosts]
    database_url = deployment.database_url
    sent = Sent()
    with Load(deployment, sent, seconds=200) as load:
        # About 45 s of feeding at this pace: it is still going when the other host is killed.
        load.bulk(batches=100, size=200, label="feed", threads=2, pause=0.9)
        load.updates(new_ids(100), versions=10, threads=10, pause=0.45)

        def holding() -> bool:
            """A worker host is storing a batch (a query of milliseconds), or the broker counts
            unacknowledged messages (a `rabbitmqctl` call takes a second or more)."""
            return site.postgres.storing(workers) or site.broker.in_flight() > 0

        def backlog(label: str) -> None:
            """15,000 documents at once: the worker hosts hold fetched, unprocessed messages.

            Watched for while they are sent, then one more. Of 5,000, three in a row went
            unseen by the broker's count alone in CI runs, each stored in full with both hosts
            consuming (the failure's states said so): drained between two `rabbitmqctl` calls."""
            states = []
            for attempt in range(3):
                target = sent.accepted + 15_000
                load.bulk(batches=60, size=250, label=f"{label}{attempt}-", threads=2, pause=0)
                held = seconds_until(holding, 20, poll=0.05)
                wait_until(lambda t=target: sent.accepted >= t, 60, "backlog accepted")
                if held is not None:
                    return
                states.append(f"rows {count_rows(database_url)}: {site.broker.state()}")
            raise AssertionError(f"{label}: no worker was seen holding a message: {states}")

        wait_until(lambda: count_rows(database_url) > 1000, 90, "rows arriving")
        backlog("before-cut")
        # The worst moment: after its upsert and before its commit, the rows locked.
        site.postgres.wait_for_uncommitted_write(cut_host.address, 60)
        cut_host.cut()
        cut_at = time.monotonic()
        in_flight_at_cut = site.broker.in_flight()
        accepted_before = accepted_versions(sent)
        before_cut_stored = seconds_until(
            lambda: not_stored(accepted_before, database_url) == 0, HELD_AFTER_SECONDS
        )
        # What was accepted up to 20 s into the cut must not wait for the cut host: 10 s is
        # more than enough for the other host to fetch it, or to get it back from the cut one.
        time.sleep(max(0.0, cut_at + CUT_WORKER_SECONDS - HELD_AFTER_SECONDS - time.monotonic()))
        accepted_in_cut = accepted_versions(sent)
        time.sleep(max(0.0, cut_at + CUT_WORKER_SECONDS - time.monotonic()))
        held_by_cut_host = not_stored(accepted_in_cut, database_url)
        messages_held_at_restore = held_by_cut_off(site)
        transactions_at_restore = site.postgres.transactions()
        cut_host.restore()
        backlog("before-kill")
        in_flight_at_kill = site.broker.in_flight()
        # Mid-store if that comes within seconds (its batch's messages held unacknowledged):
        # the count above can take a second, time enough to drain a backlog. Not waited for
        # longer: the other host may have taken the whole backlog (a CI run saw none in 60 s).
        seconds_until(lambda: site.postgres.storing([killed_host.address]), 10, poll=0.05)
        killed_host.kill_all()
        deployment.start_worker(killed_host)
        restarted_at = time.monotonic()
        load.stop()
    result = wait_for_figures(sent, database_url, timeout=150, idle=site.broker.idle)
    redelivery = time.monotonic() - restarted_at
    cut_note = "-" if before_cut_stored is None else f"{before_cut_stored:.1f} s"
    row = report.add(
        "2 worker cut 30 s + kill -9", deployment, sent, result, redelivery=redelivery,
        notes=f"{in_flight_at_cut} messages in flight at the cut, {in_flight_at_kill} at the "
        f"kill; all accepted before the cut stored {cut_note} after it; at the restore "
        f"{held_by_cut_host} documents accepted >= {HELD_AFTER_SECONDS} s earlier were not "
        f"stored yet, {messages_held_at_restore} messages held by silent workers; redelivery = "
        "restart -> all stored",
    )  # fmt: skip
    print(f"open transactions at the restore ({cut_host.name} is {cut_host.address}): "
          f"{transactions_at_restore}")  # fmt: skip
    assert load.failures == []
    assert_nothing_lost(result)
    assert row.stale == 0
    # Nothing waited for the cut host at the restore: Redis had handed back every message it
    # held, PostgreSQL had ended its transaction and its row locks. Whether the other host had
    # stored them all by then is its speed, which a loaded CI machine divides: reported above.
    assert not [t for t in transactions_at_restore if t.startswith(f"{cut_host.address} ")]
    if site.broker_kind == "redis":
        # Workers pull from Redis. RabbitMQ pushes to a consumer and takes back what a cut one
        # holds only once it declares the connection dead; with heartbeats of 2 s that should
        # take seconds, yet some runs still see documents wait over 10 s (reliability.md,
        # "Several hosts", finding 3): reported in the row above, not asserted until explained.
        assert messages_held_at_restore == 0, "messages waited for the cut-off worker host"


def held_by_cut_off(site: Site) -> int | None:
    """Messages held by workers silent for twice their heartbeat timeout (Redis only)."""
    if site.broker_kind != "redis":
        return None
    return held_by_silent_workers(site.broker.url, 2 * HEARTBEAT_TIMEOUT_SECONDS)


@pytest.mark.timeout(300)
def test_broker_host_cut_off(deployment: Deployment, report: Report) -> None:
    site = deployment.site
    sent = Sent()
    with Load(deployment, sent, seconds=120) as load:
        load.bulk(batches=600, size=50, label="feed", threads=4, pause=0.2)
        wait_until(lambda: sent.accepted >= 1000, 60, "ingestion under way")
        site.broker.cut()
        cut_at = time.monotonic()
        time.sleep(2)
        ready = [ready_status(api) for api in deployment.apis]
        time.sleep(max(0.0, cut_at + CUT_BROKER_SECONDS - time.monotonic()))
        site.broker.restore()
        restored_at = time.monotonic()
        recovered = seconds_until(lambda: len(load.first_202_after(restored_at)) == 2, 60, 0.1)
        time.sleep(3)
        load.stop()
    during_cut = load.statuses_between(cut_at, restored_at)
    result = wait_for_figures(sent, deployment.database_url, timeout=120, idle=site.broker.idle)
    redelivery = time.monotonic() - restored_at
    slowest = max(answer.seconds for answer in load.answers)
    row = report.add(
        "3 broker cut 10 s", deployment, sent, result, redelivery=redelivery,
        notes=f"statuses {dict(sorted(sent.statuses.items()))}, transport errors "
        f"{len(sent.errors)}, slowest answer {slowest:.1f} s, both API hosts accepting again "
        f"{'-' if recovered is None else f'{recovered:.1f} s'} after the restore; "
        "redelivery = restore -> all stored",
    )  # fmt: skip
    print(f"answers during the cut per API host: {during_cut}; /ready during the cut: "
          f"{ready}; transport errors: {sent.errors[:5]}")  # fmt: skip
    assert load.failures == []
    assert sent.errors == [], "a request hung past the client's timeout or lost its connection"
    assert set(sent.statuses) <= {202, 503}, sent.statuses
    assert sent.retry_after == {"1"}
    assert ready == [503, 503]
    assert len(during_cut) == 2, during_cut
    assert all(statuses.get(503, 0) > 0 for statuses in during_cut.values()), during_cut
    assert recovered is not None, "an API host did not accept again within 60 s"
    assert_nothing_lost(result)
    assert row.stale == 0
