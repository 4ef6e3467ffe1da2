"""Poison documents, failure records, status, replay and backpressure, on real Redis and SQL."""

import uuid
from collections.abc import Sequence

import dramatiq
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from docingest.api import create_app
from docingest.broker import QUEUE_NAME
from docingest.classifier import Classifier, Prediction
from docingest.failures import count_dead_letters, requeue_dead_letters
from docingest.ledger import ledger_for
from docingest.settings import Settings
from docingest.worker import classify_isolating
from tests.helpers import UNAMBIGUOUS, drain

POISON = "this text makes the classifier raise"


class PoisonedClassifier(Classifier):
    """The real model, except that it raises on any batch holding POISON: a classifier bug."""

    def __init__(self, real: Classifier) -> None:
        super().__init__(real._pipeline, real.metadata)
        self.calls = 0

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        self.calls += 1
        if any(POISON in text for text in texts):
            raise ValueError("cannot classify this one")
        return super().predict(texts)


def test_bisection_finds_the_poison_documents(classifier: Classifier) -> None:
    poisoned = PoisonedClassifier(classifier)
    texts = [UNAMBIGUOUS["tech"]] * 61 + [POISON] + [UNAMBIGUOUS["sports"]] * 66 + [POISON]
    outcomes = classify_isolating(poisoned, texts)
    assert [i for i, o in enumerate(outcomes) if isinstance(o, Exception)] == [61, 128]
    assert all(isinstance(o, Prediction) for i, o in enumerate(outcomes) if i not in (61, 128))
    assert poisoned.calls < 2 * 2 * 8 + 1


def test_a_poison_document_fails_alone_and_replays_after_the_fix(
    client: TestClient, broker: dramatiq.Broker, engine: Engine, classifier: Classifier
) -> None:
    texts = [UNAMBIGUOUS["business"], POISON + " " + UNAMBIGUOUS["politics"], UNAMBIGUOUS["tech"]]
    result = client.post("/documents/bulk", json=[{"content": t} for t in texts]).json()
    ids = [item["id"] for item in result["items"]]
    assert [client.get(f"/documents/{i}/status").json()["status"] for i in ids] == ["queued"] * 3

    assert drain(broker, engine, PoisonedClassifier(classifier)) == 1

    statuses = [client.get(f"/documents/{i}/status").json() for i in ids]
    assert [s["status"] for s in statuses] == ["stored", "failed", "stored"]
    assert statuses[1]["error"] == "ValueError: cannot classify this one"
    failures = client.get("/failures").json()
    assert [(f["id"], f["attempts"]) for f in failures] == [(ids[1], 1)]

    assert client.post("/failures/replay").json() == {"documents": 1, "dead_letters": 0}
    assert client.get(f"/documents/{ids[1]}/status").json()["status"] == "queued"
    assert client.get("/failures").json() == []
    assert drain(broker, engine, classifier) == 1

    stored = client.get(f"/documents/{ids[1]}").json()
    assert stored["category"] == "politics"
    assert stored["version"] == result["items"][1]["version"]
    assert client.get(f"/documents/{ids[1]}/status").json()["status"] == "stored"


def test_a_newer_stored_version_supersedes_a_failure(
    client: TestClient, broker: dramatiq.Broker, engine: Engine, classifier: Classifier
) -> None:
    document_id = str(uuid.uuid4())
    client.post("/documents", json={"id": document_id, "content": POISON})
    drain(broker, engine, PoisonedClassifier(classifier))
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "failed"

    client.post("/documents", json={"id": document_id, "content": UNAMBIGUOUS["tech"]})
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "queued"
    drain(broker, engine, classifier)
    assert client.get(f"/documents/{document_id}/status").json()["status"] == "stored"
    assert client.get("/failures").json() == []
    assert client.post("/failures/replay").json()["documents"] == 0


def test_status_of_an_unknown_id_is_404(client: TestClient) -> None:
    response = client.get(f"/documents/{uuid.uuid4()}/status")
    assert response.status_code == 404
    assert response.json() == {"detail": "Document not found"}


def test_a_full_queue_answers_429_until_drained(
    settings: Settings, broker: dramatiq.Broker, engine: Engine, classifier: Classifier
) -> None:
    settings.max_queued_documents = 5
    with TestClient(create_app(settings)) as client:
        accepted = client.post("/documents/bulk", json=[{"content": "x"}] * 5)
        assert accepted.status_code == 202
        refused = client.post("/documents", json={"content": "one too many"})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == str(settings.retry_after_seconds)
        assert "5 documents are waiting" in refused.json()["detail"]
        assert ledger_for(broker).pending_count() == 5

        drain(broker, engine, classifier)
        assert ledger_for(broker).pending_count() == 0
        client.app.state.enqueuer._depth = (0.0, None)  # skip the one-second reading cache
        assert client.post("/documents", json={"content": "room again"}).status_code == 202


def test_dead_lettered_messages_are_counted_and_requeued(
    client: TestClient, broker: dramatiq.Broker, engine: Engine, classifier: Classifier
) -> None:
    """What Dramatiq does after the last retry (nack to the dead-letter set), then replay."""
    document_id = client.post("/documents", json={"content": UNAMBIGUOUS["sports"]}).json()["id"]
    consumer = broker.consume(QUEUE_NAME, timeout=200)
    message = next(iter(consumer))
    consumer.nack(message)
    consumer.close()
    assert count_dead_letters(broker) == 1

    assert requeue_dead_letters(broker) == 1
    assert count_dead_letters(broker) == 0
    assert drain(broker, engine, classifier) == 1
    assert client.get(f"/documents/{document_id}").json()["category"] == "sports"
