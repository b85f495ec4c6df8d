"""sim/checker.py: the verdicts on safety and liveness, fed by hand. It must catch two honest
replicas executing different batches (or reporting different state digests) at one sequence
number, a request executed twice or never submitted, and unsettled requests; and it must not
blame the run for what Byzantine replicas announce."""

from __future__ import annotations

from sim.checker import Checker

HONEST = {"r0", "r1", "r2"}


def checker(*submitted: str) -> Checker:
    c = Checker(honest=set(HONEST))
    c.submitted.update(submitted)
    return c


def test_honest_replicas_agreeing_is_safe() -> None:
    c = checker("a", "b")
    for node in sorted(HONEST):
        c.on_execute(node, 1, "d1", ["a"])
        c.on_execute(node, 2, "d2", ["b"])
        c.on_checkpoint(node, 2, "s2")
    v = c.verdicts(settled=2, submitted=2, extra={})
    assert (v.safety_ok, v.violations, v.liveness_ok) == (True, [], True)
    assert c.checked_seqs() == 2


def test_two_digests_at_one_seq_among_honest_replicas_is_a_fork() -> None:
    c = checker("a", "b")
    c.on_execute("r0", 1, "d1", ["a"])
    c.on_execute("r1", 1, "d1", ["a"])
    c.on_execute("r2", 1, "other", ["b"])
    v = c.verdicts(2, 2, {})
    assert v.safety_ok is False
    assert v.violations == [{"kind": "agreement: different batch at one seq", "seq": 1,
                             "digests": {"r0": "d1", "r1": "d1", "r2": "other"}}]


def test_a_byzantine_replica_executing_something_else_is_ignored() -> None:
    c = checker("a")
    c.on_execute("r0", 1, "d1", ["a"])
    c.on_execute("r1", 1, "d1", ["a"])
    c.on_execute("r3", 1, "forged", ["a"])  # r3 is not honest
    c.on_execute("r3", 1, "again", ["a"])   # nor its re-execution or double execution
    c.on_checkpoint("r3", 1, "bad-state")
    v = c.verdicts(1, 1, {})
    assert (v.safety_ok, v.violations) == (True, [])
    assert c.checked_seqs() == 1


def test_different_state_digests_at_one_checkpoint_break_agreement() -> None:
    c = checker()
    c.on_checkpoint("r0", 128, "s")
    c.on_checkpoint("r1", 128, "t")
    c.on_checkpoint("r1", 256, "u")
    v = c.verdicts(0, 0, {})
    assert v.violations == [{"kind": "agreement: different state digest at one seq",
                             "seq": 128, "digests": {"r0": "s", "r1": "t"}}]


def test_a_request_no_client_submitted_is_flagged() -> None:
    c = checker("a")
    c.on_execute("r0", 1, "d1", ["a", "invented"])
    v = c.verdicts(1, 1, {})
    assert v.safety_ok is False
    assert v.violations == [{"kind": "executed a request no client submitted", "node": "r0",
                             "request": "invented", "seq": 1}]


def test_executing_a_request_twice_is_flagged() -> None:
    c = checker("a", "b")
    c.on_execute("r1", 1, "d1", ["a"])
    c.on_execute("r1", 2, "d2", ["b", "a"])
    assert c.verdicts(2, 2, {}).violations == [
        {"kind": "executed twice", "node": "r1", "request": "a", "seqs": [1, 2]}]


def test_re_executing_a_seq_with_another_digest_is_flagged() -> None:
    c = checker("a", "b")
    c.on_execute("r2", 5, "d", ["a"])
    c.on_execute("r2", 5, "d", [])  # same digest again (a replay after recovery): fine
    assert c.violations == []
    c.on_execute("r2", 5, "e", ["b"])
    assert c.violations == [{"kind": "re-execution with another digest", "node": "r2",
                             "seq": 5}]


def test_liveness_counts_unsettled_requests_and_keeps_extra_fields() -> None:
    c = checker("a", "b", "c")
    v = c.verdicts(settled=1, submitted=3, extra={"healed_at_s": 2.0})
    assert v.safety_ok is True
    assert v.liveness_ok is False
    assert v.liveness == {"ok": False, "submitted": 3, "settled": 1, "unsettled": 2,
                          "healed_at_s": 2.0}


def test_checked_seqs_counts_seqs_some_honest_replica_executed() -> None:
    c = checker("a", "b", "c")
    c.on_execute("r0", 1, "d1", ["a"])
    c.on_execute("r1", 1, "d1", ["a"])
    c.on_execute("r1", 2, "d2", ["b"])
    c.on_execute("r3", 3, "d3", ["c"])  # Byzantine: not covered by agreement
    assert c.checked_seqs() == 2
