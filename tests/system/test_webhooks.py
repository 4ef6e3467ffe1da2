"""Webhooks delivered by real `docingest webhooks deliver` processes, as the Procfile runs them:
one killed with SIGKILL while a receiver holds its delivery, another taking the endpoint over
once the dead one's lease expires and delivering again from the stored position; nothing
skipped, everything in order, signatures verified by the reference implementation."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import select

from docingest.changes.relay import head_position, relay
from docingest.changes.webhooks import endpoints
from docingest.db import make_engine
from docingest.documents.store import store_batch
from docingest.embedded import wait_until
from docingest.tables import WEBHOOKS
from tests.faults import Process, Processes, service_env
from tests.integration.test_changes import row
from tests.receiver import Receiver, serving

LEASE_SECONDS = 2.0


def deliverer(procs: Processes) -> Process:
    args = [sys.executable, "-m", "docingest", "webhooks", "deliver"]
    process = Process(procs._name("webhooks"), args, procs.env, procs.cwd)
    procs.started.append(process)
    return process


def test_a_deliverer_killed_mid_delivery_is_relieved_and_nothing_is_skipped(
    database_url: str, tmp_path: Path, procs: Processes
) -> None:
    procs.env = service_env(
        database_url=database_url,
        broker_url="redis://127.0.0.1:9/0",  # never used: delivering needs only the database
        model_path=tmp_path / "no-model.skops",
        data_dir=tmp_path,
        WEBHOOK_ALLOW_PRIVATE="true",
        WEBHOOK_BATCH_SIZE="10",
        WEBHOOK_POLL_SECONDS="0.1",
        WEBHOOK_LEASE_SECONDS=str(LEASE_SECONDS),
        WEBHOOK_TIMEOUT_SECONDS="1",
        WEBHOOK_RETRY_MIN_SECONDS="0.1",
    )
    engine = make_engine(database_url)
    receiver = Receiver()
    try:
        with serving(receiver) as url:
            endpoint = endpoints.create(engine, url).status.endpoint
            receiver.secret = endpoint.secret
            both = [deliverer(procs), deliverer(procs)]
            for process in both:
                wait_until(lambda p=process: "deliverer started" in p.log_tail(), 60, "started")

            receiver.holding.set()  # the first delivery waits inside the receiver
            ids = [uuid.uuid4() for _ in range(15)]
            for version in (1, 2):
                store_batch(engine, [row(i, version) for i in ids])
            head = endpoint.position + 30

            def numbered() -> int:
                relay(engine)  # or a deliverer's pass, holding the relay's lock
                with engine.connect() as connection:
                    return head_position(connection)

            wait_until(lambda: numbered() == head, 30, "the changes numbered")
            assert receiver.arrived.wait(60), [p.log_tail() for p in both]
            with engine.connect() as connection:  # `host:pid:…`: the process holding the lease
                statement = select(WEBHOOKS.c.lease_owner).where(WEBHOOKS.c.id == endpoint.id)
                owner = str(connection.execute(statement).scalar_one())
            [first] = [p for p in both if p.pid == int(owner.split(":")[1])]
            [second] = [p for p in both if p is not first]
            first.kill()
            killed_at = time.monotonic()
            receiver.holding.clear()  # handled, but its answer goes nowhere

            def position() -> int:
                with engine.connect() as connection:
                    statement = select(WEBHOOKS.c.position).where(WEBHOOKS.c.id == endpoint.id)
                    return int(connection.execute(statement).scalar_one())

            wait_until(lambda: position() == head, 60, "the second deliverer at the head")
            assert second.alive()
            assert second.stop() == 0  # SIGTERM: a clean stop
    finally:
        engine.dispose()

    deliveries = sorted(receiver.deliveries, key=lambda d: d.started)
    assert all(delivery.verified for delivery in deliveries)
    assert all(delivery.status == 200 for delivery in deliveries)
    dead, *after = deliveries
    # The batch the killed process was delivering comes again, under the same id.
    assert after[0].id == dead.id
    assert (
        after[0].positions
        == dead.positions
        == list(range(endpoint.position + 1, endpoint.position + 11))
    )
    takeover = after[0].started - killed_at
    assert takeover < LEASE_SECONDS + 5, takeover
    assert receiver.max_in_flight == 1
    # Then every change once more, in order: none skipped, none out of place.
    assert [p for delivery in after for p in delivery.positions] == list(
        range(endpoint.position + 1, head + 1)
    )
    print(
        f"FIGURES webhooks: a deliverer killed mid-delivery, relieved {takeover:.1f} s later "
        f"by one already running (lease {LEASE_SECONDS:g} s); {len(after)} "
        "deliveries after it, the interrupted batch delivered again under its id"
    )
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            lease = connection.execute(
                select(WEBHOOKS.c.lease_owner).where(WEBHOOKS.c.id == endpoint.id)
            ).scalar()
        assert lease is None  # given back at the clean stop
    finally:
        engine.dispose()
