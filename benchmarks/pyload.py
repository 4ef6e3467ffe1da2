"""Python load generator, used when wrk cannot be had: the inputs and result file of bench.lua.

python benchmarks/pyload.py URL BODIES_PREFIX PATH CONTENT_TYPE OUT_DIR --connections C

Sends every line of `<BODIES_PREFIX>1`, `<BODIES_PREFIX>2`, ... once over C keep-alive HTTP/1.1
connections (closed loop, like wrk). Latency percentiles are of the raw samples: unlike wrk,
no coordinated-omission correction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson


@dataclass
class Tally:
    sent: int = 0
    responses: int = 0
    first_send: float = 0.0
    last_response: float = 0.0
    latencies: list[float] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    read_errors: int = 0

    def record(self, status: int, body: bytes) -> None:
        self.responses += 1
        self.last_response = time.monotonic()
        if status != 202:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            return
        answer = orjson.loads(body)
        items = answer.get("items", [answer])
        for item in items:
            if item.get("id") and item.get("status", 202) in (202, "queued"):
                version = item.get("version")
                self.accepted.append(f"{item['id']} {'-' if version is None else version}")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def connection(
    host: str, port: int, heads: Iterator[tuple[bytes, bytes]], tally: Tally
) -> None:
    """Closed loop: send the next body, wait for its answer, repeat until none is left."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for head, body in heads:
            start = time.monotonic()
            if tally.sent == 0:
                tally.first_send = start
            tally.sent += 1
            writer.write(head + body)
            await writer.drain()
            try:
                status, answer = await read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                tally.read_errors += 1
                return
            tally.latencies.append(time.monotonic() - start)
            tally.record(status, answer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def requests(bodies: list[bytes], host: str, path: str, content_type: str) -> list[bytes]:
    template = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        "Content-Length: {length}\r\n\r\n"
    )
    return [template.format(length=len(body)).encode() for body in bodies]


def read_bodies(prefix: str) -> list[bytes]:
    bodies: list[bytes] = []
    thread = 1
    while (path := Path(f"{prefix}{thread}")).exists():
        bodies.extend(path.read_bytes().splitlines())
        thread += 1
    return bodies


def percentile(values: list[float], fraction: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=1000, method="inclusive")[round(fraction * 1000) - 1]


def write_result(out_dir: Path, tally: Tally, total: int, init_cpu: float) -> None:
    stats = {
        "first_send": tally.first_send,
        "last_response": tally.last_response,
        "init_cpu": init_cpu,
        "total": total,
        "sent": tally.sent,
        "responses": tally.responses,
        "extra": 0,
        "finished": float(tally.responses == total),
        "p50_us": percentile(tally.latencies, 0.5) * 1e6,
        "p99_us": percentile(tally.latencies, 0.99) * 1e6,
        "max_us": max(tally.latencies, default=0.0) * 1e6,
        "error_read": tally.read_errors,
    }
    lines = [f"{name} {value:.9f}" for name, value in stats.items()]
    lines += [f"status {status} {count}" for status, count in tally.statuses.items()]
    lines += [f"ok {item}" for item in tally.accepted]
    (out_dir / "result.txt").write_text("\n".join(lines) + "\n")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("url", "bodies_prefix", "path", "content_type", "out_dir"):
        parser.add_argument(name)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    url = urlsplit(args.url)
    bodies = read_bodies(args.bodies_prefix)
    heads = iter(
        zip(requests(bodies, url.netloc, args.path, args.content_type), bodies, strict=True)
    )
    init_cpu = time.process_time()
    tally = Tally()
    host, port = url.hostname or "127.0.0.1", url.port or 80
    tasks = [connection(host, port, heads, tally) for _ in range(args.connections)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks), args.timeout)
    write_result(Path(args.out_dir), tally, len(bodies), init_cpu)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
