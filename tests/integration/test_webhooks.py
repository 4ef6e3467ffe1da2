"""Webhooks on SQLite and PostgreSQL, with a real receiver (tests/receiver.py) and deliverers
on threads: deliveries in order through failures, each change at least once, none skipped,
signed so that the reference implementation verifies them; filters; targets refused before and
at delivery; pausing after WEBHOOK_DISABLE_AFTER and resuming; a pruned position; two deliverers
never delivering to one endpoint at once; the API's answers and scope; the metrics."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from docingest.api import create_app
from docingest.changes.relay import head_position, relay
from docingest.changes.webhooks.deliverer import Deliverer
from docingest.db import make_engine
from docingest.documents.store import store_batch, store_tombstone
from docingest.embedded import wait_until
from docingest.keys import ApiKey, Scope, digest, generate_key
from docingest.settings import Settings
from tests.helpers import make_settings, samples, value
from tests.integration.test_changes import row
from tests.receiver import Receiver, serving

# Short everything: a failing endpoint is tried again within a fraction of a second.
FAST = {
    "webhook_allow_private": True,
    "webhook_batch_size": 10,
    "webhook_poll_seconds": 0.05,
    "webhook_retry_min_seconds": 0.05,
    "webhook_retry_max_seconds": 0.2,
    "webhook_lease_seconds": 2.0,
    "webhook_timeout_seconds": 1.0,
}


@pytest.fixture
def fast(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    """No model: nothing here classifies."""
    return make_settings(database_url, redis_url, tmp_path / "no-model.skops", tmp_path, **FAST)


@pytest.fixture
def api(fast: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(fast), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def engine(fast: Settings) -> Iterator[Engine]:
    engine = make_engine(fast.database_url)
    yield engine
    engine.dispose()


@contextmanager
def delivering(settings: Settings, **overrides: Any) -> Iterator[Deliverer]:
    """A deliverer on a thread, with its own engine, as a process of its own would have."""
    engine = make_engine(settings.database_url)
    deliverer = Deliverer(engine, settings.model_copy(update=overrides))
    thread = threading.Thread(target=deliverer.run, name=f"deliverer-{deliverer.owner}")
    thread.start()
    try:
        yield deliverer
    finally:
        deliverer.stop.set()
        thread.join(30)
        engine.dispose()
        assert not thread.is_alive()


def create(api: TestClient, url: str, **body: Any) -> dict[str, Any]:
    response = api.post("/webhooks", json={"url": url, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def write(engine: Engine, batches: int, per_batch: int, category: str = "tech") -> None:
    """New documents, and new versions of the first ones: committed and relayed."""
    ids = [uuid.uuid4() for _ in range(per_batch)]
    for version in range(1, batches + 1):
        store_batch(engine, [row(i, version, category) for i in ids])
    relay(engine)


def head(engine: Engine) -> int:
    with engine.connect() as connection:
        return head_position(connection)


def feed(api: TestClient, after: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of `GET /changes` after `after`, as the feed serialises them."""
    items: list[dict[str, Any]] = []
    while True:
        page = api.get("/changes", params={"after": after, "limit": 1000, **params}).json()
        if not page["items"]:
            return items
        items += page["items"]
        after = page["next"]


def test_deliveries_arrive_in_order_through_failures_each_change_at_least_once(
    api: TestClient, engine: Engine, fast: Settings
) -> None:
    """The receiver answers 500 three times, then 200: the first batch is tried four times
    under one webhook-id, then every batch once, in order, on one connection; the stored
    position reaches the head only through 2xx answers."""
    receiver = Receiver(answer=lambda n: 500 if n < 3 else 200)
    write(engine, 1, 4)  # before the endpoint: not for it
    with serving(receiver) as url:
        created = create(api, url)
        start = created["position"]
        assert int(start) == head(engine)
        receiver.secret = created["secret"]
        write(engine, 3, 12)  # 36 changes: 4 batches of at most 10
        with delivering(fast):
            wait_until(lambda: receiver.delivered_positions()[-1:] == [head(engine)], 30,
                       "every change delivered")  # fmt: skip

    expected = feed(api, start)
    assert len(expected) == 36
    assert all(delivery.verified for delivery in receiver.deliveries)
    ok = receiver.ok()
    # In order, none skipped, none twice among the answered ones; items exactly as the feed's.
    assert [item for delivery in ok for item in delivery.items] == expected
    assert [len(delivery.items) for delivery in ok] == [10, 10, 10, 6]
    failed = [d for d in receiver.deliveries if d.status == 500]
    assert len(failed) == 3
    assert {d.id for d in failed} == {ok[0].id}  # the same batch, tried again
    assert len({d.id for d in ok}) == 4
    # One turn delivered the four: on one connection, each answer read to its end to keep it.
    assert len({d.connection for d in ok}) == 1
    for delivery in ok:
        body = delivery.body
        assert body.startswith(b'{"type":"docingest.changes","timestamp":"')
        assert delivery.headers["content-type"] == "application/json"
    tries = [d.started for d in sorted(receiver.deliveries, key=lambda d: d.started)][:4]
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert all(gap >= 0.02 for gap in gaps), gaps  # backed off (WEBHOOK_RETRY_MIN_SECONDS)
    print(f"FIGURES webhook retries after 500s: {', '.join(f'{g:.2f}' for g in gaps)} s")

    shown = api.get(f"/webhooks/{created['id']}").json()
    assert shown["position"] == str(head(engine))
    assert shown["lag"] == {"changes": 0, "seconds": 0.0}
    assert (shown["deliveries"], shown["failures"], shown["attempts"]) == (4, 3, 0)
    assert shown["state"] == "active"
    assert shown["failing_since"] is None
    assert shown["last_error"] == "HTTP 500: not now"
    assert "secret" not in shown
    page = samples(api.get("/metrics").text)
    endpoint = created["id"]
    assert value(page, "docingest_webhook_deliveries_total", endpoint=endpoint, outcome="ok") == 4
    failures = value(
        page, "docingest_webhook_deliveries_total", endpoint=endpoint, outcome="failed"
    )
    assert failures == 3
    assert value(page, "docingest_webhook_lag_changes", endpoint=endpoint) == 0
    assert value(page, "docingest_webhook_paused", endpoint=endpoint) == 0


def test_an_endpoint_gets_only_its_kinds_and_categories_and_moves_past_the_rest(
    api: TestClient, engine: Engine, fast: Settings
) -> None:
    receiver = Receiver()
    with serving(receiver) as url:
        created = create(api, url, kinds=["stored", "stored"], categories=["sports"])
        assert (created["kinds"], created["categories"]) == (["stored"], ["sports"])
        write(engine, 2, 5, "tech")
        write(engine, 1, 3, "sports")
        deleted = uuid.uuid4()
        store_batch(engine, [row(deleted, 1, "sports")])
        store_tombstone(engine, deleted, 2)
        relay(engine)
        with delivering(fast):
            wait_until(
                lambda: api.get(f"/webhooks/{created['id']}").json()["lag"]["changes"] == 0,
                30,
                "the endpoint at the head",
            )
    delivered = [item for delivery in receiver.ok() for item in delivery.items]
    assert delivered == feed(api, created["position"], kind="stored", category="sports")
    assert len(delivered) == 4  # 3 documents and the first version of the deleted one
    assert {(item["kind"], item["category"]) for item in delivered} == {("stored", "sports")}


def test_a_private_target_is_refused_at_creation_unless_allowed(
    fast: Settings, api: TestClient
) -> None:
    refused = fast.model_copy(update={"webhook_allow_private": False})
    with TestClient(create_app(refused), raise_server_exceptions=False) as strict:
        for url in (
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://10.0.0.8/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:9000/",
        ):
            answer = strict.post("/webhooks", json={"url": url})
            assert answer.status_code == 422, (url, answer.text)
            [detail] = answer.json()["detail"]
            assert detail["loc"] == ["body", "url"]
            assert "WEBHOOK_ALLOW_PRIVATE=true" in detail["msg"], detail
        assert strict.get("/webhooks").json() == []
    assert api.post("/webhooks", json={"url": "http://127.0.0.1:8080/hook"}).status_code == 201


def test_a_target_is_checked_again_at_delivery(
    api: TestClient, engine: Engine, fast: Settings
) -> None:
    """Created while private addresses were allowed; the deliverer no longer allows them:
    nothing is sent, and the endpoint says why."""
    receiver = Receiver()
    with serving(receiver) as url:
        created = create(api, url)
        write(engine, 1, 3)
        with delivering(fast, webhook_allow_private=False):
            wait_until(
                lambda: api.get(f"/webhooks/{created['id']}").json()["failures"] >= 2,
                30,
                "deliveries refused",
            )
    shown = api.get(f"/webhooks/{created['id']}").json()
    assert shown["last_error"].startswith("refused: 127.0.0.1, a loopback address"), shown
    assert shown["failing_since"] is not None
    assert shown["position"] == created["position"]
    assert shown["lag"]["changes"] == 3
    assert receiver.deliveries == []


def test_an_endpoint_failing_longer_than_allowed_is_paused_until_resumed(
    api: TestClient, engine: Engine, fast: Settings
) -> None:
    failing = threading.Event()
    failing.set()
    receiver = Receiver(answer=lambda n: 500 if failing.is_set() else 200)
    with serving(receiver) as url:
        created = create(api, url)
        path = f"/webhooks/{created['id']}"
        write(engine, 1, 3)
        with delivering(fast, webhook_disable_after=timedelta(seconds=0.5)):
            wait_until(lambda: api.get(path).json()["state"] == "paused", 30, "paused")
            paused = api.get(path).json()
            tries = len(receiver.deliveries)
            time.sleep(0.5)
            assert len(receiver.deliveries) == tries  # nothing tried while paused
            assert "WEBHOOK_DISABLE_AFTER (0.5 s)" in paused["paused_reason"]
            assert "HTTP 500" in paused["paused_reason"]
            assert paused["lag"]["changes"] == 3
            assert paused["lag"]["seconds"] > 0.5
            page = samples(api.get("/metrics").text)
            assert value(page, "docingest_webhook_paused", endpoint=created["id"]) == 1
            assert value(page, "docingest_webhook_failing_seconds", endpoint=created["id"]) > 0.5

            failing.clear()
            resumed = api.post(f"{path}/resume")
            assert resumed.status_code == 200, resumed.text
            assert resumed.json()["state"] == "active"
            assert resumed.json()["failing_since"] is None
            wait_until(lambda: api.get(path).json()["lag"]["changes"] == 0, 30, "delivered")
    assert [len(d.items) for d in receiver.ok()] == [3]
    shown = api.get(path).json()
    assert (shown["state"], shown["paused_reason"], shown["attempts"]) == ("active", None, 0)


def test_a_pruned_position_pauses_the_endpoint_and_resuming_needs_the_head(
    api: TestClient, engine: Engine, fast: Settings
) -> None:
    receiver = Receiver()
    with serving(receiver) as url:
        created = create(api, url)
        path = f"/webhooks/{created['id']}"
        write(engine, 1, 3)
        relay(engine, retention=timedelta(microseconds=1))  # every change pruned
        with delivering(fast):
            wait_until(lambda: api.get(path).json()["state"] == "paused", 30, "paused")
            assert "position was pruned" in api.get(path).json()["paused_reason"]
            refused = api.post(f"{path}/resume")
            assert refused.status_code == 409
            assert "from=head" in refused.json()["detail"]
            resumed = api.post(f"{path}/resume", params={"from": "head"})
            assert resumed.status_code == 200, resumed.text
            assert resumed.json()["position"] == str(head(engine))
            write(engine, 1, 2)
            wait_until(lambda: len(receiver.delivered_positions()) == 2, 30, "new changes")
    assert receiver.delivered_positions() == [head(engine) - 1, head(engine)]


def test_two_deliverers_never_deliver_to_one_endpoint_at_once(
    api: TestClient, engine: Engine, fast: Settings
) -> None:
    """Each holds every request 30 ms; 12 batches, the leases given back after each turn so
    that both keep competing: never two requests in flight, every change once, in order."""
    receiver = Receiver(hold_seconds=0.03)
    with serving(receiver) as url:
        created = create(api, url, kinds=["stored"])
        receiver.secret = created["secret"]
        with (
            delivering(fast, webhook_batch_size=5) as first,
            delivering(fast, webhook_batch_size=5) as second,
        ):
            for _ in range(6):
                write(engine, 1, 10)
                time.sleep(0.05)
            wait_until(lambda: receiver.delivered_positions()[-1:] == [head(engine)], 30,
                       "every change delivered")  # fmt: skip
            assert first.owner != second.owner
    assert receiver.max_in_flight == 1
    assert receiver.delivered_positions() == [int(i["position"]) for i in feed(api, "0")][-60:]
    assert len(receiver.deliveries) == len(receiver.ok()) >= 12
    assert all(delivery.verified for delivery in receiver.deliveries)


def test_the_webhooks_api_validates_and_never_shows_a_secret_again(api: TestClient) -> None:
    url = "http://127.0.0.1:9/hook"
    for body, where in (
        ({"url": url, "kinds": ["stored", "renamed"]}, ["body", "kinds", 1]),
        ({"url": "ftp://example.com/x"}, ["body", "url"]),
        ({"url": url, "secret": "mine"}, ["body", "secret"]),
        ({"url": url, "categories": ["  "]}, ["body", "categories", 0]),
        ({}, ["body", "url"]),
    ):
        answer = api.post("/webhooks", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert [d["loc"] for d in answer.json()["detail"]] == [where], answer.json()
    not_json = api.post("/webhooks", content=b"\xff", headers={"content-type": "application/json"})
    assert not_json.status_code == 422

    created = api.post("/webhooks", json={"url": url, "categories": [" tech "]})
    assert created.status_code == 201
    body = created.json()
    assert created.headers["location"] == f"/webhooks/{body['id']}"
    assert body["secret"].startswith("whsec_")
    assert (body["kinds"], body["categories"], body["state"]) == ([], ["tech"], "active")
    assert body["lag"] == {"changes": 0, "seconds": 0.0}
    listed = api.get("/webhooks").json()
    assert [item["id"] for item in listed] == [body["id"]]
    assert "secret" not in listed[0]
    assert body["secret"] not in api.get(f"/webhooks/{body['id']}").text
    assert api.delete(f"/webhooks/{body['id']}").status_code == 204
    for method, path in (
        ("GET", f"/webhooks/{body['id']}"),
        ("DELETE", f"/webhooks/{body['id']}"),
        ("POST", f"/webhooks/{body['id']}/resume"),
    ):
        assert api.request(method, path).status_code == 404
    assert api.post(f"/webhooks/{body['id']}/resume", params={"from": "x"}).status_code == 422


def test_webhooks_need_the_admin_scope(fast: Settings) -> None:
    keys = {name: generate_key() for name in ("ops", "reader")}
    entries = [
        ApiKey("ops", frozenset({Scope.ADMIN}), digest(keys["ops"])).env_entry(),
        ApiKey("reader", frozenset({Scope.READ, Scope.INGEST}), digest(keys["reader"])).env_entry(),
    ]
    keyed = fast.model_copy(update={"api_keys": ",".join(entries)})
    body = {"url": "http://127.0.0.1:9/hook"}
    with TestClient(create_app(keyed)) as client:
        assert client.get("/webhooks").status_code == 401
        reader = {"Authorization": f"Bearer {keys['reader']}"}
        assert client.get("/webhooks", headers=reader).status_code == 403
        assert client.post("/webhooks", json=body, headers=reader).status_code == 403
        ops = {"Authorization": f"Bearer {keys['ops']}"}
        created = client.post("/webhooks", json=body, headers=ops)
        assert created.status_code == 201
        assert created.json()["created_by"] == "ops"


def test_a_retry_with_its_idempotency_key_gets_the_endpoint_the_first_try_made(
    api: TestClient, engine: Engine
) -> None:
    """The same key and body again: the same endpoint, secret included, and no second one;
    the key with another body, or a key that is no header value, a 422."""
    body = {"url": "http://127.0.0.1:9/hook", "kinds": ["stored", "deleted"]}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = api.post("/webhooks", json=body, headers=key)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    write(engine, 1, 2)  # the feed moved on meanwhile: the answer is the endpoint as it is now
    again = api.post("/webhooks", json=body | {"kinds": ["deleted", "stored"]}, headers=key)
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert (again.json()["id"], again.json()["secret"]) == (
        first.json()["id"],
        first.json()["secret"],
    )
    other = api.post("/webhooks", json=body | {"kinds": ["stored"]}, headers=key)
    assert other.status_code == 422
    assert other.json()["detail"][0]["type"] == "idempotency_key_reused"
    assert api.post("/webhooks", json=body, headers={"Idempotency-Key": "a b"}).status_code == 422
    assert (
        api.post("/webhooks", json=body, headers={"Idempotency-Key": "k" * 256}).status_code == 422
    )
    without = [api.post("/webhooks", json=body).json()["id"] for _ in range(2)]
    assert len({first.json()["id"], *without}) == 3  # no key: a new endpoint each time
    assert len(api.get("/webhooks").json()) == 3


def test_the_client_retries_an_answer_lost_without_making_a_second_endpoint(
    api: TestClient,
) -> None:
    """The first POST is made, then its answer lost (the connection drops): the client's
    retry, with the same Idempotency-Key, gets the same endpoint and its secret."""
    from docingest_client import Client

    class LosingFirstAnswer(httpx.BaseTransport):
        def __init__(self) -> None:
            self.lost = 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = api._transport.handle_request(request)
            if request.method == "POST" and not self.lost:
                self.lost += 1
                raise httpx.ReadError("connection lost before the answer", request=request)
            return response

    transport = LosingFirstAnswer()
    with Client("http://testserver", transport=transport) as client:
        created = client.add_webhook("http://127.0.0.1:9/hook")
        assert transport.lost == 1
        assert client.retries == 1
        assert [found.id for found in client.webhooks()] == [created.id]
        assert created.secret.startswith("whsec_")


def test_the_client_and_the_cli_manage_endpoints(
    api: TestClient, engine: Engine, fast: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docingest_client import ApiError, Client
    from typer.testing import CliRunner

    from docingest.cli import app
    from docingest.settings import get_settings

    with Client("http://testserver", transport=api._transport) as client:
        created = client.add_webhook("http://127.0.0.1:9/hook", kinds=["deleted"])
        assert created.secret.startswith("whsec_")
        assert created.kinds == ["deleted"]
        assert [found.id for found in client.webhooks()] == [created.id]
        assert client.webhook(created.id).position == created.position
        assert client.resume_webhook(created.id).state == "active"
        with pytest.raises(ApiError, match="422"):
            client.add_webhook("gopher://example.com/")
        write(engine, 1, 2)
        relay(engine, retention=timedelta(microseconds=1))
        with pytest.raises(ApiError, match="409"):
            client.resume_webhook(created.id)
        assert client.resume_webhook(created.id, from_head=True).position == str(head(engine))

        monkeypatch.setenv("DATABASE_URL", fast.database_url)
        get_settings.cache_clear()
        try:
            listed = CliRunner().invoke(app, ["webhooks", "list"])
            resumed = CliRunner().invoke(app, ["webhooks", "resume", str(created.id)])
            unknown = CliRunner().invoke(app, ["webhooks", "resume", str(uuid.uuid4())])
        finally:
            get_settings.cache_clear()
        assert listed.exit_code == 0, listed.output
        [line] = listed.stdout.splitlines()
        assert orjson.loads(line)["id"] == str(created.id)
        assert "secret" not in line
        assert resumed.exit_code == 0, resumed.output
        assert unknown.exit_code == 1
        assert "no webhook" in unknown.output

        client.delete_webhook(created.id)
        client.delete_webhook(created.id)  # idempotent: a 404 is a success
        assert client.webhooks() == []
