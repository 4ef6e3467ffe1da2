"""The HTTP API against a real Redis broker and real databases (SQLite and PostgreSQL)."""

import gc
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from docingest.api import create_app
from docingest.connections import Connections
from docingest.embedded import free_port
from docingest.model.classifier import Classifier
from docingest.queue.redis import QueueKeys
from docingest.settings import Settings, get_settings
from tests.helpers import UNAMBIGUOUS, drain
from tests.proxy import DelayingProxy

QUEUE_KEY = QueueKeys.of("documents").waiting


def queue_length(redis_url: str) -> int:
    return int(redis.Redis.from_url(redis_url).llen(QUEUE_KEY))


def test_the_articles_demo(
    client: TestClient,
    redis_url: str,
    connections: Connections,
    engine: Engine,
    classifier: Classifier,
) -> None:
    response = client.post("/documents", json={"content": "computers are awesome"})
    assert response.status_code == 202
    accepted = response.json()
    document_id = accepted["id"]
    assert uuid.UUID(document_id).version == 7  # assigned by the API: time-ordered
    assert response.headers["location"] == f"/documents/{document_id}/status"
    assert queue_length(redis_url) == 1

    assert client.get(f"/documents/{document_id}").status_code == 404
    assert drain(connections, classifier) == 1

    document = client.get(f"/documents/{document_id}").json()
    assert document["id"] == document_id
    assert document["content"] == "computers are awesome"
    assert document["category"] in classifier.labels
    assert 0 < document["confidence"] <= 1
    assert document["model_version"] == classifier.version
    assert document["version"] == accepted["version"]
    assert document["created_at"] <= document["updated_at"]


def test_the_apps_own_document_limit_applies_not_the_processs(settings: Settings) -> None:
    assert get_settings().max_document_chars == 1_000_000
    app = create_app(settings.model_copy(update={"max_document_chars": 10}))
    with TestClient(app) as client:
        refused = client.post("/documents", json={"content": "x" * 11})
        assert refused.status_code == 422
        assert "longer than 10 characters" in refused.json()["detail"][0]["msg"]
        assert client.post("/documents", json={"content": "x" * 10}).status_code == 202
        bulk = client.post("/documents/bulk", json=[{"content": "x" * 10}, {"content": "x" * 11}])
        assert [item["status"] for item in bulk.json()["items"]] == [202, 422]
        ndjson = client.post(
            "/documents/bulk",
            content=b'{"content": "xxxxxxxxxxx"}\n',
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert [item["status"] for item in ndjson.json()["items"]] == [422]


def test_posting_the_same_id_updates_the_document(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    document_id = str(uuid.uuid4())
    first = client.post("/documents", json={"id": document_id, "content": UNAMBIGUOUS["sports"]})
    assert first.json()["id"] == document_id
    drain(connections, classifier)
    before = client.get(f"/documents/{document_id}").json()

    second = client.post("/documents", json={"id": document_id, "content": UNAMBIGUOUS["politics"]})
    assert second.json()["version"] > first.json()["version"]
    drain(connections, classifier)
    after = client.get(f"/documents/{document_id}").json()

    assert before["category"] == "sports"
    assert after["category"] == "politics"
    assert after["content"] == UNAMBIGUOUS["politics"]
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"]


def test_unknown_document_is_a_json_404(client: TestClient) -> None:
    response = client.get(f"/documents/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json() == {"detail": "Document not found"}


def test_a_non_uuid_path_is_a_422(client: TestClient) -> None:
    response = client.get("/documents/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "document_id"]


BAD_BODIES = {
    "missing content": (b'{"id": "8f7c9a1e-3b5d-4c2a-9e1f-0a1b2c3d4e5f"}', 422),
    "empty content": (b'{"content": ""}', 422),
    "blank content": (b'{"content": "   "}', 422),
    "non-uuid id": (b'{"id": "42", "content": "x"}', 422),
    "content is a number": (b'{"content": 42}', 422),
    "content is a list": (b'{"content": ["a"]}', 422),
    "body is a list": (b'[{"content": "x"}]', 422),
    "unknown field": (b'{"content": "x", "tags": []}', 422),
    "invalid json": (b'{"content": "x"', 422),
    "invalid utf-8": (b'{"content": "\xff\xfe"}', 422),
    "empty body": (b"", 422),
}


@pytest.mark.parametrize("name", BAD_BODIES)
def test_bad_input_is_a_json_4xx_and_nothing_is_queued(
    client: TestClient, redis_url: str, name: str
) -> None:
    body, status = BAD_BODIES[name]
    response = client.post("/documents", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]
    assert queue_length(redis_url) == 0


def test_validation_errors_say_what_is_wrong(client: TestClient) -> None:
    detail = client.post("/documents", json={"content": "  "}).json()["detail"]
    assert detail[0]["loc"] == ["body", "content"]
    assert "empty" in detail[0]["msg"]


def test_a_body_over_the_limit_is_a_413(settings: Settings, redis_url: str) -> None:
    settings.max_body_bytes = 1_000
    with TestClient(create_app(settings)) as client:
        response = client.post("/documents", json={"content": "x" * 2_000})
        assert response.status_code == 413
        assert "1000 bytes" in response.json()["detail"]

        def chunks() -> Iterator[bytes]:
            yield b'{"content": "'
            for _ in range(100):
                yield b"x" * 100
            yield b'"}'

        streamed = client.post(
            "/documents", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert client.post("/documents", json={"content": "small"}).status_code == 202
    assert queue_length(redis_url) == 1


def test_an_unreachable_broker_is_a_503_with_retry_after(settings: Settings) -> None:
    settings.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    settings.broker_timeout_seconds = 0.5
    with TestClient(create_app(settings)) as client:
        response = client.post("/documents", json={"content": "never queued"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == str(settings.retry_after_seconds)
        assert "nothing was accepted" in response.json()["detail"]
        assert client.get("/ready").status_code == 503
        assert client.get("/health").status_code == 200


def test_ready_when_broker_and_database_answer(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "broker": "ok",
        "ledger": "ok",
        "database": "ok",
        "broker_durability": "append-only file, fsync always",
        "model": "none active yet",  # no worker has seeded the registry
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # replaced by the proxy's
def test_ready_during_a_stall_holds_one_thread_per_check_however_often_called(
    settings: Settings, postgres_url: str
) -> None:
    """The database behind a link that answers nothing (no socket timeout ends `SELECT 1`): each
    /ready is answered in time, and the stuck check is waited for again rather than started
    again: one thread and one connection, not one per call (`/ready` is public)."""
    port = make_url(postgres_url).port
    proxy = DelayingProxy(port)
    settings.database_url = postgres_url.replace(f":{port}/", f":{proxy.port}/")
    settings.broker_timeout_seconds = 0.5
    try:
        with TestClient(create_app(settings)) as client:
            assert client.get("/ready").status_code == 200
            proxy.holding.set()
            threads_before = threading.active_count()
            for _ in range(6):
                answer = client.get("/ready")
                assert (answer.status_code, answer.json()["database"]) == (503, "unreachable")
            # The stuck check's thread and its connection's proxy threads: not six of each.
            assert threading.active_count() - threads_before <= 4
            proxy.holding.clear()
    finally:
        proxy.close()


def test_concurrent_posts_share_messages(settings: Settings, redis_url: str) -> None:
    """Group commit: requests waiting together leave in one message, each with its own version."""
    import asyncio

    import httpx

    async def post_many() -> list[httpx.Response]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await asyncio.gather(
                    *(client.post("/documents", json={"content": f"doc {i}"}) for i in range(200))
                )

    responses = asyncio.run(post_many())
    assert {response.status_code for response in responses} == {202}
    versions = [response.json()["version"] for response in responses]
    assert len(set(versions)) == 200
    assert 1 <= queue_length(redis_url) < 200


def test_bulk_json_array_accepts_the_valid_and_explains_the_rest(
    client: TestClient,
    redis_url: str,
    connections: Connections,
    engine: Engine,
    classifier: Classifier,
) -> None:
    chosen = str(uuid.uuid4())
    body = [
        {"content": UNAMBIGUOUS["tech"]},
        {"content": ""},
        {"id": chosen, "content": UNAMBIGUOUS["business"]},
        {"id": "nope", "content": "x"},
        "not an object",
    ]
    response = client.post("/documents/bulk", json=body)
    assert response.status_code == 202
    result = response.json()
    assert (result["errors"], result["accepted"], result["rejected"]) == (True, 2, 3)
    items = result["items"]
    assert [item["index"] for item in items] == [0, 1, 2, 3, 4]
    assert [item["status"] for item in items] == [202, 422, 202, 422, 422]
    assert items[2]["id"] == chosen
    assert items[1]["errors"][0]["loc"] == ["body", 1, "content"]
    assert items[3]["errors"][0]["loc"] == ["body", 3, "id"]
    assert items[0]["version"] < items[2]["version"]

    assert drain(connections, classifier) == 1
    assert client.get(f"/documents/{chosen}").json()["category"] == "business"
    assert client.get(f"/documents/{items[0]['id']}").json()["category"] == "tech"


def test_bulk_ndjson_reports_unparsable_lines(client: TestClient) -> None:
    lines = b'{"content": "one"}\n\n{"content": "two"\n{"content": "three"}\n'
    response = client.post(
        "/documents/bulk", content=lines, headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 202
    result = response.json()
    assert [item["status"] for item in result["items"]] == [202, 422, 202]
    assert result["items"][1]["errors"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"content": "x"}', "application/json"),
        (b"[]", "application/json"),
        (b"[{", "application/json"),
        (b"\n\n", "application/x-ndjson"),
        (b'["\xff"]', "application/json"),
    ],
)
def test_bulk_bodies_that_hold_no_documents_are_a_422(
    client: TestClient, redis_url: str, body: bytes, content_type: str
) -> None:
    response = client.post("/documents/bulk", content=body, headers={"content-type": content_type})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert queue_length(redis_url) == 0


def test_bulk_over_the_document_limit_is_a_413(settings: Settings, redis_url: str) -> None:
    settings.max_bulk_documents = 3
    with TestClient(create_app(settings)) as client:
        response = client.post("/documents/bulk", json=[{"content": "x"}] * 4)
        assert response.status_code == 413
        assert "limit is 3" in response.json()["detail"]
        assert client.post("/documents/bulk", json=[{"content": "x"}] * 3).status_code == 202
    assert queue_length(redis_url) == 1


def test_the_web_process_does_not_load_scikit_learn() -> None:
    """It only reads model cards; loading scikit-learn would double its memory (measured)."""
    import subprocess
    import sys

    code = "import sys, docingest.api; print(sorted({'sklearn', 'numpy'} & sys.modules.keys()))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_only_an_app_that_owns_its_process_freezes_its_heap(settings: Settings) -> None:
    """Served by uvicorn, the app freezes its start-up heap (full collections stopped requests
    for 150-200 ms); built in a process that runs other things, such as this one, it does not."""
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_freeze_count() == 0
    try:
        with TestClient(create_app(settings, owns_process=True)) as client:
            assert client.get("/health").status_code == 200
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
