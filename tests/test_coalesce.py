"""The worker's group commit: messages held at once are classified and stored as one batch."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from docingest.connections import connect
from docingest.embedded import wait_until
from docingest.queue.messages import ingest_message
from docingest.schemas import utcnow
from docingest.settings import Settings
from docingest.worker.coalesce import Coalescer, Documents
from tests.faults import Processes, content_for, count_rows, service_env


class Recorder:
    """A batch function that holds its first batch until released, so others gather."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[tuple[list[str], int]] = []
        self.links: list[list[str]] = []
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, documents: Documents, messages: int, links: list[str]) -> None:
        self.release.wait(10)
        ids = [document["id"] for document in documents]
        self.batches.append((ids, messages))
        self.links.append(links)
        if self.fail_on in ids:
            raise RuntimeError(f"refused {self.fail_on}")


def submit_all(coalescer: Coalescer, messages: list[Documents]) -> list[BaseException | None]:
    """Each message from its own thread, as Dramatiq's worker threads would; the first is
    submitted alone, so it is the batch being worked on while the others wait. Each message
    brings along one link: `link-` and its first document's id."""
    outcomes: list[BaseException | None] = [None] * len(messages)

    def submit(n: int) -> None:
        try:
            coalescer.submit(messages[n], [f"link-{messages[n][0]['id']}"])
        except BaseException as error:
            outcomes[n] = error

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(len(messages))]
    threads[0].start()
    time.sleep(0.1)
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.1)
    return outcomes_after(threads, outcomes)


def outcomes_after(
    threads: list[threading.Thread], outcomes: list[BaseException | None]
) -> list[BaseException | None]:
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive(), "a submitter never returned"
    return outcomes


def documents(*ids: str) -> Documents:
    return [{"id": document_id} for document_id in ids]


def test_messages_waiting_while_a_batch_runs_go_together_into_the_next() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder, max_documents=100, lanes=1)
    messages = [documents(f"m{n}") for n in range(10)]
    threading.Timer(0.3, recorder.release.set).start()
    assert submit_all(coalescer, messages) == [None] * 10
    assert recorder.batches[0] == (["m0"], 1)
    assert sorted(recorder.batches[1][0]) == [f"m{n}" for n in range(1, 10)]
    assert recorder.batches[1][1] == 9


def test_a_batch_closes_at_max_documents_and_keeps_messages_whole() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder, max_documents=4, lanes=1)
    messages = [documents("big1", "big2", "big3", "big4", "big5")]
    messages += [documents(f"m{n}a", f"m{n}b") for n in range(1, 6)]
    threading.Timer(0.3, recorder.release.set).start()
    assert submit_all(coalescer, messages) == [None] * 6
    assert recorder.batches[0] == (["big1", "big2", "big3", "big4", "big5"], 1)
    assert [len(ids) for ids, _ in recorder.batches[1:]] == [4, 4, 2]
    assert sorted(i for ids, _ in recorder.batches for i in ids) == sorted(
        document["id"] for message in messages for document in message
    )


def test_every_message_of_a_failed_batch_raises_its_error_and_no_other() -> None:
    recorder = Recorder(fail_on="m5")
    coalescer = Coalescer(recorder, max_documents=100, lanes=1)
    threading.Timer(0.3, recorder.release.set).start()
    outcomes = submit_all(coalescer, [documents(f"m{n}") for n in range(8)])
    assert outcomes[0] is None
    assert all(isinstance(error, RuntimeError) for error in outcomes[1:])
    assert str(outcomes[1]) == "refused m5"


def test_a_batch_brings_along_the_links_of_each_of_its_messages() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder, max_documents=100, lanes=1)
    threading.Timer(0.3, recorder.release.set).start()
    assert submit_all(coalescer, [documents(f"m{n}", f"n{n}") for n in range(5)]) == [None] * 5
    for (ids, _), links in zip(recorder.batches, recorder.links, strict=True):
        assert sorted(links) == sorted(f"link-{i}" for i in ids if i.startswith("m"))


def test_two_lanes_work_on_two_batches_at_once() -> None:
    running = threading.Barrier(2, timeout=5)
    coalescer = Coalescer(lambda *batch: running.wait(), max_documents=1, lanes=2)
    outcomes = submit_all(coalescer, [documents("a"), documents("b")])
    assert outcomes == [None, None]


@pytest.mark.timeout(120)
def test_a_worker_stores_single_posts_in_batches_and_isolates_a_poison_document(
    postgres_url: str, redis_url: str, model_path: Path, tmp_path: Path, procs: Processes
) -> None:
    """Real processes: 200 single POSTs queued as 200 messages while no worker runs, and one
    message whose content PostgreSQL refuses (NUL: the API would refuse it, a message can carry
    it). One worker process with 8 threads: batches hold several messages, every document is
    stored, and the refused one becomes a failure without failing its batch."""
    procs.env = service_env(
        database_url=postgres_url,
        broker_url=redis_url,
        model_path=model_path,
        data_dir=tmp_path,
        LOG_FORMAT="json",
    )
    api = procs.api()
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        for n in range(200):
            response = client.post("/documents", json={"content": content_for(n, "single")})
            assert response.status_code == 202
    poison = _publish_poison(postgres_url, redis_url)
    worker = procs.worker(threads=8)
    wait_until(lambda: count_rows(postgres_url) >= 200, 60, "200 documents stored")
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        wait_until(
            lambda: client.get(f"/documents/{poison}/status").json()["status"] == "failed",
            30,
            "the poison document recorded as failed",
        )
    batches = _batch_lines(worker.log_path)
    messages = sum(batch["messages"] for batch in batches)
    print(f"FIGURES coalescing: {messages} messages in {len(batches)} batches")
    assert messages == 201
    assert len(batches) < messages / 2
    assert sum(batch["documents"] for batch in batches) == 201


def _publish_poison(database_url: str, broker_url: str) -> uuid.UUID:
    settings = Settings(_env_file=None, database_url=database_url, broker_url=broker_url)
    connections = connect(settings)
    poison = uuid.uuid4()
    document = {"id": str(poison), "content": "nul \x00 here", "version": 1}
    try:
        connections.queue.publish([ingest_message([document | {"accepted_at": utcnow()}])])
    finally:
        connections.close()
    return poison


def _batch_lines(log_path: Path) -> list[dict[str, Any]]:
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    events = [json.loads(line) for line in lines]
    return [event for event in events if event.get("event") == "batch processed"]
