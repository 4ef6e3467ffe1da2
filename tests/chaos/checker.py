"""The campaign's checker: a pure function from (history, final state) to anomalies.

It judges each id on its own. Versions are the API's (a 202 says which); real time orders
writes only when one was answered before the other was sent. A write without an answer (a
timeout, a lost connection) may take effect at any moment after it was sent, or never; one
answered with a 5xx that promises nothing may take effect, but no later than its answer (the
API reserved its version before answering). A tombstone cannot be traced to a delete (it has
no content), so what is checked of deletes is their order against acknowledged creates.

Kinds of anomaly:
- lost-202: an id had a 202 and no row at all;
- stale-final-state: the row is older than a 202 (its version below the newest accepted), a
  tombstone although a create was acknowledged after every delete had been answered, or a
  create answered with an unknown outcome (a 503 "may or may not") although a create sent
  after that answer was acknowledged (an answered request must not take effect later);
- resurrected-delete: the row is a create's although a delete was acknowledged (204) after
  that create's 202;
- version-order: a create sent after another's 202 was given a version no higher;
- false-503 / refused-stored: the row holds a create answered 503 "nothing was accepted",
  or refused with a 4xx; phantom-row: content no client sent; phantom-delete: a tombstone
  for an id no delete was sent for;
- version-mismatch: the row holds a create's content under another version than its 202's;
- duplicate-row: more than one row for an id;
- wrong-label: a label no one set, or not the label the last, unambiguous label write left;
- status-behind: a status read answered a version older than a 202 received before it was
  sent (or 404); status-ahead: it said stored/deleted a version the database never ends with;
- status-final: at the end the status is not the row's (or says queued);
- pending-not-empty: the pending set holds entries after the queue drained;
- failure-unreplayed: failures or dead letters still listed after a replay; failure-unlisted:
  status says failed for an id GET /failures does not list.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from tests.chaos.history import Final, Op, Row, outcome

KINDS = (
    "lost-202",
    "stale-final-state",
    "resurrected-delete",
    "version-order",
    "false-503",
    "refused-stored",
    "phantom-row",
    "phantom-delete",
    "version-mismatch",
    "duplicate-row",
    "wrong-label",
    "status-behind",
    "status-ahead",
    "status-final",
    "pending-not-empty",
    "failure-unreplayed",
    "failure-unlisted",
)


@dataclass(frozen=True)
class Anomaly:
    kind: str
    id: str
    detail: str


def _latest_effect(op: Op) -> float:
    """The last moment the write can take effect: its answer, or never bounded without one."""
    return op.end if op.answered else math.inf


def check(ops: Iterable[Op], final: Final) -> list[Anomaly]:
    """Every anomaly of the history against the final state (an empty list: none found)."""
    by_id: dict[str, list[Op]] = defaultdict(list)
    for op in sorted(ops, key=lambda o: (o.start, o.client)):
        by_id[op.id].append(op)
    rows: dict[str, list[Row]] = defaultdict(list)
    for stored in final.rows:
        rows[stored.id].append(stored)
    found: list[Anomaly] = []
    for document_id in sorted(by_id.keys() | rows.keys()):
        id_rows = rows.get(document_id, [])
        if len(id_rows) > 1:
            found.append(Anomaly("duplicate-row", document_id, f"{len(id_rows)} rows"))
        row = max(id_rows, key=lambda r: r.version) if id_rows else None
        id_ops = by_id.get(document_id, [])
        found += _check_writes(document_id, id_ops, row)
        found += _check_label(document_id, id_ops, row)
        found += _check_statuses(document_id, id_ops, row, final)
    if final.pending:
        found.append(Anomaly("pending-not-empty", "-", f"{final.pending} entries pending"))
    for document_id in final.failures:
        found.append(Anomaly("failure-unreplayed", document_id, "still listed after a replay"))
    return found


def _check_writes(document_id: str, ops: list[Op], row: Row | None) -> list[Anomaly]:
    found: list[Anomaly] = []
    creates = [op for op in ops if op.kind == "create"]
    accepted = [op for op in creates if outcome(op) == "ok" and op.version is not None]
    deletes = [op for op in ops if op.kind == "delete"]
    newest = max(accepted, key=lambda op: op.version or 0, default=None)
    for earlier in accepted:
        for later in accepted:
            if earlier.end < later.start and (earlier.version or 0) >= (later.version or 0):
                found.append(Anomaly(
                    "version-order", document_id,
                    f"client {later.client} sent at {later.start:.3f}, after a 202 "
                    f"v{earlier.version} answered at {earlier.end:.3f}, got v{later.version}",
                ))  # fmt: skip
    if row is None:
        if newest is not None:
            found.append(Anomaly(
                "lost-202", document_id,
                f"{len(accepted)} creates answered 202 (newest v{newest.version} at "
                f"{newest.end:.3f}), no row",
            ))  # fmt: skip
        return found
    if newest is not None and row.version < (newest.version or 0):
        what = "a tombstone" if row.deleted else "a row"
        found.append(Anomaly(
            "stale-final-state", document_id,
            f"{what} at v{row.version}, below the 202 v{newest.version} answered at "
            f"{newest.end:.3f}",
        ))  # fmt: skip
    if row.deleted:
        possible = [op for op in deletes if outcome(op) in ("ok", "unknown")]
        if not possible:
            found.append(Anomaly("phantom-delete", document_id, f"tombstone v{row.version}"))
            return found
        last_effect = max(_latest_effect(op) for op in possible)
        after = [op for op in accepted if op.start > last_effect]
        if after and row.version >= max(op.version or 0 for op in after):
            found.append(Anomaly(
                "stale-final-state", document_id,
                f"tombstone v{row.version}, though a 202 v{after[-1].version} was sent at "
                f"{after[-1].start:.3f}, after every delete was answered (last {last_effect:.3f})",
            ))  # fmt: skip
        return found
    writers = [op for op in creates if op.content == row.content]
    if not writers:
        found.append(Anomaly("phantom-row", document_id, f"v{row.version}: {row.content[:60]!r}"))
        return found
    writer = writers[0]
    kind = outcome(writer)
    if kind == "refused":
        refusal = "false-503" if writer.status == 503 else "refused-stored"
        found.append(Anomaly(
            refusal, document_id,
            f"row v{row.version} holds the create client {writer.client} sent at "
            f"{writer.start:.3f}, answered {writer.status} {writer.detail[:80]!r}",
        ))  # fmt: skip
    late = [
        op for op in accepted if writer.answered and kind == "unknown" and op.start > writer.end
    ]
    if late:
        found.append(Anomaly(
            "stale-final-state", document_id,
            f"row v{row.version} holds a create answered {writer.status} at {writer.end:.3f}, "
            f"though a 202 v{late[-1].version} was sent after it, at {late[-1].start:.3f}",
        ))  # fmt: skip
    if kind == "ok" and writer.version != row.version:
        found.append(Anomaly(
            "version-mismatch", document_id,
            f"row v{row.version} holds the create answered 202 v{writer.version}",
        ))  # fmt: skip
    if kind == "ok":
        for delete in deletes:
            if outcome(delete) == "ok" and delete.start > writer.end:
                found.append(Anomaly(
                    "resurrected-delete", document_id,
                    f"row v{row.version} is the create answered 202 at {writer.end:.3f}; "
                    f"client {delete.client}'s delete sent at {delete.start:.3f} got 204",
                ))  # fmt: skip
                break
    return found


def _check_label(document_id: str, ops: list[Op], row: Row | None) -> list[Anomaly]:
    labels = [op for op in ops if op.kind in ("label", "unlabel")]
    if row is None:
        return []
    if row.label is not None and not any(
        op.kind == "label" and op.label == row.label and outcome(op) != "refused" for op in labels
    ):
        return [Anomaly("wrong-label", document_id, f"label {row.label!r} no one set")]
    if not labels or row.deleted:
        return []
    last = labels[-1]
    unambiguous = outcome(last) == "ok" and all(
        op.answered and op.end < last.start for op in labels[:-1]
    )
    if not unambiguous:
        return []
    if last.kind == "unlabel" and row.label is not None:
        return [Anomaly(
            "wrong-label", document_id,
            f"label {row.label!r} after the last write, an unlabel answered 204 at {last.end:.3f}",
        )]  # fmt: skip
    if last.kind == "label" and last.version == row.version and row.label != last.label:
        return [Anomaly(
            "wrong-label", document_id,
            f"label {row.label!r}, though the last write set {last.label!r} on v{row.version}",
        )]  # fmt: skip
    return []


def _check_statuses(
    document_id: str, ops: list[Op], row: Row | None, final: Final
) -> list[Anomaly]:
    found: list[Anomaly] = []
    accepted = [op for op in ops if op.kind == "create" and outcome(op) == "ok"]
    for read in (op for op in ops if op.kind == "status" and op.status in (200, 404)):
        before = [op.version or 0 for op in accepted if op.end < read.start]
        told = read.version if read.status == 200 and read.version is not None else 0
        if before and told < max(before):
            found.append(Anomaly(
                "status-behind", document_id,
                f"status read sent at {read.start:.3f} answered {read.state} v{read.version}, "
                f"after a 202 v{max(before)}",
            ))  # fmt: skip
        if read.state in ("stored", "deleted") and (row is None or row.version < told):
            found.append(Anomaly(
                "status-ahead", document_id,
                f"status read at {read.end:.3f} said {read.state} v{told}; the row ends at "
                f"{'none' if row is None else f'v{row.version}'}",
            ))  # fmt: skip
    if document_id not in final.statuses:
        return found
    state, version = final.statuses[document_id]
    if state == "failed" and document_id not in final.failures and not final.replayed:
        found.append(Anomaly("failure-unlisted", document_id, f"status failed v{version}"))
    if row is None:
        expected: tuple[str, int | None] = ("absent", None)
    else:
        expected = ("deleted" if row.deleted else "stored", row.version)
    if (state, version) != expected and not (state == "failed" and row is None):
        found.append(Anomaly(
            "status-final", document_id, f"status {state} v{version}, database {expected}"
        ))  # fmt: skip
    return found


def counts(anomalies: Iterable[Anomaly]) -> dict[str, int]:
    """Anomalies per kind, every kind listed (zero included), in KINDS order."""
    tally = dict.fromkeys(KINDS, 0)
    for anomaly in anomalies:
        tally[anomaly.kind] = tally.get(anomaly.kind, 0) + 1
    return tally
