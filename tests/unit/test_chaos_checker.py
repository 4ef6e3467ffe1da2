"""The fault campaign's checker (tests/chaos/checker.py) on doctored histories: each defect it
exists to find is planted in an otherwise clean history, so that it cannot pass by checking
nothing."""

from __future__ import annotations

from tests.chaos.checker import KINDS, Anomaly, check, counts
from tests.chaos.history import Final, Op, Row
from tests.chaos.schedule import FAULT_KINDS, REDIS_FAILOVER, Roles, make_schedule

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"


def create(start: float, version: int | None, content: str, status: int | None = 202,
           detail: str = "", client: int = 1) -> Op:  # fmt: skip
    return Op(client, "create", A, start, start + 0.1, status, version, content, detail=detail)


def delete(start: float, status: int | None = 204) -> Op:
    return Op(2, "delete", A, start, start + 0.1, status)


def status(start: float, state: str, version: int | None) -> Op:
    return Op(3, "status", A, start, start + 0.1, 200 if state != "absent" else 404, version,
              state=state)  # fmt: skip


def final(*rows: Row, statuses: dict[str, tuple[str, int | None]] | None = None) -> Final:
    return Final(list(rows), statuses or {}, pending=0, failures=[])


def live(version: int, content: str, label: str | None = None, document_id: str = A) -> Row:
    return Row(document_id, version, content, False, label)


def tombstone(version: int) -> Row:
    return Row(A, version, "", True, None)


def kinds(anomalies: list[Anomaly]) -> set[str]:
    return {anomaly.kind for anomaly in anomalies}


CLEAN = [create(1, 1, "a"), create(2, 3, "b"), delete(3), create(4, 7, "c"), status(5, "queued", 7)]


def test_a_clean_history_has_no_anomaly() -> None:
    assert check(CLEAN, final(live(7, "c"), statuses={A: ("stored", 7)})) == []


def test_a_lost_202() -> None:
    assert kinds(check([create(1, 1, "a")], final())) == {"lost-202"}


def test_a_resurrected_delete() -> None:
    ops = [create(1, 1, "a"), delete(2)]
    assert kinds(check(ops, final(live(1, "a")))) == {"resurrected-delete"}


def test_a_delete_racing_a_create_may_lose() -> None:
    """The delete was sent before the create's 202 came back: either order is fine."""
    ops = [create(1, 1, "a"), delete(1.05)]
    assert check(ops, final(live(1, "a"))) == []
    assert check(ops, final(tombstone(2))) == []


def test_a_stale_final_state() -> None:
    ops = [create(1, 1, "a"), create(2, 3, "b")]
    assert kinds(check(ops, final(live(1, "a")))) == {"stale-final-state"}
    # an older row where a delete then a create followed: stale, and the delete is undone too
    assert "stale-final-state" in kinds(check(CLEAN, final(live(3, "b"))))


def test_a_tombstone_after_a_later_create_is_stale() -> None:
    ops = [create(1, 1, "a"), delete(2), create(3, 2, "b")]
    assert "stale-final-state" in kinds(check(ops, final(tombstone(3))))


def test_a_false_503() -> None:
    refused = create(1, None, "a", 503, "The queue is unavailable; nothing was accepted.")
    assert kinds(check([refused], final(live(1, "a")))) == {"false-503"}


def test_a_503_that_may_or_may_not_have_accepted_is_either() -> None:
    uncertain = create(1, None, "a", 503, "these documents may or may not have been accepted")
    assert check([uncertain], final(live(1, "a"))) == []
    assert check([uncertain], final()) == []


def test_an_uncertain_write_must_not_win_over_a_later_202() -> None:
    """Answered 503 "may or may not": it may take effect, but not after its answer."""
    uncertain = create(1, None, "a", 503, "these documents may or may not have been accepted")
    ops = [uncertain, create(2, 4, "b")]
    assert check(ops, final(live(4, "b"))) == []
    assert kinds(check(ops, final(live(5, "a")))) == {"stale-final-state"}


def test_a_write_without_an_answer_is_either() -> None:
    lost_answer = create(1, None, "a", None, "ReadError: connection reset")
    assert check([lost_answer], final(live(1, "a"))) == []
    assert check([lost_answer], final()) == []


def test_a_4xx_that_stored_something() -> None:
    refused = create(1, None, "a", 422)
    assert kinds(check([refused], final(live(1, "a")))) == {"refused-stored"}


def test_a_request_that_never_connected_stored_nothing() -> None:
    never_sent = create(1, None, "a", None, "ConnectError: [Errno 111] Connection refused")
    assert kinds(check([never_sent], final(live(1, "a")))) == {"refused-stored"}
    read_timeout = create(1, None, "a", None, "ReadTimeout: timed out")
    assert check([read_timeout], final(live(1, "a"))) == []


def test_a_duplicate_row() -> None:
    assert "duplicate-row" in kinds(check([create(1, 1, "a")], final(live(1, "a"), live(1, "a"))))


def test_a_phantom_row_and_a_phantom_delete() -> None:
    assert kinds(check([], final(live(1, "never sent")))) == {"phantom-row"}
    assert kinds(check([], final(tombstone(1)))) == {"phantom-delete"}


def test_versions_going_back_in_real_time() -> None:
    ops = [create(1, 5, "a"), create(2, 4, "b")]
    assert "version-order" in kinds(check(ops, final(live(5, "a"))))


def test_a_version_mismatch() -> None:
    assert kinds(check([create(1, 2, "a")], final(live(3, "a")))) == {"version-mismatch"}


def test_labels() -> None:
    labelled = Op(4, "label", A, 2, 2.1, 200, 1, label="sport")
    unlabelled = Op(4, "unlabel", A, 3, 3.1, 204)
    assert check([create(1, 1, "a"), labelled], final(live(1, "a", "sport"))) == []
    assert kinds(check([create(1, 1, "a"), labelled], final(live(1, "a")))) == {"wrong-label"}
    ops = [create(1, 1, "a"), labelled, unlabelled]
    assert kinds(check(ops, final(live(1, "a", "sport")))) == {"wrong-label"}
    assert kinds(check([create(1, 1, "a")], final(live(1, "a", "tech")))) == {"wrong-label"}


def test_status_reads() -> None:
    behind = [create(1, 3, "a"), status(2, "queued", 2)]
    assert kinds(check(behind, final(live(3, "a")))) == {"status-behind"}
    ahead = [create(1, 3, "a"), status(2, "stored", 4)]
    assert kinds(check(ahead, final(live(3, "a")))) == {"status-ahead"}
    wrong_end = final(live(3, "a"), statuses={A: ("queued", 3)})
    assert kinds(check([create(1, 3, "a")], wrong_end)) == {"status-final"}


def test_the_pending_set_and_failures() -> None:
    leftover = Final([live(1, "a")], {}, pending=2, failures=[A])
    assert kinds(check([create(1, 1, "a")], leftover)) == {
        "pending-not-empty",
        "failure-unreplayed",
    }


def test_ids_are_judged_apart() -> None:
    other = Op(1, "create", B, 1, 1.1, 202, 9, "z")
    assert kinds(check([create(1, 1, "a"), other], final(live(1, "a")))) == {"lost-202"}


def test_counts_lists_every_kind() -> None:
    tally = counts([Anomaly("lost-202", A, ""), Anomaly("lost-202", B, "")])
    assert list(tally) == list(KINDS)
    assert tally["lost-202"] == 2
    assert sum(tally.values()) == 2


def test_the_same_seed_replays_the_same_schedule() -> None:
    roles = Roles(("api1", "api2"), ("worker1", "worker2"), ("rabbit1", "rabbit2", "rabbit3"), "pg")
    schedule = make_schedule(7, 600, roles)
    assert schedule == make_schedule(7, 600, roles)
    assert schedule != make_schedule(8, 600, roles)
    assert {fault.kind for fault in schedule} == set(FAULT_KINDS)
    assert all(fault.start + fault.duration <= 600 for fault in schedule)


def test_a_replicated_redis_gets_failovers_on_its_broker_hosts() -> None:
    kinds = (*FAULT_KINDS, REDIS_FAILOVER)
    roles = Roles(("api1", "api2"), ("worker1", "worker2"), ("broker", "replica"), "pg", kinds)
    schedule = make_schedule(7, 600, roles)
    failovers = [fault for fault in schedule if fault.kind == REDIS_FAILOVER]
    assert failovers
    assert {fault.target for fault in failovers} <= {"broker", "replica"}
    assert {fault.kind for fault in schedule} == set(kinds)
