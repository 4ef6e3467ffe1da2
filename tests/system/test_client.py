"""The Python client (`docingest.Client`, `docingest.AsyncClient`) against real API and worker
processes, as a notebook or a pipeline uses it."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from docingest_client import ApiError, NotFoundError

from docingest import AsyncClient, Client
from docingest.keys import digest, generate_key
from docingest.schemas import BulkItemResult, DocumentOut
from tests.faults import Processes, content_for, keyed_processes, rows
from tests.helpers import UNAMBIGUOUS

ADMIN = generate_key()
READER = generate_key()


@pytest.fixture
def service(
    postgres_url: str, redis_url: str, model_path: Path, tmp_path: Path
) -> Iterator[Processes]:
    processes = keyed_processes(
        tmp_path,
        database_url=postgres_url,
        broker_url=redis_url,
        model_path=model_path,
        api_keys=f"notebook:admin:{digest(ADMIN)},reader:read:{digest(READER)}",
    )
    yield processes
    processes.stop_all()


def test_a_notebook_session(
    service: Processes, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every call once, blocking, with the key from DOCINGEST_API_KEY."""
    api = service.api()
    service.worker()
    monkeypatch.setenv("DOCINGEST_API_KEY", ADMIN)
    with Client(api.base_url) as client:
        accepted = client.add(UNAMBIGUOUS["sports"])
        texts = [content_for(n, "many") for n in range(7)]
        results = client.add_many([*texts[:3], {"content": " "}, *texts[3:]], batch_size=3)

        assert [result.index for result in results] == list(range(8))
        assert [result.status for result in results] == [202] * 3 + [422] + [202] * 4
        assert results[3].errors is not None
        assert results[3].id is None
        statuses = client.wait([accepted, *results], timeout=60)
        assert len(statuses) == 8
        assert {status.status for status in statuses.values()} == {"stored"}

        document = client.get(accepted.id)
        assert isinstance(document, DocumentOut)
        assert document.category == "sports"
        assert client.status(str(accepted.id)).status == "stored"

        listed = list(client.documents(limit=3))  # three pages of three, the last one short
        assert sorted(d.id for d in listed) == sorted(statuses)
        sports = list(client.documents(category="sports"))
        assert accepted.id in {d.id for d in sports}
        assert {d.category for d in sports} == {"sports"}

        client.delete(accepted.id)
        client.delete(accepted.id)  # deleted already: the state asked for, not an error
        assert client.wait([accepted.id])[accepted.id].status == "deleted"
        with pytest.raises(NotFoundError):
            client.get(accepted.id)
        with pytest.raises(NotFoundError):
            client.status(uuid.uuid4())
        with pytest.raises(NotFoundError):
            client.delete(uuid.uuid4())

        [model] = client.models()
        assert model.active
        card = client.model()
        assert card.version == model.version == client.model(model.version).version
        assert set(card.labels) == set(UNAMBIGUOUS)
        assert card.metrics["accuracy"] > 0.9
        assert client.stats().statuses.stored == 7
    assert len(rows(postgres_url)) == 8  # the deleted one is a tombstone


def test_keys_come_from_the_argument_and_scopes_are_the_apis(
    service: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = service.api()
    monkeypatch.delenv("DOCINGEST_API_KEY", raising=False)
    with Client(api.base_url) as anonymous, pytest.raises(ApiError) as refused:
        anonymous.models()
    assert refused.value.status == 401
    with Client(api.base_url, api_key=READER) as reader:
        assert reader.models() == []
        with pytest.raises(ApiError) as forbidden:
            reader.add("a reader may not write")
        assert forbidden.value.status == 403
        with pytest.raises(ValueError):
            reader.documents(colour="blue")  # refused here, by the API's own query schema


def test_an_asyncio_pipeline(service: Processes, postgres_url: str) -> None:
    api = service.api()
    service.worker()

    async def pipeline() -> tuple[list[BulkItemResult], list[DocumentOut]]:
        async with AsyncClient(api.base_url, api_key=ADMIN) as client:
            batches = [[content_for(n, f"task{t}") for n in range(5)] for t in range(3)]
            sent = await asyncio.gather(*(client.add_many(b, batch_size=2) for b in batches))
            results = [result for batch in sent for result in batch]
            statuses = await client.wait(results, timeout=60)
            assert {status.status for status in statuses.values()} == {"stored"}
            first = await client.get(results[0])
            assert first.content == content_for(0, "task0")
            await client.delete(results[0])
            assert (await client.status(results[0])).status == "deleted"
            listed = [document async for document in client.documents(limit=4)]
            assert (await client.model()).version == (await client.models())[0].version
            return results, listed

    results, listed = asyncio.run(pipeline())
    assert len(results) == 15
    assert sorted(d.id for d in listed) == sorted(r.id for r in results[1:] if r.id)
    assert len(rows(postgres_url)) == 15


def test_retry_after_is_honoured_and_a_retry_never_duplicates(
    service: Processes, postgres_url: str
) -> None:
    """No worker at first: the queue fills to MAX_QUEUED_DOCUMENTS and the API answers 429 with
    Retry-After until a worker starts; every document is stored once."""
    api = service.api(MAX_QUEUED_DOCUMENTS="10")
    texts = [content_for(n, "burst") for n in range(40)]
    outcome: list[list[BulkItemResult]] = []
    with Client(api.base_url, api_key=ADMIN, max_wait=120) as client:
        sending = threading.Thread(target=lambda: outcome.append(client.add_many(texts, 10)))
        sending.start()
        sending.join(3)
        assert sending.is_alive()  # waiting out 429s
        service.worker()
        sending.join(120)
        [results] = outcome
        assert client.retries > 0
        client.wait(results, timeout=60)
    assert [r.status for r in results] == [202] * 40
    stored = rows(postgres_url)
    assert sorted(content for _, content, _ in stored) == sorted(texts)


class LosingTransport(httpx.HTTPTransport):
    """Delivers the first bulk request, then loses its answer: the service did the work, the
    client cannot know it."""

    lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/bulk") and not self.lost:
            response.read()
            self.lost += 1
            raise httpx.ReadError("connection reset before the answer", request=request)
        return response


def test_a_request_whose_answer_was_lost_is_sent_again_with_the_same_ids(
    service: Processes, postgres_url: str
) -> None:
    api = service.api()
    service.worker()
    transport = LosingTransport()
    with Client(api.base_url, api_key=ADMIN, transport=transport) as client:
        results = client.add_many([content_for(n, "lost") for n in range(6)])
        assert transport.lost == 1
        assert client.retries == 1
        client.wait(results, timeout=60)
    # One row a document, at the version of the retry's answer: updated by it, not copied.
    assert {i: version for i, _, version in rows(postgres_url)} == {
        str(result.id): result.version for result in results
    }
