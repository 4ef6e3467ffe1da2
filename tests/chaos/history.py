"""What the campaign's clients did and were told, and what the database held at the end.

Plain data, JSON both ways: the checker is a pure function of these, and a failing run's history
is written out so that it can be checked again (or a checker bug reproduced) without servers.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

OpKind = Literal["create", "delete", "label", "unlabel", "status"]

NOTHING_ACCEPTED = "nothing was accepted"  # the API's words for a refusal (api/errors.py)
MAY_OR_MAY_NOT = "may or may not"  # ... and for an unknown outcome
NOT_CONNECTED = ("ConnectError", "ConnectTimeout")  # httpx: the request never left the client


@dataclass(frozen=True)
class Op:
    """One request (or one item of a bulk request) and its answer.

    `start`/`end` are monotonic seconds taken before sending and after the answer (or the
    error); `status` is None when no answer came (a timeout, a refused or reset connection).
    `content` is the document text sent (unique per create: a stored row names its write);
    `version` the version the answer gave (202 of a create, 200 of a label, a status read);
    `state` a status read's answer (queued, stored, failed, deleted; "absent" for a 404).
    """

    client: int
    kind: OpKind
    id: str
    start: float
    end: float
    status: int | None
    version: int | None = None
    content: str | None = None
    label: str | None = None
    state: str | None = None
    detail: str = ""
    bulk: bool = False

    @property
    def answered(self) -> bool:
        return self.status is not None


Outcome = Literal["ok", "refused", "unknown", "read"]


def outcome(op: Op) -> Outcome:
    """Whether the write took effect: "ok" (acknowledged), "refused" (nothing was done: a 4xx,
    a 503 that says "nothing was accepted", or no connection at all), or "unknown" (no answer
    to a request sent, a 5xx that promises nothing either way). Status reads are "read"."""
    if op.kind == "status":
        return "read"
    if op.status is None:
        # No connection was made, so nothing was sent: as sure a refusal as a 4xx.
        return "refused" if op.detail.startswith(NOT_CONNECTED) else "unknown"
    if op.kind == "create":
        ok = op.status == 202
    elif op.kind == "label":
        ok = op.status == 200
    else:  # delete, unlabel
        ok = op.status == 204
    if ok:
        return "ok"
    if 400 <= op.status < 500:
        return "refused"
    if op.status == 503 and NOTHING_ACCEPTED in op.detail:
        return "refused"
    return "unknown"


@dataclass(frozen=True)
class Row:
    """A row of `documents` at the end; `content` is empty for a tombstone."""

    id: str
    version: int
    content: str
    deleted: bool
    label: str | None


@dataclass
class Final:
    """The state after healing and draining: rows read straight from PostgreSQL, each id's
    status as the API answers it, the pending set's size and the failures still listed."""

    rows: list[Row]
    statuses: dict[str, tuple[str, int | None]]  # id -> (state, version); "absent" for a 404
    pending: int
    failures: list[str]  # what GET /failures and /failures/dead-letters list after any replay
    replayed: int = 0  # failures and dead letters listed before the replay


@dataclass
class History:
    """Every operation of every client, appended from several threads."""

    ops: list[Op] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def snapshot(self) -> list[Op]:
        with self._lock:
            return sorted(self.ops, key=lambda op: (op.start, op.client))


def dump(path: Path, ops: list[Op], final: Final | None, extra: dict[str, Any]) -> None:
    document = {
        "ops": [asdict(op) for op in ops],
        "final": None if final is None else asdict(final),
        **extra,
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


def load(path: Path) -> tuple[list[Op], Final | None]:
    document = json.loads(path.read_text())
    ops = [Op(**op) for op in document["ops"]]
    found = document["final"]
    if found is None:
        return ops, None
    final = Final(
        rows=[Row(**row) for row in found["rows"]],
        statuses={k: (v[0], v[1]) for k, v in found["statuses"].items()},
        pending=found["pending"],
        failures=found["failures"],
        replayed=found.get("replayed", 0),
    )
    return ops, final
