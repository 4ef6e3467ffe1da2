"""The change feed on SQLite and PostgreSQL: each kind of change, `next`, filters, the head,
long polls, server-sent events, retention (410), scopes, and exactness under concurrency."""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text, update

from docingest.api import create_app
from docingest.changes.feed import dump, read_changes
from docingest.changes.relay import relay, relay_lag
from docingest.connections import Connections
from docingest.db import make_engine
from docingest.documents.store import (
    _store_documents,
    content_digest,
    store_batch,
    store_tombstone,
)
from docingest.keys import ApiKey, Scope, digest, generate_key
from docingest.model import registry
from docingest.model.classifier import Classifier
from docingest.schemas import Change, utcnow
from docingest.settings import Settings
from docingest.tables import CHANGES
from docingest.worker.ingest import reclassify
from tests.helpers import UNAMBIGUOUS, drain


def row(document_id: uuid.UUID, version: int, category: str = "tech") -> dict[str, Any]:
    """A classified document row as a worker stores it."""
    now = utcnow()
    content = f"{document_id} {version}"
    return {
        "id": document_id,
        "content": content,
        "content_sha256": content_digest(content),
        "version": version,
        "created_at": now,
        "updated_at": now,
        "category": category,
        "confidence": 0.9,
        "alternatives": [{"category": category, "probability": 0.9}],
        "model_version": "test",
    }


def changes(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/changes", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_each_kind_of_change_says_what_it_left(
    client: TestClient,
    connections: Connections,
    classifier: Classifier,
    nb_model_path: Path,
    model_path: Path,
) -> None:
    engine = connections.engine
    registry.add(engine, model_path.read_bytes(), activate=True)
    document_id = str(uuid.uuid4())
    for text_ in (UNAMBIGUOUS["tech"], UNAMBIGUOUS["sports"]):  # a new document, a new version
        accepted = client.post("/documents", json={"id": document_id, "content": text_})
        assert accepted.status_code == 202
        drain(connections, classifier)
    labelled = client.put(f"/documents/{document_id}/label", json={"category": "politics"})
    assert labelled.status_code == 200, labelled.text
    revision = labelled.json()["label"]["revision"]
    removed = client.delete(
        f"/documents/{document_id}/label", headers={"If-Match": f'"{revision}"'}
    )
    assert removed.status_code == 204, removed.text
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=True).version
    assert reclassify([document_id], engine=engine, classifier=registry.load(engine, nb)) == 1
    assert client.delete(f"/documents/{document_id}").status_code == 204
    relay(engine)

    items = changes(client)["items"]
    kinds = [(item["kind"], item["version"]) for item in items]
    assert kinds == [
        ("stored", 1),
        ("stored", 2),
        ("labelled", 2),
        ("unlabelled", 2),
        ("reclassified", 2),
        ("deleted", 3),
    ]
    assert {item["document_id"] for item in items} == {document_id}
    stored, _, labelled_, unlabelled, reclassified, deleted = items
    assert stored["category"] == "tech"
    assert stored["model_version"] == classifier.version
    assert stored["alternatives"][0]["category"] == "tech"
    assert stored["label"] is None
    assert labelled_["label"] == "politics"
    assert unlabelled["label"] is None
    assert reclassified["model_version"] == nb
    assert deleted["category"] is None
    assert deleted["label"] is None
    positions = [int(item["position"]) for item in items]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    # A redelivered message (an older version arriving late) writes nothing, so no change.
    store_batch(engine, [row(uuid.UUID(document_id), 1)])
    assert relay(engine) is not None
    assert changes(client, after=items[-1]["position"])["items"] == []


def test_the_feed_writes_each_change_as_the_wire_model_does(database_url: str) -> None:
    """Pages are serialised from the rows, without the wire `Change`: each item's JSON is the
    model's own, byte for byte (field order, UTC times in Z, 1.0 not 1, compact alternatives),
    whatever the PostgreSQL session's time zone."""
    engine = make_engine(database_url)
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _in_kolkata)
    try:
        first, second = uuid.uuid4(), uuid.uuid4()
        store_batch(engine, [row(first, 1, "économie") | {"confidence": 1.0}])
        store_batch(engine, [row(second, 1)])
        store_tombstone(engine, second, 2)
        with engine.begin() as connection:  # a whole second: no fraction written; 0.4 s: six digits
            connection.execute(update(CHANGES).values(at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)))
            at = datetime(2026, 1, 2, 3, 4, 5, 400_000, tzinfo=UTC)
            connection.execute(update(CHANGES).where(CHANGES.c.document_id == first).values(at=at))
        relay(engine)
        page = read_changes(engine, after=None, limit=10)
        assert [(c["document_id"], c["kind"]) for c in page.items] == [
            (str(first), "stored"),
            (str(second), "stored"),
            (str(second), "deleted"),
        ]
        for item in page.items:
            written = dump(item)
            assert written == Change.model_validate_json(written).model_dump_json().encode()
        assert b'"at":"2026-01-02T03:04:05Z"' in written
        assert b'"at":"2026-01-02T03:04:05.400000Z"' in dump(page.items[0])
        assert b'"confidence":1.0' in dump(page.items[0])
    finally:
        engine.dispose()


def _in_kolkata(connection: Any, _record: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'Asia/Kolkata'")


def test_next_the_head_filters_and_limits(client: TestClient, connections: Connections) -> None:
    engine = connections.engine
    assert client.get("/changes/head").json() == {"position": "0"}
    assert changes(client) == {"items": [], "next": "0"}
    ids = [uuid.uuid4() for _ in range(5)]
    store_batch(engine, [row(i, 1, "tech" if n % 2 else "sports") for n, i in enumerate(ids)])
    relay(engine)
    head = client.get("/changes/head").json()["position"]

    first = changes(client, limit=2)
    assert len(first["items"]) == 2
    assert first["next"] == first["items"][-1]["position"]
    rest = changes(client, after=first["next"], limit=100)
    assert len(rest["items"]) == 3
    assert rest["next"] == head
    seen = [item["document_id"] for item in first["items"] + rest["items"]]
    assert seen == [str(i) for i in sorted(ids)]  # one batch: in id order
    assert changes(client, after=head) == {"items": [], "next": head}
    # A position newer than the head was never handed out (a restored database): 410. So is
    # one past 64 bits (the wire allows 19 digits), also as a stream's Last-Event-ID.
    for after in (str(int(head) + 1), str(2**63 - 1), str(2**63), "9" * 19):
        assert client.get("/changes", params={"after": after}).status_code == 410, after
        assert client.get("/changes", params={"after": after, "wait": 0.1}).status_code == 410
        stream = {"Accept": "text/event-stream", "Last-Event-ID": after}
        assert client.get("/changes", headers=stream).status_code == 410, after

    tech = changes(client, category="tech")
    assert len(tech["items"]) == 2
    assert tech["next"] == head  # past what the filter left out
    both = changes(client, category=["tech", "sports"], kind="stored")
    assert len(both["items"]) == 5
    assert changes(client, kind="deleted") == {"items": [], "next": head}

    for params in ({"limit": 0}, {"limit": 1001}, {"after": "x1"}, {"kind": "x"}, {"wait": 61}):
        assert client.get("/changes", params=params).status_code == 422, params


def test_a_page_links_to_the_next_one_with_the_same_query(
    client: TestClient, connections: Connections
) -> None:
    """Following `rel="next"` alone reads every change once, filters and limit kept."""
    engine = connections.engine
    ids = [uuid.uuid4() for _ in range(5)]
    store_batch(engine, [row(i, 1, "tech" if n % 2 else "sports") for n, i in enumerate(ids)])
    relay(engine)
    url, seen = "/changes?limit=2&category=sports&category=tech", []
    for _ in range(4):
        response = client.get(url)
        seen += [item["document_id"] for item in response.json()["items"]]
        link = response.links["next"]["url"]
        assert link.startswith("/changes?")
        assert parse_qs(urlsplit(link).query) == {
            "limit": ["2"], "category": ["sports", "tech"], "after": [response.json()["next"]]
        }  # fmt: skip
        url = link
    assert seen == [str(i) for i in sorted(ids)]


def test_a_long_poll_answers_as_soon_as_a_change_arrives(
    client: TestClient, connections: Connections
) -> None:
    """No worker runs: the waiting request's own relay pass numbers the change."""
    head = client.get("/changes/head").json()["position"]
    answered: list[tuple[float, dict[str, Any]]] = []

    def poll() -> None:
        started = time.monotonic()
        page = changes(client, after=head, wait=20)
        answered.append((time.monotonic() - started, page))

    waiting = threading.Thread(target=poll)
    waiting.start()
    time.sleep(0.5)
    document_id = uuid.uuid4()
    store_batch(connections.engine, [row(document_id, 1)])
    waiting.join(timeout=30)
    [(seconds, page)] = answered
    assert [item["document_id"] for item in page["items"]] == [str(document_id)]
    assert 0.5 <= seconds < 3, seconds
    print(f"FIGURES changes long poll answered {seconds - 0.5:.2f} s after the commit")
    started = time.monotonic()
    assert changes(client, after=page["next"], wait=0.3)["items"] == []
    assert time.monotonic() - started >= 0.3


def events(client: TestClient, **headers: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    with client.stream(
        "GET", "/changes", params={"wait": 0}, headers={"Accept": "text/event-stream", **headers}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join(response.iter_text())
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "id" in fields:
            found.append((fields["id"], orjson.loads(fields["data"])))
    return found


def test_server_sent_events_resume_after_the_last_event_id(
    client: TestClient, connections: Connections
) -> None:
    ids = sorted(uuid.uuid4() for _ in range(3))
    store_batch(connections.engine, [row(i, 1) for i in ids])
    relay(connections.engine)
    streamed = events(client)
    assert [data["document_id"] for _, data in streamed] == [str(i) for i in ids]
    assert all(data["position"] == event_id for event_id, data in streamed)
    resumed = events(client, **{"Last-Event-ID": streamed[1][0]})
    assert [data["document_id"] for _, data in resumed] == [str(ids[2])]


def test_a_pruned_position_answers_410_saying_how_to_catch_up(
    client: TestClient, connections: Connections
) -> None:
    engine = connections.engine
    store_batch(engine, [row(uuid.uuid4(), 1) for _ in range(3)])
    relay(engine)
    with engine.begin() as connection:  # the two first changes are 8 days old
        old = utcnow() - timedelta(days=8)
        connection.execute(text("UPDATE changes SET at = :old WHERE position <= 2"), {"old": old})
    done = relay(engine, retention=timedelta(days=7))
    assert done is not None
    assert done.pruned == 2
    gone = client.get("/changes", params={"after": "1"})
    assert gone.status_code == 410
    assert "GET /changes/head" in gone.json()["detail"]
    assert "GET /documents" in gone.json()["detail"]
    assert client.get("/changes", params={"after": "0"}).status_code == 410
    # The newest pruned position itself is a cursor that missed nothing.
    assert [item["position"] for item in changes(client, after="2")["items"]] == ["3"]
    assert [item["position"] for item in changes(client)["items"]] == ["3"]
    assert client.get("/changes/head").json() == {"position": "3"}
    sse = client.get("/changes", params={"after": "1"}, headers={"Accept": "text/event-stream"})
    assert sse.status_code == 410


def test_reading_the_feed_needs_the_read_scope(settings: Settings) -> None:
    keys = {name: generate_key() for name in ("reader", "ingester")}
    entries = [
        ApiKey("reader", frozenset({Scope.READ}), digest(keys["reader"])).env_entry(),
        ApiKey("ingester", frozenset({Scope.INGEST}), digest(keys["ingester"])).env_entry(),
    ]
    keyed = settings.model_copy(update={"api_keys": ",".join(entries)})
    with TestClient(create_app(keyed)) as client:
        for path in ("/changes", "/changes/head"):
            assert client.get(path).status_code == 401
            for name, expected in (("reader", 200), ("ingester", 403)):
                headers = {"Authorization": f"Bearer {keys[name]}"}
                assert client.get(path, headers=headers).status_code == expected, (path, name)


def test_an_unfiltered_page_reads_the_next_limit_positions(engine: Engine) -> None:
    """A page reads positions after `after` up to `limit` on, however many rows it finds there
    (a gap: fewer), and `next` is the end of what it read: nothing is skipped."""
    for version in range(1, 9):
        store_batch(engine, [row(uuid.uuid4(), version)])
    relay(engine)
    with engine.begin() as connection:  # positions never have gaps; were one made, still exact
        connection.execute(text("DELETE FROM changes WHERE position = 3"))
    first = read_changes(engine, after=0, limit=4)
    assert [c["position"] for c in first.items] == ["1", "2", "4"]
    assert first.next == 4
    second = read_changes(engine, after=first.next, limit=4)
    assert [c["position"] for c in second.items] == ["5", "6", "7", "8"]
    assert second.next == 8
    assert read_changes(engine, after=second.next, limit=4).items == []


def test_a_change_committed_late_is_read_after_the_reader_went_past(postgres_url: str) -> None:
    """PostgreSQL, default settings: a transaction takes its change row's id first and stays
    open while two others commit and are numbered; a reader reads them and moves on; then the
    first commits: the reader following `next` gets its change, once."""
    engine = make_engine(postgres_url)
    try:
        late, early = uuid.uuid4(), [uuid.uuid4(), uuid.uuid4()]
        with engine.connect() as held:
            transaction = held.begin()
            _store_documents(held, [row(late, 1)])  # store_batch's statement, not committed
            for document_id in early:
                store_batch(engine, [row(document_id, 1)])
            assert relay(engine) is not None
            page = read_changes(engine, after=0, limit=100)
            assert [c["document_id"] for c in page.items] == [str(i) for i in early]
            assert relay_lag(engine).waiting == 0  # the open row is invisible to the relay
            transaction.commit()
        relay(engine)
        after = read_changes(engine, after=page.next, limit=100)
        assert [c["document_id"] for c in after.items] == [str(late)]
        assert after.items[0]["position"] == str(page.next + 1)
        assert read_changes(engine, after=after.next, limit=100).items == []
        ids = _ids_and_positions(engine)
        assert ids[late][0] < min(ids[e][0] for e in early)  # its id came first, its position last
        assert ids[late][1] > max(ids[e][1] for e in early)
    finally:
        engine.dispose()


def _ids_and_positions(engine: Engine) -> dict[uuid.UUID, tuple[int, int]]:
    with engine.connect() as connection:
        found = connection.execute(text("SELECT document_id, id, position FROM changes"))
        return {uuid.UUID(str(d)): (int(i), int(p)) for d, i, p in found}


def test_a_follower_sees_each_committed_version_once_in_order_under_concurrent_writers(
    engine: Engine,
) -> None:
    """Four writer threads store versions of 12 shared ids in small batches (versions from one
    counter, so batches race and older versions arrive late), two relay threads number, and a
    follower reads along: it ends with every change committed, each once, versions rising per
    id, and each id's last version the one stored."""
    ids = [uuid.uuid4() for _ in range(12)]
    counter = itertools.count(1)
    counter_lock = threading.Lock()
    stop, relayed = threading.Event(), threading.Event()
    seen: list[tuple[uuid.UUID, int, int]] = []

    def write(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            with counter_lock:
                batch = [row(i, next(counter)) for i in rng.sample(ids, 4)]
            rng.shuffle(batch)
            store_batch(engine, batch)

    errors: list[Exception] = []

    def relay_often() -> None:  # two of them: two worker processes' relays
        while not stop.is_set():
            try:
                relay(engine)
            except Exception as error:  # counted: the test fails on any
                errors.append(error)
            time.sleep(0.005)

    def follow() -> None:
        position = 0
        while True:
            finished = relayed.is_set()
            page = read_changes(engine, after=position, limit=7)
            seen.extend(
                (uuid.UUID(c["document_id"]), c["version"], int(c["position"])) for c in page.items
            )
            position = page.next
            if finished and not page.items:
                return
            time.sleep(0.002)

    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    helpers = [threading.Thread(target=job) for job in (relay_often, relay_often, follow)]
    for thread in writers + helpers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in helpers[:2]:
        thread.join()
    while (done := relay(engine)) is None or done.numbered:
        pass  # the last changes numbered (a relay thread may have held the lock)
    relayed.set()
    helpers[2].join()

    with engine.connect() as connection:
        total = connection.execute(text("SELECT count(*) FROM changes")).scalar_one()
        stored = dict(connection.execute(text("SELECT id, version FROM documents")).all())
    assert errors == []
    assert len(seen) == total
    assert len({(d, v) for d, v, _ in seen}) == len(seen)  # each once
    assert [p for _, _, p in seen] == list(range(1, total + 1))  # one total order, no gap
    for document_id in ids:
        versions = [v for d, v, _ in seen if d == document_id]
        assert versions == sorted(versions)
        assert len(set(versions)) == len(versions)
        assert versions[-1] == stored[_key(stored, document_id)]
    print(f"FIGURES changes follower: {total} changes of 4x40 batches, each once, in order")


def _key(stored: dict[Any, int], document_id: uuid.UUID) -> Any:
    """SQLite hands ids back as text to a raw query, PostgreSQL as UUIDs."""
    return document_id if document_id in stored else document_id.hex


def test_the_relay_lag_is_in_the_metrics(client: TestClient, connections: Connections) -> None:
    from tests.helpers import samples, value

    store_batch(connections.engine, [row(uuid.uuid4(), 1) for _ in range(3)])
    waiting = samples(client.get("/metrics").text)
    assert value(waiting, "docingest_changes_unrelayed") == 3
    assert value(waiting, "docingest_changes_relay_lag_seconds") >= 0
    relay(connections.engine)
    relayed = samples(client.get("/metrics").text)
    assert value(relayed, "docingest_changes_unrelayed") == 0
    assert value(relayed, "docingest_changes_relay_lag_seconds") == 0


class FlakyTransport(httpx.BaseTransport):
    """The test app's transport, except that its first `failures` requests cannot connect."""

    def __init__(self, inner: httpx.BaseTransport, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.failures:
            self.failures -= 1
            raise httpx.ConnectError("refused", request=request)
        return self.inner.handle_request(request)


def test_the_client_follows_the_feed_and_resumes_after_connection_errors(
    client: TestClient, connections: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    import docingest_client.client as client_module
    from docingest_client import Client

    monkeypatch.setattr(client_module.time, "sleep", lambda _: None)  # the retries' pauses
    ids = sorted(uuid.uuid4() for _ in range(5))
    store_batch(
        connections.engine, [row(i, 1, "tech" if n < 2 else "sports") for n, i in enumerate(ids)]
    )
    relay(connections.engine)
    # Four failed connections: the client's own retries give up, changes() waits and resumes.
    transport = FlakyTransport(client._transport, failures=client_module.CONNECTION_ATTEMPTS + 1)
    with Client("http://testserver", transport=transport) as api:
        followed = api.changes(wait=1)
        first = [next(followed) for _ in range(5)]
        assert [c.document_id for c in first] == ids
        assert first[0].position == "1"
        assert first[0].alternatives is not None
        assert transport.failures == 0
        tech = list(api.changes(categories=["tech"], follow=False))
        assert [c.document_id for c in tech] == ids[:2]
        after = list(api.changes(after=first[2].position, kinds=["stored"], follow=False))
        assert [c.document_id for c in after] == ids[3:]


def test_the_cli_prints_the_feed_as_json_lines(
    monkeypatch: pytest.MonkeyPatch, engine: Engine, database_url: str
) -> None:
    from typer.testing import CliRunner

    from docingest.cli import app
    from docingest.settings import get_settings

    ids = sorted(uuid.uuid4() for _ in range(3))
    store_batch(engine, [row(i, 1) for i in ids])
    relay(engine)
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["changes", "--after", "1"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [line["document_id"] for line in lines] == [str(i) for i in ids[1:]]
    assert [line["position"] for line in lines] == ["2", "3"]


def test_the_worker_relay_numbers_and_prunes_with_the_settings(
    settings: Settings, connections: Connections
) -> None:
    """What each worker process's relay thread runs every CHANGES_RELAY_SECONDS."""
    from types import SimpleNamespace

    from docingest.worker.middleware import WorkerMiddleware

    engine = connections.engine
    store_batch(engine, [row(uuid.uuid4(), 1) for _ in range(2)])
    resources: Any = SimpleNamespace(connections=connections)
    short = settings.model_copy(update={"changes_retention": timedelta(seconds=30)})
    middleware = WorkerMiddleware(short, lambda: resources)
    middleware._relay()
    assert relay_lag(engine).waiting == 0
    assert [c["position"] for c in read_changes(engine, after=None, limit=10).items] == ["1", "2"]
    with engine.begin() as connection:
        old = utcnow() - timedelta(minutes=1)
        connection.execute(text("UPDATE changes SET at = :old WHERE position = 1"), {"old": old})
    middleware._relay()
    assert [c["position"] for c in read_changes(engine, after=None, limit=10).items] == ["2"]
