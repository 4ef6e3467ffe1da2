"""Group commit on the worker side: the documents of every message a worker's threads hold at
once go through one model call and one transaction.

Dramatiq hands each message to its own thread. Alone, a thread would classify and store its
message by itself, so a worker fed small messages (single POSTs a few at a time) would pay a
model call, a transaction and a ledger round trip for every few documents. Here each thread
hands its documents over and waits while batching threads (`lanes`) work: while they work on
batches, the next messages gather, and the next batch takes all of them. A thread returns (and
Dramatiq acknowledges its message) only after the batch holding its documents was committed, and
raises that batch's error, so Dramatiq retries each of its messages as before. What a message
brings along besides its documents (`links`: the requests it names, when traced) goes with them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

Documents = list[dict[str, Any]]
Waiting = tuple[Documents, Sequence[str], "Future[None]"]


class Coalescer:
    def __init__(
        self,
        run: Callable[[Documents, int, list[str]], None],
        *,
        max_documents: int,
        lanes: int,
    ) -> None:
        """`run(documents, messages, links)` processes one batch. A batch holds whole messages
        and closes at `max_documents` unless its first message alone is larger. Two lanes keep
        the overlap of two threads: one classifies while the other waits on the database."""
        self._run = run
        self._max_documents = max_documents
        self._lanes = lanes
        self._waiting: queue.SimpleQueue[Waiting] = queue.SimpleQueue()
        self._carried: Waiting | None = None
        self._taking = threading.Lock()
        self._starting = threading.Lock()
        self._started = False

    def submit(self, documents: Documents, links: Sequence[str] = ()) -> None:
        """Block until `documents` were processed in some batch; raise that batch's error."""
        self._start()
        done: Future[None] = Future()
        self._waiting.put((documents, links, done))
        done.result()

    def _start(self) -> None:
        """The lanes start on first use: in the worker process Dramatiq forked, not in its
        parent."""
        with self._starting:
            if not self._started:
                for lane in range(self._lanes):
                    name = f"coalescer-{lane}"
                    threading.Thread(target=self._loop, name=name, daemon=True).start()
                self._started = True

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            documents = [document for part, _, _ in batch for document in part]
            links = [link for _, part_links, _ in batch for link in part_links]
            try:
                self._run(documents, len(batch), links)
            except BaseException as error:  # each waiting thread re-raises it
                for _, _, done in batch:
                    done.set_exception(error)
            else:
                for _, _, done in batch:
                    done.set_result(None)

    def _next_batch(self) -> list[Waiting]:
        """The oldest waiting message and every one behind it that fits, without waiting; the
        first that does not fit opens the next batch."""
        with self._taking:
            batch = [self._carried or self._waiting.get()]
            self._carried = None
            size = len(batch[0][0])
            while True:
                try:
                    waiting = self._waiting.get_nowait()
                except queue.Empty:
                    return batch
                if size + len(waiting[0]) > self._max_documents:
                    self._carried = waiting
                    return batch
                batch.append(waiting)
                size += len(waiting[0])
