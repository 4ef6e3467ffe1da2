"""Listings bounded by bytes, not only by count (issue 21, defect 8): `GET /documents` and
`GET /failures/dead-letters` stop adding items at MAX_ANSWER_BYTES, at least one item a page,
and a client following `next_cursor` still sees every document exactly once."""

from __future__ import annotations

from fastapi.testclient import TestClient

from docingest.api import create_app
from docingest.connections import Connections
from docingest.model.classifier import Classifier
from docingest.queue.names import DOCUMENTS_QUEUE
from docingest.settings import Settings
from tests.helpers import drain

CHARS = 40_000  # each document's content
BUDGET = 100_000  # MAX_ANSWER_BYTES: two such documents fit, not three


def big(n: int) -> dict[str, str]:
    return {"content": f"document {n} " + "word " * (CHARS // 5)}


def test_a_page_of_documents_stops_at_the_byte_budget(
    settings: Settings, connections: Connections, classifier: Classifier
) -> None:
    settings.max_answer_bytes = BUDGET
    with TestClient(create_app(settings)) as client:
        ids = {client.post("/documents", json=big(n)).json()["id"] for n in range(5)}
        alone = client.post("/documents", json={"content": "x " * BUDGET}).json()["id"]
        drain(connections, classifier)

        pages = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"limit": 1000}
            if cursor is not None:
                params["cursor"] = cursor
            page = client.get("/documents", params=params).json()
            pages.append([item["id"] for item in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    listed = [document_id for page in pages for document_id in page]
    assert sorted(listed) == sorted(ids | {alone})  # each exactly once
    assert all(1 <= len(page) <= 2 for page in pages)  # a page holds at least one item
    assert [alone] in pages  # one document over the budget: a page of its own


def test_dead_letters_stop_at_the_byte_budget(settings: Settings, connections: Connections) -> None:
    settings.max_answer_bytes = BUDGET
    with TestClient(create_app(settings)) as client:
        for n in range(5):
            assert client.post("/documents", json=big(n)).status_code == 202
        consumer = connections.queue.broker.consume(DOCUMENTS_QUEUE, timeout=200)
        for message, _ in zip(consumer, range(5), strict=False):
            consumer.nack(message)
        consumer.close()
        assert connections.queue.count_dead_letters() == 5
        listed = client.get("/failures/dead-letters", params={"limit": 1000}).json()
        assert len(listed) == 2
        assert all(letter["bytes"] > CHARS for letter in listed)
        small = client.get("/failures/dead-letters", params={"limit": 1}).json()
        assert [letter["message_id"] for letter in small] == [listed[0]["message_id"]]
