"""The campaign's clients: threads sending creates, bulk creates, deletes, labels and status
reads on a bounded set of ids (so that writes collide), round-robin over the API hosts.

Every attempt is recorded (tests/chaos/history.py) with the time before sending and after the
answer. A client does not retry a refused request (the next operation is a new write); it waits
as Retry-After says after a 429 or 503, so that the campaign does not hammer a recovering
deployment. Contents are unique per create, so a stored row names the write it came from.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import httpx

from tests.chaos.history import History, Op, OpKind
from tests.faults import content_for

REQUEST_TIMEOUT = 5.0
MAX_BACKOFF = 2.0
PAUSE = 0.02  # between two operations of a client: two cores are shared with the servers
CATEGORIES = ("sport", "tech", "politics", "business", "entertainment", "chaos-label")
OPERATIONS = ("create", "bulk", "delete", "label", "unlabel", "status")
WEIGHTS = (40, 8, 12, 14, 6, 20)


def make_ids(seed: int, count: int) -> list[str]:
    rng = random.Random(f"ids-{seed}")
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


class Client(threading.Thread):
    """One client: a seeded stream of operations until `stopping` is set."""

    def __init__(
        self,
        number: int,
        seed: int,
        base_urls: list[str],
        key: str,
        ids: list[str],
        history: History,
        stopping: threading.Event,
    ) -> None:
        super().__init__(name=f"chaos-client-{number}", daemon=True)
        self.number = number
        self.rng = random.Random(f"client-{seed}-{number}")
        self.base_urls = base_urls
        self.key = key
        self.ids = ids
        self.history = history
        self.stopping = stopping
        self.sent = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        clients = [
            httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT, trust_env=False, headers=headers)
            for url in self.base_urls
        ]
        try:
            while not self.stopping.is_set():
                client = clients[self.sent % len(clients)]
                self.sent += 1
                wait = self.step(client)
                self.stopping.wait(wait or PAUSE)
        except BaseException as error:  # a checker's bug, not the service's: reported
            self.failure = error
        finally:
            for client in clients:
                client.close()

    def _content(self) -> str:
        return content_for(self.rng.randrange(1000), f"c{self.number}-{self.sent}")

    def step(self, client: httpx.Client) -> float:
        """One operation; the seconds to wait before the next (Retry-After), else 0."""
        operation = self.rng.choices(OPERATIONS, WEIGHTS)[0]
        document_id = self.rng.choice(self.ids)
        if operation == "create":
            body: Any = {"id": document_id, "content": self._content()}
            return self._create(client, [body], bulk=False)
        if operation == "bulk":
            chosen = self.rng.sample(self.ids, self.rng.randint(2, 4))
            documents = [{"id": i, "content": self._content()} for i in chosen]
            if self.rng.random() < 0.25:
                documents[-1]["content"] = ""  # an invalid item: refused alone (422)
            return self._create(client, documents, bulk=True)
        if operation == "status":
            return self._request(
                client, "status", document_id, "GET", f"/documents/{document_id}/status"
            )
        if operation == "delete":
            return self._request(
                client, "delete", document_id, "DELETE", f"/documents/{document_id}"
            )
        if operation == "unlabel":
            path = f"/documents/{document_id}/label"
            return self._request(client, "unlabel", document_id, "DELETE", path)
        category = self.rng.choice(CATEGORIES)
        path = f"/documents/{document_id}/label"
        return self._request(
            client, "label", document_id, "PUT", path, {"category": category}, category
        )

    def _send(
        self, client: httpx.Client, method: str, path: str, body: Any
    ) -> tuple[float, float, httpx.Response | None, str]:
        start = time.monotonic()
        try:
            response = client.request(method, path, json=body)
        except httpx.HTTPError as error:
            return start, time.monotonic(), None, f"{type(error).__name__}: {error}"
        return start, time.monotonic(), response, ""

    def _create(
        self, client: httpx.Client, documents: list[dict[str, str]], *, bulk: bool
    ) -> float:
        path = "/documents/bulk" if bulk else "/documents"
        start, end, response, error = self._send(
            client, "POST", path, documents if bulk else documents[0]
        )
        answer = _json(response)
        items: list[dict[str, Any]] = []
        if response is not None and response.status_code == 202:
            items = answer["items"] if bulk else [answer | {"status": 202}]
        for n, document in enumerate(documents):
            item = items[n] if items else {}
            status = item.get("status", None if response is None else response.status_code)
            self.history.add(Op(
                self.number, "create", document["id"], start, end, status,
                version=item.get("version"), content=document["content"],
                detail=error or str(answer.get("detail", ""))[:200], bulk=bulk,
            ))  # fmt: skip
        return _backoff(response)

    def _request(
        self,
        client: httpx.Client,
        kind: OpKind,
        document_id: str,
        method: str,
        path: str,
        body: Any = None,
        label: str | None = None,
    ) -> float:
        start, end, response, error = self._send(client, method, path, body)
        answer = _json(response)
        status = None if response is None else response.status_code
        state = answer.get("status") if kind == "status" and status == 200 else None
        if kind == "status" and status == 404:
            state = "absent"
        self.history.add(Op(
            self.number, kind, document_id, start, end, status,
            version=answer.get("version") if status == 200 else None, label=label, state=state,
            detail=error or str(answer.get("detail", ""))[:200],
        ))  # fmt: skip
        return _backoff(response)


def _json(response: httpx.Response | None) -> dict[str, Any]:
    if response is None or not response.content:
        return {}
    try:
        found = response.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _backoff(response: httpx.Response | None) -> float:
    if response is None:
        return 0.2
    if response.status_code in (429, 503) and "retry-after" in response.headers:
        try:
            return min(MAX_BACKOFF, float(response.headers["retry-after"]))
        except ValueError:
            return MAX_BACKOFF
    return 0.0
