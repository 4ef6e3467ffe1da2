"""Hostile uploads against a real `docingest api` process, and the per-key rate limit.

Huge bodies (declared or chunked) and slow ones are refused while the API process's memory
stays flat; the client here is a raw socket, so the test controls every byte and every pause.
"""

from __future__ import annotations

import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from docingest.db import migrate
from docingest.keys import ApiKey, Scope, digest, generate_key
from tests.faults import Api, Processes, service_env
from tests.integration.test_limits import chunked

MAX_BODY_BYTES = 1 << 20
BODY_TIMEOUT_SECONDS = 2
HUGE = 200 << 20
CHUNK = b"a" * (256 << 10)
KEY = generate_key()
API_KEYS = ApiKey("loader", frozenset({Scope.INGEST, Scope.READ}), digest(KEY)).env_entry()


@pytest.fixture(scope="module")
def api(
    redis_server_url: str, model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    data_dir = tmp_path_factory.mktemp("limits")
    database_url = f"sqlite:///{data_dir / 'limits.db'}"
    migrate(database_url)
    env = service_env(
        database_url=database_url,
        broker_url=redis_server_url,
        model_path=model_path,
        data_dir=data_dir,
        MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_SECONDS),
        API_KEYS=API_KEYS,
    )
    processes = Processes(data_dir, env)
    try:
        api = processes.api()
        # Warm up: the first requests import and allocate what every later one reuses.
        with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {KEY}"}) as c:
            for _ in range(20):
                c.post("/documents", json={"content": "warm-up " * 1000})
                c.post("/documents", content=b"x" * (MAX_BODY_BYTES + 1))
        yield api
    finally:
        processes.stop_all()


def connect(api: Api) -> socket.socket:
    return socket.create_connection(("127.0.0.1", api.port), timeout=30)


def head(length: str, *, authorized: bool = False) -> bytes:
    """A POST /documents request line and headers; `length` is the body's framing header."""
    auth = f"Authorization: Bearer {KEY}\r\n" if authorized else ""
    return (
        f"POST /documents HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"{auth}{length}\r\n\r\n"
    ).encode()


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """The status code and the whole response, read until the server closes."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return int(data.split(b" ", 2)[1]), data


def seconds_to_answer(sock: socket.socket) -> float:
    """How long until the answer's first byte: the server may keep the connection open
    after it (to read what the client still sends), so its close says nothing of promptness."""
    started = time.monotonic()
    select.select([sock], [], [], 30)
    return time.monotonic() - started


def send_until_answered(sock: socket.socket, head: bytes, chunks: Iterator[bytes]) -> int:
    """Send the request, stop as soon as the server answers; return the bytes sent."""
    sock.sendall(head)
    sent = 0
    for chunk in chunks:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            break
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    return sent


class PeakRss:
    """Samples a process's resident memory every 10 ms until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


MIB = 1 << 20
MAX_GROWTH = 30 * MIB


@pytest.mark.parametrize(
    ("authorized", "expected"), [(False, 401), (True, 413)], ids=["no key", "with key"]
)
def test_200_mb_chunked_is_cut_off_at_the_limit(api: Api, authorized: bool, expected: int) -> None:
    """The server answers once the limit is passed (413), or at once without a key (401), then
    reads and discards at most DRAIN_BYTES before closing. Closing with the client's bytes
    still arriving makes the kernel reset the connection, which can beat the answer to the
    client: either is an answer, as long as the server stopped reading near the limit."""
    baseline = psutil.Process(api.pid).memory_info().rss
    with PeakRss(api.pid) as rss, connect(api) as sock:
        sent = send_until_answered(
            sock, head("Transfer-Encoding: chunked", authorized=authorized), chunked(HUGE)
        )
        try:
            status, response = answer(sock)
        except ConnectionResetError:
            status, response = 0, b"reset"
    growth = rss.peak - baseline
    print(
        f"sent {sent / MIB:.0f} of 200 MiB; answer {status}; peak RSS growth {growth / MIB:.1f} MiB"
    )
    assert status in (expected, 0), response[:500]
    if status == 413:
        assert b"larger than the limit" in response
    assert sent < HUGE // 2, "the server read far past its limit"
    assert growth < MAX_GROWTH
    assert httpx.get(f"{api.base_url}/health").status_code == 200


def test_a_200_mb_content_length_is_refused_before_any_byte(api: Api) -> None:
    baseline = psutil.Process(api.pid).memory_info().rss
    with PeakRss(api.pid) as rss, connect(api) as sock:
        sock.sendall(head(f"Content-Length: {HUGE}", authorized=True))
        waited = seconds_to_answer(sock)
        status, response = answer(sock)
    assert status == 413, response[:500]
    assert waited < 1, "answered only after waiting for the body"
    assert rss.peak - baseline < MAX_GROWTH


@pytest.mark.parametrize("length", ["Content-Length: 1000", "Transfer-Encoding: chunked"])
def test_a_slow_body_gets_408_and_the_server_keeps_serving(api: Api, length: str) -> None:
    """A client trickling its body is cut off after BODY_TIMEOUT_SECONDS; meanwhile, and
    after, the server answers others."""
    first = b'{"content": "' if length.startswith("Content") else b'd\r\n{"content": "\r\n'
    with connect(api) as sock:
        started = time.monotonic()  # before the server can start its clock: it reads the head
        sock.sendall(head(length, authorized=True) + first)
        assert httpx.get(f"{api.base_url}/health").status_code == 200
        while time.monotonic() - started < BODY_TIMEOUT_SECONDS + 5:
            readable, _, _ = select.select([sock], [], [], 0.5)
            if readable:
                break
            sock.sendall(b"a" if length.startswith("Content") else b"1\r\na\r\n")
        status, response = answer(sock)
        waited = time.monotonic() - started
    assert status == 408, response[:500]
    assert b"not received within" in response
    assert BODY_TIMEOUT_SECONDS <= waited < BODY_TIMEOUT_SECONDS + 2
    assert httpx.get(f"{api.base_url}/health").status_code == 200


def test_no_key_is_refused_before_the_body_is_read(api: Api) -> None:
    """A caller without a valid key that announces a body and holds it back gets 401 at once:
    the server does not wait for (or buffer) the body of someone it will refuse anyway."""
    for authorization in ("", f"Authorization: Bearer {generate_key()}\r\n"):
        with connect(api) as sock:
            sock.sendall(
                f"POST /documents HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                f"{authorization}Content-Length: {MAX_BODY_BYTES}\r\n\r\n".encode()
                + b'{"content": "'
            )
            waited = seconds_to_answer(sock)
            status, response = answer(sock)
        assert status == 401, response[:500]
        assert waited < 1, f"answered after {waited:.1f} s: it waited for the body"


def test_a_client_that_sends_everything_before_reading_gets_the_413(api: Api) -> None:
    """Python's urllib sends the whole 64 MB body, then reads: it must find the 413 there,
    not a connection reset (the server reads the rest and throws it away, bounded)."""
    request = urllib.request.Request(
        f"{api.base_url}/documents",
        data=b"a" * 64_000_000,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    baseline = psutil.Process(api.pid).memory_info().rss
    with PeakRss(api.pid) as rss, pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert b"larger than the limit" in refused.value.read()
    assert rss.peak - baseline < MAX_GROWTH


def test_millions_of_empty_bulk_items_leave_the_loop_free(
    redis_server_url: str, model_path: Path, tmp_path: Path, procs: Processes
) -> None:
    """8 MB of `{},` (2.7 million items) is refused (413) without building the items and
    without blocking the event loop: /health keeps answering, memory stays near the body's."""
    database_url = f"sqlite:///{tmp_path / 'bulk.db'}"
    migrate(database_url)
    env = service_env(
        database_url=database_url,
        broker_url=redis_server_url,
        model_path=model_path,
        data_dir=tmp_path,
    )
    api = procs.api(**env)
    body = b"[" + b",".join([b"{}"] * 2_700_000) + b"]"
    with httpx.Client(base_url=api.base_url, timeout=60) as client:
        client.post("/documents/bulk", json=[{"content": "warm-up"}] * 100)
        baseline = psutil.Process(api.pid).memory_info().rss
        latencies: list[float] = []
        done = threading.Event()

        def poll_health() -> None:
            with httpx.Client(base_url=api.base_url, timeout=60) as poller:
                while not done.is_set():
                    started = time.monotonic()
                    poller.get("/health").raise_for_status()
                    latencies.append(time.monotonic() - started)
                    time.sleep(0.05)

        poller = threading.Thread(target=poll_health, daemon=True)
        with PeakRss(api.pid) as rss:
            poller.start()
            time.sleep(0.2)
            started = time.monotonic()
            response = client.post(
                "/documents/bulk", content=body, headers={"Content-Type": "application/json"}
            )
            took = time.monotonic() - started
            time.sleep(0.2)
            done.set()
            poller.join()
    growth = rss.peak - baseline
    print(
        f"8 MB bulk: {response.status_code} in {took:.2f} s; /health worst "
        f"{max(latencies):.3f} s over {len(latencies)} polls; "
        f"peak RSS growth {growth / MIB:.1f} MiB"
    )
    assert response.status_code == 413, response.text[:500]
    assert max(latencies) < 2
    assert growth < 100 * MIB


# --- per-key rate limit (in-process app: the limiter lives in the API process) ---------------
