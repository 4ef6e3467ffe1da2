"""The worker's group commit: messages held at once are classified and stored as one batch."""

from __future__ import annotations

import threading
import time

from docingest.worker.coalesce import Coalescer, Documents


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
