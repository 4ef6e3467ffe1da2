"""Poison documents, failure records, status, replay and backpressure, on real Redis and SQL."""

import time
import uuid

from fastapi.testclient import TestClient

from docingest.api import create_app
from docingest.connections import Connections
from docingest.model.classifier import Classifier
from docingest.model.scoring import Prediction
from docingest.queue.messages import reclassify_message
from docingest.queue.names import DOCUMENTS_QUEUE, RECLASSIFY_QUEUE
from docingest.settings import Settings
from docingest.worker.ingest import classify_isolating
from tests.helpers import POISON, UNAMBIGUOUS, PoisonedClassifier, drain


def test_bisection_finds_the_poison_documents(poisoned_classifier: PoisonedClassifier) -> None:
    texts = [UNAMBIGUOUS["tech"]] * 61 + [POISON] + [UNAMBIGUOUS["sports"]] * 66 + [POISON]
    outcomes = classify_isolating(poisoned_classifier, texts)
    assert [i for i, o in enumerate(outcomes) if isinstance(o, Exception)] == [61, 128]
    assert all(isinstance(o, Prediction) for i, o in enumerate(outcomes) if i not in (61, 128))
    assert poisoned_classifier.calls < 2 * 2 * 8 + 1


def test_a_poison_document_fails_alone_and_replays_after_the_fix(
    client: TestClient,
    connections: Connections,
    classifier: Classifier,
    poisoned_classifier: PoisonedClassifier,
) -> None:
    texts = [UNAMBIGUOUS["business"], POISON + " " + UNAMBIGUOUS["politics"], UNAMBIGUOUS["tech"]]
    result = client.post("/documents/bulk", json=[{"content": t} for t in texts]).json()
    ids = [item["id"] for item in result["items"]]
    assert [client.get(f"/documents/{i}/status").json()["status"] for i in ids] == ["queued"] * 3

    assert drain(connections, poisoned_classifier) == 1

    statuses = [client.get(f"/documents/{i}/status").json() for i in ids]
    assert [s["status"] for s in statuses] == ["stored", "failed", "stored"]
    assert statuses[1]["error"] == "ValueError: cannot classify this one"
    failures = client.get("/failures").json()
    assert [(f["id"], f["attempts"]) for f in failures] == [(ids[1], 1)]

    assert client.post("/failures/replay").json() == {"documents": 1, "dead_letters": 0}
    assert client.get(f"/documents/{ids[1]}/status").json()["status"] == "queued"
    assert client.get("/failures").json() == []
    assert drain(connections, classifier) == 1

    stored = client.get(f"/documents/{ids[1]}").json()
    assert stored["category"] == "politics"
    assert stored["version"] == result["items"][1]["version"]
    assert client.get(f"/documents/{ids[1]}/status").json()["status"] == "stored"


def test_a_newer_stored_version_supersedes_a_failure(
    client: TestClient,
    connections: Connections,
    classifier: Classifier,
    poisoned_classifier: PoisonedClassifier,
) -> None:
    document_id = str(uuid.uuid4())
    client.post("/documents", json={"id": document_id, "content": POISON})
    drain(connections, poisoned_classifier)
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "failed"

    client.post("/documents", json={"id": document_id, "content": UNAMBIGUOUS["tech"]})
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "queued"
    drain(connections, classifier)
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "stored"
    assert client.get("/failures").json() == []
    assert client.post("/failures/replay").json()["documents"] == 0


def test_status_of_an_unknown_id_is_404(client: TestClient) -> None:
    response = client.get(f"/documents/{uuid.uuid4()}/status")
    assert response.status_code == 404
    assert response.json() == {"detail": "Document not found"}


def test_a_full_queue_answers_429_until_drained(
    settings: Settings, connections: Connections, classifier: Classifier
) -> None:
    settings.max_queued_documents = 5
    with TestClient(create_app(settings)) as client:
        accepted = client.post("/documents/bulk", json=[{"content": "x"}] * 5)
        assert accepted.status_code == 202
        refused = client.post("/documents", json={"content": "one too many"})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == str(settings.retry_after_seconds)
        assert "5 documents are waiting" in refused.json()["detail"]
        assert connections.ledger.pending_count() == 5

        drain(connections, classifier)
        assert connections.ledger.pending_count() == 0
        time.sleep(1.1)  # the API reads the pending count at most once a second
        assert client.post("/documents", json={"content": "room again"}).status_code == 202


def test_dead_letters_of_every_queue_are_listed_counted_and_replayed(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    """What Dramatiq does after the last retry (nack to the dead letters), on the documents
    queue and on the reclassify queue; then one replay brings both back to their own queues."""
    document_id = client.post("/documents", json={"content": UNAMBIGUOUS["sports"]}).json()["id"]
    connections.queue.publish([reclassify_message([uuid.UUID(document_id)], "some-model")])
    for queue in (DOCUMENTS_QUEUE, RECLASSIFY_QUEUE):
        consumer = connections.queue.broker.consume(queue, timeout=200)
        consumer.nack(next(iter(consumer)))
        consumer.close()
    assert connections.queue.count_dead_letters() == 2
    listed = client.get("/failures/dead-letters").json()
    assert sorted((d["queue"], d["actor"], d["documents"]) for d in listed) == [
        ("documents", "documents.ingest", 1),
        ("reclassify", "documents.reclassify", 1),
    ]
    assert client.get("/metrics").text.count('docingest_queue_depth{queue="reclassify.XQ"} 1.0')

    assert client.post("/failures/replay").json() == {"documents": 0, "dead_letters": 2}
    assert connections.queue.count_dead_letters() == 0
    depths = connections.queue.depths()
    assert (depths["documents"], depths["reclassify"]) == (1, 1)
    assert drain(connections, classifier) == 1
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "stored"
