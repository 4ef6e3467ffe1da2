"""Feeding files to a running service: `docingest send`.

Reads JSONL, CSV, a folder of `.txt` files or stdin, and posts the documents in bulk requests
with a bounded number in flight. Retries are safe: a document without an id is given one here,
before its first attempt, so a request retried after a lost answer updates the same documents
instead of adding copies. Rejected items, whether refused here (not JSON, no `content`) or by
the API, go to a rejects file as JSONL that `send` reads back once fixed.
"""

from __future__ import annotations

import asyncio
import csv
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

STDIN = "-"
# Retries of a request that got no answer at all (connection refused, reset, timed out).
CONNECTION_ATTEMPTS = 4
# Answers that mean "later": backpressure, broker down, and a proxy whose upstream is away.
RETRIED = frozenset({429, 502, 503, 504})
JSON = {"Content-Type": "application/json"}


class SendError(Exception):
    """The service cannot be reached or refuses the client itself: stop, nothing more to try."""


@dataclass(frozen=True, slots=True)
class Record:
    """One input item: the document to send, or why it cannot be sent."""

    source: str
    line: int | None
    document: dict[str, Any] | None
    raw: str | None = None
    errors: list[dict[str, Any]] | None = None


@dataclass
class Tally:
    accepted: int = 0
    rejected: int = 0
    retries: int = 0

    @property
    def done(self) -> int:
        return self.accepted + self.rejected


@dataclass
class Options:
    batch_size: int = 500
    concurrency: int = 4
    max_wait: float = 300.0
    rejects: Path = Path("rejects.jsonl")
    on_progress: Callable[[Tally], None] = field(default=lambda tally: None)


# --- reading -----------------------------------------------------------------------------------


def read_records(paths: Sequence[str], stdin: IO[bytes]) -> Iterator[Record]:
    """Every record of every path in order; `-` is JSONL from stdin, a folder its `.txt` files."""
    for name in paths:
        if name == STDIN:
            yield from _jsonl("<stdin>", stdin)
            continue
        path = Path(name)
        if path.is_dir():
            yield from _folder(path)
        elif path.suffix.lower() == ".csv":
            yield from _csv(path)
        else:
            with path.open("rb") as lines:
                yield from _jsonl(str(path), lines)


def check_paths(paths: Sequence[str]) -> None:
    """Usage errors found before anything is sent: ValueError naming the first."""
    for name in paths:
        if name == STDIN:
            continue
        path = Path(name)
        if not path.exists():
            raise ValueError(f"{name}: no such file or folder")
        if path.suffix.lower() == ".csv" and not path.is_dir():
            with path.open(newline="", encoding="utf-8-sig") as file:
                header = next(csv.reader(file), [])
            if "content" not in header:
                raise ValueError(f"{name}: the CSV header has no 'content' column")


def _jsonl(source: str, lines: Iterable[bytes]) -> Iterator[Record]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield _parse_line(source, number, line)


def _parse_line(source: str, number: int, line: bytes) -> Record:
    raw = line.decode("utf-8", errors="replace").rstrip("\r\n")
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return Record(source, number, None, raw, [_error("json_invalid", str(error))])
    if (
        isinstance(value, dict)
        and "content" not in value
        and isinstance(value.get("document"), dict)
    ):
        value = value["document"]  # a line of a rejects file, fixed and sent again
    if not isinstance(value, dict):
        return Record(source, number, None, raw, [_error("dict_type", "not a JSON object")])
    return _checked(source, number, value)


def _checked(source: str, number: int | None, document: dict[str, Any]) -> Record:
    content = document.get("content")
    if not isinstance(content, str) or not content.strip():
        message = "content is missing" if content is None else "content must be non-blank text"
        return Record(source, number, document, None, [_error("missing", message, "content")])
    return Record(source, number, document)


def _csv(path: Path) -> Iterator[Record]:
    """Columns `content` and, optionally, `id` (an empty cell means none)."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        for row in reader:
            document = {"content": row.get("content")}
            if row.get("id"):
                document["id"] = row["id"]
            yield _checked(str(path), reader.line_num, document)


def _folder(path: Path) -> Iterator[Record]:
    for file in sorted(path.rglob("*.txt")):
        content = file.read_text(encoding="utf-8", errors="replace")
        yield _checked(str(file), None, {"content": content})


def _error(kind: str, message: str, *loc: str) -> dict[str, Any]:
    return {"type": kind, "loc": list(loc), "msg": message}


def batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- rejects -----------------------------------------------------------------------------------


class Rejects:
    """The rejects file, created only when the first rejected item comes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def write(self, record: Record, errors: list[dict[str, Any]]) -> None:
        if self._file is None:
            self._file = self.path.open("wb")
        entry: dict[str, Any] = {"line": record.line, "source": record.source}
        entry["document"] = record.document
        if record.raw is not None:
            entry["raw"] = record.raw
        self._file.write(orjson.dumps(entry | {"errors": errors}) + b"\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# --- sending -----------------------------------------------------------------------------------


class Sender:
    def __init__(self, client: httpx.AsyncClient, options: Options, rejects: Rejects) -> None:
        self.client = client
        self.options = options
        self.rejects = rejects
        self.tally = Tally()

    async def run(self, records: Iterator[Record]) -> Tally:
        """Read batches in a thread (stdin may block), post them from `concurrency` tasks."""
        queue: asyncio.Queue[list[Record] | None] = asyncio.Queue(self.options.concurrency * 2)
        pending = batches(records, self.options.batch_size)
        senders = [
            asyncio.create_task(self._send_from(queue)) for _ in range(self.options.concurrency)
        ]
        try:
            while batch := await asyncio.to_thread(next, pending, None):
                await _put(queue, batch, senders)
            for _ in senders:
                await _put(queue, None, senders)
            await asyncio.gather(*senders)
        finally:
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
        return self.tally

    async def _send_from(self, queue: asyncio.Queue[list[Record] | None]) -> None:
        while (batch := await queue.get()) is not None:
            await self.send_batch(batch)

    async def send_batch(self, batch: list[Record]) -> None:
        valid: list[tuple[Record, dict[str, Any]]] = []
        for record in batch:
            if record.errors is not None or record.document is None:
                self._reject(record, record.errors or [])
            else:
                valid.append((record, _with_id(record.document)))
        if valid:
            await self._send_valid(valid)
        self.options.on_progress(self.tally)

    async def _send_valid(self, valid: list[tuple[Record, dict[str, Any]]]) -> None:
        response = await self._post([document for _, document in valid])
        if response.status_code == 202:
            for (record, _), item in zip(valid, response.json()["items"], strict=True):
                if item["status"] == 202:
                    self.tally.accepted += 1
                else:
                    self._reject(record, item.get("errors") or [])
            return
        detail = _detail(response)  # 413 or a whole-body 422: the batch as it is cannot go
        for record, _ in valid:
            self._reject(record, [_error(f"http_{response.status_code}", detail)])

    def _reject(self, record: Record, errors: list[dict[str, Any]]) -> None:
        self.rejects.write(record, errors)
        self.tally.rejected += 1

    async def _post(self, documents: list[dict[str, Any]]) -> httpx.Response:
        """Post until answered with something other than "later", or the patience is spent."""
        deadline = time.monotonic() + self.options.max_wait
        body = orjson.dumps(documents)
        failures = 0
        while True:
            try:
                response = await self.client.post("/documents/bulk", content=body, headers=JSON)
            except httpx.TransportError as error:
                failures += 1
                if failures >= CONNECTION_ATTEMPTS:
                    raise SendError(f"cannot reach {self.client.base_url}: {error!r}") from None
                wait = 0.5 * 2 ** (failures - 1)
            else:
                if response.status_code in (202, 413, 422):
                    return response
                if response.status_code not in RETRIED:
                    raise SendError(f"HTTP {response.status_code}: {_detail(response)}")
                wait = retry_after(response)
            if time.monotonic() + wait > deadline:
                raise SendError(
                    f"still refused after waiting {self.options.max_wait:.0f} s "
                    "(--max-wait); the service is overloaded or down"
                )
            self.tally.retries += 1
            await asyncio.sleep(wait)


async def _put(
    queue: asyncio.Queue[list[Record] | None],
    batch: list[Record] | None,
    senders: Sequence[asyncio.Task[None]],
) -> None:
    """Put unless a sender died: then re-raise its error instead of waiting on a full queue."""
    put = asyncio.ensure_future(queue.put(batch))
    await asyncio.wait([put, *senders], return_when=asyncio.FIRST_COMPLETED)
    for task in senders:
        if task.done() and (error := task.exception()) is not None:
            put.cancel()
            raise error
    await put


def _with_id(document: dict[str, Any]) -> dict[str, Any]:
    return document if document.get("id") else {**document, "id": str(uuid.uuid4())}


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """`Retry-After` in seconds (a number or an HTTP date), at least 0.1."""
    value = response.headers.get("retry-after", "")
    try:
        return max(0.1, float(value))
    except ValueError:
        pass
    try:
        return max(0.1, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:200]
    return detail if isinstance(detail, str) else orjson.dumps(detail).decode()


def headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def send(
    paths: Sequence[str], stdin: IO[bytes], *, url: str, api_key: str | None, options: Options
) -> Tally:
    rejects = Rejects(options.rejects)
    limits = httpx.Limits(max_connections=options.concurrency)
    timeout = httpx.Timeout(60.0, connect=10.0)
    try:
        async with httpx.AsyncClient(
            base_url=url, headers=headers(api_key), limits=limits, timeout=timeout
        ) as client:
            tally = await Sender(client, options, rejects).run(read_records(paths, stdin))
    finally:
        rejects.close()
    return tally
