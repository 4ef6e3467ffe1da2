"""People's labels on SQLite and PostgreSQL: the API, what a new version or a reclassification
does to them, the filters, the review queue, and the drift figures."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from docingest_client import ApiError
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from docingest import Client
from docingest.api import create_app
from docingest.connections import Connections
from docingest.keys import ApiKey, Scope, digest, generate_key
from docingest.labels.repository import label_agreement, label_history
from docingest.model import registry
from docingest.model.classifier import Classifier
from docingest.model.selection import Selection, count_selected
from docingest.observe.worker_metrics import (
    CONFIDENCE,
    LOW_CONFIDENCE,
    WorkerMetrics,
    worker_metrics,
)
from docingest.settings import Settings
from docingest.worker.ingest import reclassify
from tests.cooking import cooking_texts
from tests.helpers import UNAMBIGUOUS, drain


def post(client: TestClient, documents: list[dict[str, str]]) -> list[str]:
    response = client.post("/documents/bulk", json=documents)
    assert response.status_code == 202, response.text
    return [item["id"] for item in response.json()["items"]]


def stored(
    client: TestClient, connections: Connections, classifier: Classifier, texts: list[str]
) -> list[str]:
    """The texts posted and stored by a worker's job done here; their ids."""
    ids = post(client, [{"content": text} for text in texts])
    drain(connections, classifier)
    return ids


def label(
    client: TestClient, document_id: str, category: str, *, revision: int | None = None, **body: Any
) -> Any:
    return client.put(
        f"/documents/{document_id}/label",
        json={"category": category, **body},
        headers=if_match(revision),
    )


def unlabel(client: TestClient, document_id: str, revision: int | None = None) -> Any:
    return client.delete(f"/documents/{document_id}/label", headers=if_match(revision))


def if_match(revision: int | None) -> dict[str, str]:
    return {} if revision is None else {"If-Match": f'"{revision}"'}


def revision_of(client: TestClient, document_id: str) -> int:
    revision: int = read(client, document_id)["label"]["revision"]
    return revision


def read(client: TestClient, document_id: str) -> dict[str, Any]:
    response = client.get(f"/documents/{document_id}")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def listed(client: TestClient, **params: Any) -> set[str]:
    response = client.get("/documents", params=params)
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def test_a_label_is_stored_with_who_when_and_which_version(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    [document_id] = stored(client, connections, classifier, [UNAMBIGUOUS["tech"]])
    before = read(client, document_id)
    assert before["label"] is None

    response = label(client, document_id, " baking ", version=before["version"])
    assert response.status_code == 200, response.text
    answered = response.json()
    assert answered["label"]["category"] == "baking"  # any name, surrounding blanks dropped
    assert answered["label"]["by"] == "(open mode)"
    assert answered["label"]["version"] == before["version"]
    assert answered["category"] == "tech"  # the model's stays beside it
    assert read(client, document_id) == answered
    assert response.headers["ETag"] == f'"{answered["label"]["revision"]}"'

    replaced = label(client, document_id, "tech", revision=answered["label"]["revision"])
    assert replaced.json()["label"]["category"] == "tech"
    assert unlabel(client, document_id, revision_of(client, document_id)).status_code == 204
    assert read(client, document_id)["label"] is None
    assert unlabel(client, document_id).status_code == 204  # no label: nothing to name


def test_a_label_for_another_version_is_refused_with_409(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    [document_id] = stored(client, connections, classifier, [UNAMBIGUOUS["tech"]])
    post(client, [{"id": document_id, "content": UNAMBIGUOUS["sports"]}])
    drain(connections, classifier)
    stored_version = read(client, document_id)["version"]

    older = label(client, document_id, "tech", version=stored_version - 1)
    assert older.status_code == 409
    assert "older than the version stored" in older.json()["detail"]
    assert label(client, document_id, "tech", version=stored_version + 1).status_code == 409
    assert read(client, document_id)["label"] is None
    assert label(client, document_id, "sports", version=stored_version).status_code == 200


def test_two_reviewers_racing_on_one_document_the_second_gets_409(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    [document_id] = stored(client, connections, classifier, [UNAMBIGUOUS["tech"]])
    version = read(client, document_id)["version"]  # both reviewers read it unlabelled

    first = label(client, document_id, "tech", version=version)
    second = label(client, document_id, "business", version=version)
    assert first.status_code == 200, first.text
    assert second.status_code == 409
    assert 'If-Match: "' in second.json()["detail"]
    assert read(client, document_id)["label"]["category"] == "tech"

    # Both read the first label; one replaces it, the other's revision is stale now.
    read_revision = revision_of(client, document_id)
    assert label(client, document_id, "sport", revision=read_revision).status_code == 200
    stale = label(client, document_id, "politics", revision=read_revision)
    assert stale.status_code == 409
    assert "is not the document's label" in stale.json()["detail"]
    assert read(client, document_id)["label"]["category"] == "sport"
    bad = client.put(
        f"/documents/{document_id}/label", json={"category": "x"}, headers={"If-Match": "*"}
    )
    assert bad.status_code == 422


def test_removing_a_label_needs_its_revision(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    [document_id] = stored(client, connections, classifier, [UNAMBIGUOUS["tech"]])
    old = label(client, document_id, "tech").json()["label"]["revision"]
    new = label(client, document_id, "business", revision=old).json()["label"]["revision"]

    assert unlabel(client, document_id).status_code == 409  # no precondition
    assert unlabel(client, document_id, old).status_code == 409  # a stale one
    assert read(client, document_id)["label"]["category"] == "business"
    assert unlabel(client, document_id, new).status_code == 204
    assert read(client, document_id)["label"] is None


def test_every_label_change_leaves_a_history_row(
    client: TestClient, connections: Connections, classifier: Classifier, engine: Engine
) -> None:
    [document_id] = stored(client, connections, classifier, [UNAMBIGUOUS["tech"]])
    first = label(client, document_id, "tech").json()["label"]["revision"]
    second = label(client, document_id, "business", revision=first).json()["label"]["revision"]
    assert label(client, document_id, "sport", revision=first).status_code == 409  # no row
    assert unlabel(client, document_id, second).status_code == 204

    response = client.get(f"/documents/{document_id}/label/history")
    assert response.status_code == 200, response.text
    changes = response.json()["items"]
    assert [(c["action"], c["category"], c["previous"]) for c in changes] == [
        ("removed", None, "business"),
        ("replaced", "business", "tech"),
        ("set", "tech", None),
    ]
    assert [c["revision"] for c in changes[1:]] == [second, first]
    assert {c["by"] for c in changes} == {"(open mode)"}
    version = read(client, document_id)["version"]
    assert {c["version"] for c in changes} == {version}
    # What training reads: the same rows, from the repository.
    assert [change.action for change in label_history(engine, uuid.UUID(document_id))] == [
        "removed",
        "replaced",
        "set",
    ]
    assert client.get(f"/documents/{uuid.uuid4()}/label/history").status_code == 404


def test_the_python_client_labels_against_the_revision(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    [document_id] = stored(client, connections, classifier, [UNAMBIGUOUS["tech"]])
    # The TestClient's transport: the client's requests reach this app in this process.
    with Client("http://testserver", transport=client._transport) as api:
        first = api.label(document_id, "tech", version=read(client, document_id)["version"])
        assert first.label is not None
        assert first.label.revision is not None
        with pytest.raises(ApiError) as refused:
            api.label(document_id, "business")
        assert refused.value.status == 409
        api.label(document_id, "business", revision=first.label.revision)
        with pytest.raises(ApiError):
            api.unlabel(document_id, revision=first.label.revision)
        api.unlabel(document_id, revision=revision_of(client, document_id))
        changes = api.label_history(document_id).items
    assert [change.action for change in changes] == ["removed", "replaced", "set"]


@pytest.mark.parametrize(
    "body",
    [{}, {"category": ""}, {"category": "  "}, {"category": "a\nb"}, {"category": "x" * 201},
     {"category": "tech", "version": 0}, {"category": "tech", "colour": "blue"}],
)  # fmt: skip
def test_a_bad_label_is_422(client: TestClient, body: dict[str, Any]) -> None:
    response = client.put(f"/documents/{uuid.uuid4()}/label", json=body)
    assert response.status_code == 422, response.text


def test_labelling_a_document_not_stored_is_404(client: TestClient) -> None:
    assert label(client, str(uuid.uuid4()), "tech").status_code == 404
    assert client.delete(f"/documents/{uuid.uuid4()}/label").status_code == 404


def test_a_new_version_keeps_the_label_only_if_its_text_is_the_same(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    same, changed, deleted = stored(
        client, connections, classifier, [UNAMBIGUOUS["tech"], UNAMBIGUOUS["sports"], "gone"]
    )
    for document_id in (same, changed, deleted):
        assert label(client, document_id, "mine").status_code == 200
    post(
        client,
        [
            {"id": same, "content": UNAMBIGUOUS["tech"]},
            {"id": changed, "content": UNAMBIGUOUS["politics"]},
        ],
    )
    drain(connections, classifier)  # one batch, one statement: both decisions in it

    kept = read(client, same)
    assert kept["version"] > kept["label"]["version"]
    assert kept["label"]["category"] == "mine"
    assert read(client, changed)["label"] is None

    assert client.delete(f"/documents/{deleted}").status_code == 204
    post(client, [{"id": deleted, "content": "gone"}])  # revived with the same text
    drain(connections, classifier)
    assert read(client, deleted)["label"] is None


def test_filters_by_label_confidence_and_disagreement(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    texts = [*UNAMBIGUOUS.values(), *cooking_texts(3)]
    ids = stored(client, connections, classifier, texts)
    news, cooking = ids[:5], ids[5:]
    assert label(client, news[0], "business").status_code == 200  # agrees
    for document_id in cooking:
        assert label(client, document_id, "cooking").status_code == 200  # disagree

    assert listed(client, labelled=True) == {news[0], *cooking}
    assert listed(client, labelled=False) == set(news[1:])
    assert listed(client, disagreement=True) == set(cooking)
    assert listed(client, disagreement=False) == {news[0]}
    confidences = {i: read(client, i)["confidence"] for i in ids}
    cut = sorted(confidences.values())[3]
    assert listed(client, max_confidence=cut) == {i for i, c in confidences.items() if c <= cut}
    assert listed(client, labelled=False, max_confidence=cut) == {
        i for i in news[1:] if confidences[i] <= cut
    }
    assert client.get("/documents", params={"max_confidence": 1.5}).status_code == 422


def test_reclassification_leaves_labelled_documents_alone(
    client: TestClient,
    connections: Connections,
    classifier: Classifier,
    engine: Engine,
    nb_model_path: Path,
) -> None:
    ids = stored(client, connections, classifier, list(UNAMBIGUOUS.values()))
    assert label(client, ids[0], "business").status_code == 200
    nb = registry.add(engine, nb_model_path.read_bytes(), activate=False).version
    assert count_selected(engine, Selection(nb)) == 4

    updated = reclassify(ids, engine=engine, classifier=Classifier.load(nb_model_path))
    assert updated == 4
    assert read(client, ids[0])["model_version"] == classifier.version
    assert {read(client, i)["model_version"] for i in ids[1:]} == {nb}


def test_the_review_queue_is_least_confident_first_and_walks_past_skipped(
    client: TestClient,
    connections: Connections,
    classifier: Classifier,
    engine: Engine,
    model_path: Path,
) -> None:
    registry.add(engine, model_path.read_bytes(), activate=True)
    ids = stored(client, connections, classifier, [*UNAMBIGUOUS.values(), *cooking_texts(4)])
    assert label(client, ids[0], "business").status_code == 200
    assert label(client, ids[1], "cinema").status_code == 200

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = client.get("/review/queue", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [item["id"] for item in seen if item["id"] in ids[:2]] == []
    assert len(seen) == len(ids) - 2
    confidences = [item["confidence"] for item in seen]
    assert confidences == sorted(confidences)
    assert page["categories"] == sorted({*UNAMBIGUOUS, "cinema"})
    assert client.get("/review/queue", params={"cursor": "nope!"}).status_code == 422


def test_agreement_is_measured_per_model_over_its_newest_labels(
    client: TestClient, connections: Connections, classifier: Classifier, engine: Engine
) -> None:
    ids = stored(client, connections, classifier, list(UNAMBIGUOUS.values()))
    for document_id, category in zip(ids, UNAMBIGUOUS, strict=True):
        assert label(client, document_id, category).status_code == 200  # all agree
    newest = label(client, ids[0], "cooking", revision=revision_of(client, ids[0]))
    assert newest.status_code == 200  # the newest disagrees

    [whole] = label_agreement(engine, window=100)
    assert (whole.model_version, whole.labels, whole.agreeing) == (classifier.version, 5, 4)
    [newest] = label_agreement(engine, window=1)
    assert (newest.labels, newest.agreeing) == (1, 0)

    drift = client.get("/stats").json()["drift"]
    assert drift["agreement_window"] == 100
    [figures] = drift["models"]
    assert (figures["labels"], figures["agreement"]) == (5, 0.8)
    metrics = client.get("/metrics").text
    assert f'docingest_label_agreement_ratio{{model_version="{classifier.version}"}} 0.8' in metrics


def test_a_resent_labelled_text_keeps_the_classification_it_was_labelled_against(
    client: TestClient,
    connections: Connections,
    classifier: Classifier,
    engine: Engine,
    nb_model_path: Path,
) -> None:
    """A newer model (standing for one trained on these labels) classifies the resent texts:
    were its classification stored beside the labels, its agreement would be measured on them."""
    texts = list(UNAMBIGUOUS.values())
    ids = stored(client, connections, classifier, texts)
    for document_id in ids:
        assert label(client, document_id, "cooking").status_code == 200  # all disagree
    newer = Classifier.load(nb_model_path)
    post(client, [{"id": i, "content": text} for i, text in zip(ids, texts, strict=True)])
    drain(connections, newer)

    for document_id in ids:
        document = read(client, document_id)
        assert document["version"] > document["label"]["version"]  # the resend is stored
        assert document["model_version"] == classifier.version
    [agreement] = label_agreement(engine, window=100)
    assert (agreement.model_version, agreement.labels, agreement.agreeing) == (
        classifier.version,
        5,
        0,
    )


def test_a_text_resent_unchanged_counts_once_in_the_confidences(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    def documents_counted() -> float:
        worker_metrics.flush(connections.metrics)
        return connections.metrics.read().get(f"{CONFIDENCE.name}|{classifier.version}|count", 0)

    before = documents_counted()
    [document_id] = stored(client, connections, classifier, [UNAMBIGUOUS["tech"]])
    for _ in range(3):
        post(client, [{"id": document_id, "content": UNAMBIGUOUS["tech"]}])
        drain(connections, classifier)
    assert documents_counted() == before + 1
    post(client, [{"id": document_id, "content": UNAMBIGUOUS["sports"]}])  # another text
    drain(connections, classifier)
    assert documents_counted() == before + 2


def test_confidences_are_a_histogram_per_model_and_a_share_under_the_threshold(
    client: TestClient, connections: Connections, classifier: Classifier
) -> None:
    recorded = WorkerMetrics()
    recorded.record_confidences("m1", [0.3, 0.45, 0.9, 1.0], threshold=0.5)
    recorded.record_confidences("m2", [0.99], threshold=0.5)
    recorded.flush(connections.metrics)

    stats = client.get("/stats").json()["drift"]
    assert stats["low_confidence_threshold"] == 0.5
    by_model = {figures["model_version"]: figures for figures in stats["models"]}
    assert by_model["m1"]["documents"] == 4
    assert by_model["m1"]["low_confidence_share"] == 0.5
    assert by_model["m1"]["mean_confidence"] == pytest.approx(2.65 / 4)
    assert by_model["m2"]["low_confidence_share"] == 0
    metrics = client.get("/metrics").text
    assert f'{CONFIDENCE.name}_bucket{{le="0.5",model_version="m1"}} 2.0' in metrics
    assert f'{CONFIDENCE.name}_count{{model_version="m2"}} 1.0' in metrics
    assert f'{LOW_CONFIDENCE.name}_total{{model_version="m1"}} 2.0' in metrics


def test_the_label_scope_labels_under_its_key_name_and_reads_what_it_reviews(
    settings: Settings, connections: Connections, classifier: Classifier
) -> None:
    """tests/integration/test_auth.py checks every route's scopes; here: the labeller's name is
    recorded."""
    secret = generate_key()
    key = ApiKey("reviewer-7", frozenset({Scope.LABEL}), digest(secret))
    keyed = settings.model_copy(update={"api_keys": key.env_entry()})
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(keyed), headers=headers) as client:
        assert client.post("/documents", json={"content": "x"}).status_code == 403
        [document_id] = post_as_ingester(connections, classifier)
        assert client.get("/review/queue").json()["items"][0]["id"] == document_id
        labelled = label(client, document_id, "tech").json()
        assert labelled["label"]["by"] == "reviewer-7"
        assert listed(client, labelled=True) == {document_id}
        assert client.get("/stats").status_code == 403


def post_as_ingester(connections: Connections, classifier: Classifier) -> list[str]:
    """A document stored by a worker's job done here, sent past the API."""
    from docingest.queue.enqueue import Enqueuer
    from docingest.schemas import DocumentIn

    sent = Enqueuer(connections.queue, connections.ledger).send(
        [DocumentIn(content=UNAMBIGUOUS["tech"])]
    )
    drain(connections, classifier)
    return [str(document.id) for document in sent]
