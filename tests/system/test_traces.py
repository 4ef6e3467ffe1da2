"""Traces: real API and worker processes export over OTLP/HTTP to a receiver inside the test,
whose spans must tell one story: requests, the messages that carried them, the batches that
stored them. And with tracing off, nothing of it: no SDK, no FastAPI telemetry, no new option."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from docingest.embedded import wait_until
from tests.faults import Processes, content_for, count_rows, service_env
from tests.integration.test_traces import (
    Exported,
    Receiver,
    _otel_installed,
)

needs_otel = pytest.mark.skipif(
    not _otel_installed(),
    reason="the docingest[otel] extra is not installed (`make test` installs it)",
)

SINGLE_POSTS = 24
BULK_DOCUMENTS = 30


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def post_concurrently(base_url: str) -> None:
    """Single POSTs from several threads at once (group commit puts several in one message),
    and one bulk request."""
    with httpx.Client(base_url=base_url, timeout=10) as client:

        def post(n: int) -> None:
            response = client.post("/documents", json={"content": content_for(n, "traced")})
            assert response.status_code == 202, response.text

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, range(SINGLE_POSTS)))
        bulk = [{"content": content_for(n, "bulk")} for n in range(BULK_DOCUMENTS)]
        response = client.post("/documents/bulk", json=bulk)
        assert response.status_code == 202, response.text


@needs_otel
def test_a_batch_links_to_the_requests_whose_documents_it_stored(
    procs: Processes,
    receiver: Receiver,
    postgres_url: str,
    redis_url: str,
    model_path: Path,
    tmp_path: Path,
) -> None:
    """Documents wait until the worker starts, so its batches hold several messages each."""
    procs.env = service_env(
        database_url=postgres_url,
        broker_url=redis_url,
        model_path=model_path,
        data_dir=tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    api = procs.api()
    post_concurrently(api.base_url)
    procs.worker(threads=8)
    total = SINGLE_POSTS + BULK_DOCUMENTS
    wait_until(lambda: count_rows(postgres_url) == total, 60, f"{total} documents stored")

    requests = {span.context: span for span in receiver.named("POST /documents")}
    requests |= {span.context: span for span in receiver.named("POST /documents/bulk")}
    assert len(requests) == SINGLE_POSTS + 1
    assert {(span.service, span.kind) for span in requests.values()} == {
        ("docingest-api", "SPAN_KIND_SERVER")
    }
    assert {span.attributes["http.route"] for span in requests.values()} == {
        "/documents",
        "/documents/bulk",
    }

    sends = receiver.named("send documents")
    assert {(span.service, span.kind) for span in sends} == {
        ("docingest-api", "SPAN_KIND_PRODUCER")
    }
    for send in sends:  # a child of the first request it carries, linked to all of them
        assert (send.trace_id, send.parent_span_id) in send.links
        assert send.links <= requests.keys()
    assert set().union(*(send.links for send in sends)) == requests.keys()
    assert len(sends) < len(requests), "group commit sent no request along with another"

    def processed() -> list[Exported]:
        batches = receiver.named("process documents")
        return batches if sum(b.attributes["docingest.documents"] for b in batches) == total else []

    wait_until(lambda: bool(processed()), 30, "the spans of every batch exported")
    batches = processed()
    assert {(span.service, span.kind) for span in batches} == {
        ("docingest-worker", "SPAN_KIND_CONSUMER")
    }
    assert set().union(*(batch.links for batch in batches)) == requests.keys()
    assert max(len(batch.links) for batch in batches) > 1, "no batch held several requests"
    assert {batch.attributes["messaging.system"] for batch in batches} == {"redis"}

    links = sorted(len(batch.links) for batch in batches)
    print(f"FIGURES traces: {len(requests)} requests, {len(sends)} sends, batch links {links}")

    by_id = {batch.span_id: batch for batch in batches}
    for name in ("classify", "store", "settle"):
        steps = receiver.named(name)
        assert len(steps) == len(batches), name
        for step in steps:
            assert step.parent_span_id in by_id, name
            assert step.trace_id == by_id[step.parent_span_id].trace_id, name
    stored = receiver.named("store")
    assert sum(span.attributes["docingest.documents"] for span in stored) == total
    assert {span.attributes["db.system.name"] for span in stored} == {"postgresql"}
