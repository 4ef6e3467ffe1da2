"""Feeding files to a running service: `docingest send`.

Reads JSONL, CSV, a folder of `.txt` files or stdin, and posts the documents in bulk requests
with a bounded number in flight, through the Python client (`docingest_client`, which waits
out 429/503 answers). Retries and resends are safe: a document without an id is
given one derived from where it was read and what it holds, so a request retried after a lost
answer, or a whole run repeated after a crash, updates the same documents instead of adding
copies. Rejected items, whether refused here (not UTF-8, not JSON, no `content`, too large) or
by the API, go to a rejects file as JSONL that `send` reads back once fixed.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import os
import stat
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
from docingest_client import ApiError, AsyncClient, UnavailableError, batches

from docingest.client.textfiles import Lines, UnreadableTextError, decode
from docingest.schemas import DEFAULT_MAX_DOCUMENT_CHARS

STDIN = "-"
# The service refuses documents over MAX_DOCUMENT_CHARS; a character takes at most 4 bytes in
# UTF-8, so the default cap never cuts off a document the default service would accept.
MAX_FILE_BYTES = 4 * DEFAULT_MAX_DOCUMENT_CHARS
# The namespace of the ids derived here: changing it would make every resend a duplicate.
ID_NAMESPACE = uuid.UUID("5c875f7a-ded6-4f93-a40f-b4e1410e0096")
SKIPPED_SYMLINK = "symlink (--follow-symlinks reads them)"
SKIPPED_SPECIAL = "not a regular file"
SKIPPED_LOOP = "folder already read (symlink loop)"
SKIPPED_UNLISTABLE = "folder that cannot be listed"


class SendError(Exception):
    """The service cannot be reached or refuses the client itself: stop, nothing more to try."""


@dataclass(frozen=True, slots=True)
class Record:
    """One input item: the document to send, why it cannot be sent, or why it was not read."""

    source: str
    line: int | None
    document: dict[str, Any] | None
    raw: str | None = None
    errors: list[dict[str, Any]] | None = None
    skipped: str | None = None


@dataclass
class Tally:
    accepted: int = 0
    rejected: int = 0
    retries: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

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
    max_file_bytes: int = MAX_FILE_BYTES
    follow_symlinks: bool = False


# --- reading -----------------------------------------------------------------------------------


def read_records(paths: Sequence[str], stdin: IO[bytes], options: Options) -> Iterator[Record]:
    """Every record of every path in order; `-` is JSONL from stdin, a folder its `.txt` files.

    A path the user named is read whatever it is (a pipe from `<(...)` too); only what a folder
    holds is checked, since the user did not choose each of its entries.
    """
    limit = options.max_file_bytes
    for name in paths:
        if name == STDIN:
            yield from _jsonl("<stdin>", STDIN, stdin, limit)
            continue
        path = Path(name)
        if path.is_dir():
            yield from _folder(path, options)
        elif path.suffix.lower() == ".csv":
            yield from _csv(path, limit)
        else:
            with path.open("rb") as lines:
                yield from _jsonl(str(path), str(path.resolve()), lines, limit)


def check_paths(paths: Sequence[str]) -> None:
    """Usage errors found before anything is sent: ValueError naming the first."""
    for name in paths:
        if name == STDIN:
            continue
        path = Path(name)
        if not path.exists():
            raise ValueError(f"{name}: no such file or folder")
        if path.suffix.lower() == ".csv" and not path.is_dir():
            with path.open("rb") as file:
                try:
                    header = next(csv.reader(Lines(file, MAX_FILE_BYTES)), [])
                except (csv.Error, UnreadableTextError) as error:
                    raise ValueError(f"{name}:1: the CSV header cannot be read: {error}") from None
            if "content" not in header:
                raise ValueError(f"{name}: the CSV header has no 'content' column")


def stable_id(origin: str, line: int | None, content: str) -> str:
    """The same input at the same place gets the same id on every run: a resend updates."""
    digest = hashlib.sha256(content.encode()).hexdigest()
    place = "" if line is None else str(line)
    return str(uuid.uuid5(ID_NAMESPACE, f"{origin}\0{place}\0{digest}"))


def _jsonl(source: str, origin: str, file: IO[bytes], max_bytes: int) -> Iterator[Record]:
    lines = Lines(file, max_bytes)
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except UnreadableTextError as error:
            yield _unreadable(source, lines.number, error)
            continue
        if line.strip():
            yield _parse_line(source, origin, lines.number, line)


def _parse_line(source: str, origin: str, number: int, line: str) -> Record:
    raw = line.rstrip("\r\n")
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
    return _checked(source, origin, number, value)


def _checked(source: str, origin: str, number: int | None, document: dict[str, Any]) -> Record:
    content = document.get("content")
    if not isinstance(content, str) or not content.strip():
        message = "content is missing" if content is None else "content must be non-blank text"
        return Record(source, number, document, None, [_error("missing", message, "content")])
    if not document.get("id"):
        document = {**document, "id": stable_id(origin, number, content)}
    return Record(source, number, document)


def _unreadable(source: str, number: int | None, error: Exception) -> Record:
    if isinstance(error, UnreadableTextError):
        return Record(source, number, None, None, [_error(error.kind, str(error))])
    return Record(source, number, None, None, [_error("csv_invalid", f"unreadable CSV: {error}")])


def _csv(path: Path, max_bytes: int) -> Iterator[Record]:
    """Columns `content` and, optionally, `id` (an empty cell means none).

    A record's line is the one it starts on. A record that cannot be read becomes a reject with
    that line, and reading goes on after it.
    """
    source, origin = str(path), str(path.resolve())
    with path.open("rb") as file, _csv_field_limit(max_bytes):
        lines = Lines(file, max_bytes)
        reader = csv.DictReader(lines)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnreadableTextError) as error:
                number = lines.record_line
                lines.skip_record()
                yield _unreadable(source, number, error)
                continue
            document = {"content": row.get("content")}
            if row.get("id"):
                document["id"] = row["id"]
            yield _checked(source, origin, lines.record_line, document)


@contextmanager
def _csv_field_limit(chars: int) -> Iterator[None]:
    """The csv module's own limit (131,072 characters) would refuse documents the API takes."""
    previous = csv.field_size_limit(chars)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _folder(root: Path, options: Options) -> Iterator[Record]:
    for path, skipped in _txt_files(root, options.follow_symlinks, {_identity(root.stat())}):
        if skipped is None:
            yield _read_txt(path, options)
        else:
            yield Record(str(path), None, None, skipped=skipped)


def _txt_files(
    folder: Path, follow: bool, seen: set[tuple[int, int]]
) -> Iterator[tuple[Path, str | None]]:
    """The `.txt` paths under `folder`, sorted, each with the reason it is skipped, if any.

    A symlink may point anywhere (`leak.txt -> ../other/secret.txt`) and the user named the
    folder, not its targets: links are skipped unless followed. Followed folders are remembered
    by device and inode, so that a link to an ancestor ends instead of looping.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        yield folder, SKIPPED_UNLISTABLE
        return
    for entry in entries:
        path = Path(entry.path)
        is_txt = entry.name.endswith(".txt")
        if entry.is_symlink() and not follow:
            if is_txt or entry.is_dir():
                yield path, SKIPPED_SYMLINK
        elif entry.is_dir():
            identity = _identity(entry.stat())
            if identity in seen:
                yield path, SKIPPED_LOOP
            else:
                seen.add(identity)
                yield from _txt_files(path, follow, seen)
        elif is_txt:
            yield path, None if entry.is_file() else SKIPPED_SPECIAL


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _read_txt(path: Path, options: Options) -> Record:
    """One file, one document; never more than the cap is read, never a FIFO or a device.

    Opened without following a link and without blocking, then checked on the open file, so a
    file swapped for a link or a FIFO after the folder was listed is not read either.
    """
    source, limit = str(path), options.max_file_bytes
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if options.follow_symlinks else os.O_NOFOLLOW)
    try:
        with open(os.open(path, flags), "rb") as file:
            status = os.fstat(file.fileno())
            if not stat.S_ISREG(status.st_mode):
                return Record(source, None, None, skipped=SKIPPED_SPECIAL)
            raw = file.read(limit + 1)
    except OSError as error:
        return Record(source, None, None, None, [_error("unreadable", str(error))])
    if len(raw) > limit:
        message = f"file larger than {limit:,} bytes (--max-file-bytes)"
        return Record(source, None, None, None, [_error("too_long", message)])
    try:
        content = decode(raw)
    except UnreadableTextError as error:
        return _unreadable(source, None, error)
    return _checked(source, str(path.resolve()), None, {"content": content})


def _error(kind: str, message: str, *loc: str) -> dict[str, Any]:
    return {"type": kind, "loc": list(loc), "msg": message}


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
    def __init__(self, client: AsyncClient, options: Options, rejects: Rejects) -> None:
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
            if record.skipped is not None:
                self.tally.skipped[record.skipped] += 1
            elif record.errors is not None or record.document is None:
                self._reject(record, record.errors or [])
            else:
                valid.append((record, record.document))
        if valid:
            await self._send_valid(valid)
        self.tally.retries = self.client.retries
        self.options.on_progress(self.tally)

    async def _send_valid(self, valid: list[tuple[Record, dict[str, Any]]]) -> None:
        try:
            answer = await self.client.add_batch([document for _, document in valid])
        except UnavailableError as error:
            raise SendError(str(error)) from None
        except ApiError as error:
            if error.status not in (413, 422):
                raise SendError(str(error)) from None
            for record, _ in valid:  # the batch as it is cannot go (too large, not JSON)
                self._reject(record, [_error(f"http_{error.status}", error.detail)])
            return
        for (record, _), item in zip(valid, answer.items, strict=True):
            if item.status == 202:
                self.tally.accepted += 1
            else:
                self._reject(record, item.errors or [])

    def _reject(self, record: Record, errors: list[dict[str, Any]]) -> None:
        self.rejects.write(record, errors)
        self.tally.rejected += 1


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


async def send(paths: Sequence[str], stdin: IO[bytes], *, url: str, options: Options) -> Tally:
    """Every record of `paths` to the API at `url`, with the key in DOCINGEST_API_KEY."""
    rejects = Rejects(options.rejects)
    limits = httpx.Limits(max_connections=options.concurrency)
    try:
        async with AsyncClient(url, max_wait=options.max_wait, limits=limits) as client:
            tally = await Sender(client, options, rejects).run(read_records(paths, stdin, options))
    finally:
        rejects.close()
    return tally
