"""Server-assigned ids are UUIDv7 (RFC 9562): version 7, the RFC's variant, the time in their
first 48 bits, and strictly increasing within a process, even many in one millisecond, with
the clock set back, or when a millisecond's counter runs out."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest
from docingest_client import ids
from docingest_client.ids import uuid7


def _milliseconds(value: uuid.UUID) -> int:
    return value.int >> 80


def test_ids_are_version_7_with_the_rfc_variant_and_the_time() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= _milliseconds(value) <= after
    assert uuid.UUID(str(value)) == value


def test_ids_increase_strictly_many_in_a_millisecond() -> None:
    made = [uuid7() for _ in range(20_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(a.bytes < b.bytes for a, b in itertools.pairwise(made))  # as stored
    per_ms: dict[int, int] = {}
    for value in made:
        per_ms[_milliseconds(value)] = per_ms.get(_milliseconds(value), 0) + 1
    assert max(per_ms.values()) > 1  # the counter, not the clock, ordered some of them


def test_ids_increase_when_the_clock_goes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    first = uuid7()
    monkeypatch.setattr(time, "time_ns", lambda: (_milliseconds(first) - 60_000) * 1_000_000)
    later = [uuid7() for _ in range(100)]
    assert [first, *later] == sorted([first, *later])
    assert {_milliseconds(value) for value in later} == {_milliseconds(first)}


def test_a_full_counter_moves_on_to_the_next_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    first = uuid7()
    monkeypatch.setattr(time, "time_ns", lambda: _milliseconds(first) * 1_000_000)
    monkeypatch.setattr(ids, "_last_ms", _milliseconds(first))  # both put back after
    monkeypatch.setattr(ids, "_last_counter", (1 << 42) - 1)
    second = uuid7()
    assert second > first
    assert _milliseconds(second) == _milliseconds(first) + 1


def test_ids_made_by_threads_at_once_are_distinct() -> None:
    made: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def make(into: list[uuid.UUID]) -> None:
        into.extend(uuid7() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for into in made for value in into]
    assert len(set(every)) == len(every)
    assert all(into == sorted(into) for into in made)
