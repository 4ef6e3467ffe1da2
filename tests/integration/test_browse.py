"""GET /documents (filters, cursor pages) and DELETE /documents/{id}, on SQLite and PostgreSQL."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from docingest.connections import Connections
from docingest.model.classifier import Classifier
from tests.helpers import UNAMBIGUOUS, drain


def post(client: TestClient, documents: list[dict[str, str]]) -> list[dict[str, Any]]:
    response = client.post("/documents/bulk", json=documents)
    assert response.status_code == 202, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def new_documents(count: int, label: str) -> list[dict[str, str]]:
    texts = list(UNAMBIGUOUS.values())
    return [
        {"id": str(uuid.uuid4()), "content": f"{texts[n % len(texts)]} [{label}#{n}]"}
        for n in range(count)
    ]


def ids_of(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


def browse(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/documents", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_pages_stay_correct_while_documents_arrive_and_change(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    existing = new_documents(23, "old")
    post(client, existing)
    drain(connections, classifier)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = browse(client, limit=5, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= 5
        seen += ids_of(page)
        pages += 1
        # Between pages: new documents arrive, and an already listed one and an unlisted one
        # are updated (which moves them in any time order).
        updates = [{"id": seen[0], "content": UNAMBIGUOUS["tech"]}]
        updates += [{"id": d["id"], "content": UNAMBIGUOUS["sports"]} for d in existing[-1:]]
        post(client, new_documents(3, f"new{pages}") + updates)
        drain(connections, classifier)
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(seen) == len(set(seen)), "a document was listed twice"
    assert {d["id"] for d in existing} <= set(seen), "a document that existed was skipped"
    assert seen == sorted(seen, key=lambda i: uuid.UUID(i).bytes)
    assert pages >= 5


def test_every_filter(client: TestClient, connections: Connections, classifier: Classifier) -> None:
    first = new_documents(5, "first")  # one per category
    post(client, first)
    drain(connections, classifier)
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    second = new_documents(5, "second")
    post(client, second)
    drain(connections, classifier)
    all_ids = {d["id"] for d in first + second}

    assert set(ids_of(browse(client))) == all_ids
    sports = browse(client, category="sports")
    assert len(sports["items"]) == 2
    assert {item["category"] for item in sports["items"]} == {"sports"}
    assert len(ids_of(browse(client, model_version=classifier.version))) == 10
    assert ids_of(browse(client, model_version="no-such-model")) == []

    second_ids = {d["id"] for d in second}
    first_ids = {d["id"] for d in first}
    assert set(ids_of(browse(client, created_after=between.isoformat()))) == second_ids
    assert set(ids_of(browse(client, created_before=between.isoformat()))) == first_ids
    assert set(ids_of(browse(client, updated_after=between.isoformat()))) == second_ids
    assert set(ids_of(browse(client, updated_before=between.isoformat()))) == first_ids
    naive = between.replace(tzinfo=None).isoformat()  # naive times are UTC
    assert set(ids_of(browse(client, updated_after=naive))) == second_ids
    in_paris = between.astimezone(UTC).replace(tzinfo=None).isoformat() + "+01:00"
    assert set(ids_of(browse(client, updated_after=in_paris))) == all_ids
    later = (between + timedelta(hours=1)).isoformat()
    assert ids_of(browse(client, created_after=later)) == []

    assert client.delete(f"/documents/{first[0]['id']}").status_code == 204
    assert set(ids_of(browse(client, status="stored"))) == all_ids - {first[0]["id"]}
    deleted = browse(client, status="deleted")["items"]
    assert [item["id"] for item in deleted] == [first[0]["id"]]
    assert deleted[0]["deleted_at"] is not None

    one = browse(client, limit=1, category="sports")
    assert len(one["items"]) == 1
    rest = browse(client, limit=1, category="sports", cursor=one["next_cursor"])
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None


def test_bad_queries_are_422(client: TestClient) -> None:
    for params in (
        {"limit": 0},
        {"limit": 1001},
        {"cursor": "not a cursor!"},
        {"status": "failed"},
        {"created_after": "yesterday"},
        {"colour": "blue"},
    ):
        response = client.get("/documents", params=params)
        assert response.status_code == 422, (params, response.text)
        assert "detail" in response.json()


def test_delete_wins_over_older_versions_and_a_newer_post_revives(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    document_id = str(uuid.uuid4())
    [stored] = post(client, [{"id": document_id, "content": UNAMBIGUOUS["business"]}])
    drain(connections, classifier)
    assert client.get(f"/documents/{document_id}").status_code == 200

    # An update is still queued when the delete arrives: once the worker gets to it, it is older.
    post(client, [{"id": document_id, "content": UNAMBIGUOUS["politics"]}])
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "queued"
    assert client.delete(f"/documents/{document_id}").status_code == 204
    assert drain(connections, classifier) == 1
    assert client.get(f"/documents/{document_id}").status_code == 404
    status = client.get(f"/documents/{document_id}/status").json()
    assert status["status"] == "deleted"
    assert status["version"] > stored["version"]
    assert client.delete(f"/documents/{document_id}").status_code == 404

    [revived] = post(client, [{"id": document_id, "content": UNAMBIGUOUS["tech"]}])
    drain(connections, classifier)
    document = client.get(f"/documents/{document_id}").json()
    assert document["content"] == UNAMBIGUOUS["tech"]
    assert document["category"] == "tech"
    assert document["deleted_at"] is None
    assert document["version"] == revived["version"] > status["version"]
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "stored"


def test_delete_of_a_document_only_queued(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    document_id = str(uuid.uuid4())
    post(client, [{"id": document_id, "content": UNAMBIGUOUS["sports"]}])
    assert client.delete(f"/documents/{document_id}").status_code == 204
    drain(connections, classifier)
    assert client.get(f"/documents/{document_id}").status_code == 404
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "deleted"


def test_delete_of_an_unknown_id_is_404(client: TestClient) -> None:
    response = client.delete(f"/documents/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json() == {"detail": "Document not found"}
    assert client.delete("/documents/not-a-uuid").status_code == 422
