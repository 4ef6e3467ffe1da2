"""The documents a benchmark phase sends, and the request bodies that carry them."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from docingest_client.ids import uuid7

WORKLOADS = {"bbc": "BBC News articles (~2.3 KB)", "short": "200-character texts"}
SHORT_CHARS = 200


@dataclass(frozen=True, slots=True)
class Doc:
    id: str
    content: str

    def md5(self) -> str:
        """What PostgreSQL's md5(content) must give for the stored row."""
        return hashlib.md5(self.content.encode(), usedforsecurity=False).hexdigest()


def make_documents(
    texts: Sequence[str], workload: str, count: int, *, server_ids: bool = False
) -> list[Doc]:
    """Fresh client-set ids on every call, so no phase can be satisfied by another's rows.

    `server_ids`: every second id is made as the API makes the id of a document posted without
    one (a UUIDv7, `docingest_client.ids`), the others random; each is still sent, so that the
    phase's check knows every id.
    """
    if workload == "bbc":
        contents = [texts[index % len(texts)] for index in range(count)]
    elif workload == "short":
        contents = _short_texts(texts, count)
    else:
        raise ValueError(f"unknown workload {workload!r}")
    if server_ids:
        return [
            Doc(str(uuid7() if n % 2 else uuid.uuid4()), content)
            for n, content in enumerate(contents)
        ]
    return [Doc(str(uuid.uuid4()), content) for content in contents]


def _short_texts(texts: Sequence[str], count: int) -> list[str]:
    """Consecutive windows of the whole corpus: 25,000 distinct ones before any repeats."""
    corpus = " ".join(text.strip() for text in texts)
    windows = len(corpus) // SHORT_CHARS
    return [
        corpus[(index % windows) * SHORT_CHARS : (index % windows + 1) * SHORT_CHARS]
        for index in range(count)
    ]


def write_bodies(docs: Sequence[Doc], prefix: Path, *, threads: int, per_request: int) -> int:
    """One JSON body a line in files `<prefix>1..<prefix>T`, one per generator thread.

    `per_request` 1 gives the single-document body, more gives a JSON array (the bulk body).
    Returns the number of requests.
    """
    bodies = [
        _encode(docs[start : start + per_request], bulk=per_request > 1)
        for start in range(0, len(docs), per_request)
    ]
    share = -(-len(bodies) // threads)
    for thread in range(threads):
        lines = bodies[thread * share : (thread + 1) * share]
        Path(f"{prefix}{thread + 1}").write_bytes(b"".join(line + b"\n" for line in lines))
    return len(bodies)


def _encode(docs: Sequence[Doc], *, bulk: bool) -> bytes:
    items = [{"id": doc.id, "content": doc.content} for doc in docs]
    return orjson.dumps(items if bulk else items[0])
