"""What a full trace (`medbft run --trace`, trace.jsonl) tells a teacher, as docs/results.md
("Trace format") documents it: sends carry the view, sequence number and digest actually sent
to each receiver (so a fork is visible), clients' acceptances, the cause of every view change,
and messages that reached a crashed party marked lost."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from medbft.scenario import load_scenario, parse_scenario
from sim.run import RunResult, digest_summary, run_scenario

ROOT = Path(__file__).parent.parent
SCENARIOS = ROOT / "scenarios"
HEX = re.compile(r"[0-9a-f]{64}")
CAUSES = {"request-timer", "new-view-timer", "f+1-view-changes", "inadmissible-pre-prepare",
          "byzantine"}


def traced(name: str, *overrides: str) -> RunResult:
    return run_scenario(load_scenario(SCENARIOS / f"{name}.yaml", overrides), trace=True)


def sends(result: RunResult, kind: str | None = None) -> list[dict[str, Any]]:
    return [r for r in result.trace
            if r["event"] == "send" and (kind is None or r["kind"] == kind)]


@pytest.fixture(scope="module")
def fork() -> RunResult:
    return traced("f-plus-one-equivocators", "duration=2.5s")


@pytest.fixture(scope="module")
def crash() -> RunResult:
    return traced("primary-crash", "duration=5s")


def test_sends_carry_view_seq_and_digest_in_the_form_execute_rows_use(crash: RunResult) -> None:
    rows = sends(crash)
    for row in rows:
        kind = row["kind"]
        if kind in ("PRE-PREPARE", "PREPARE", "COMMIT"):
            assert {"view", "seq", "digest"} <= row.keys(), row
        elif kind == "CHECKPOINT":
            assert {"seq", "digest"} <= row.keys() and "view" not in row, row
        elif kind in ("VIEW-CHANGE", "NEW-VIEW"):
            assert "view" in row and "seq" not in row, row
        elif kind == "REPLY":
            assert {"view", "client", "session", "timestamp", "request", "result"} <= row.keys()
        elif kind == "REQUEST":
            assert row["request"] == f"{row['client']}/{row['session']}/{row['timestamp']}"
        if "digest" in row:
            assert HEX.fullmatch(row["digest"]), row
    assert {r["kind"] for r in rows} >= {"REQUEST", "PRE-PREPARE", "PREPARE", "COMMIT", "REPLY",
                                         "CHECKPOINT", "VIEW-CHANGE", "NEW-VIEW"}
    # The digest a replica executed is the one its PRE-PREPARE, PREPAREs and COMMITs carried.
    sent = {(r["seq"], r["digest"]) for r in rows if r["kind"] == "COMMIT"}
    executed = {(r["seq"], r["digest"]) for r in crash.trace if r["event"] == "execute"}
    assert executed and executed <= sent


def test_equivocators_send_two_digests_at_one_seq_and_each_receiver_sees_its_own(
        fork: RunResult) -> None:
    faulty = {"hospital-1", "pharmacy-1"}
    by_seq: dict[int, set[str]] = defaultdict(set)
    for row in sends(fork):
        if row["node"] in faulty and row["kind"] in ("PRE-PREPARE", "PREPARE", "COMMIT"):
            by_seq[row["seq"]].add(row["digest"])
    forked = {seq for seq, digests in by_seq.items() if len(digests) == 2}
    assert 41 in forked, "the first forked request (the scenario's description)"
    # What each honest replica executed at seq 41 is what the Byzantine replicas sent it.
    executed = {r["node"]: r["digest"] for r in fork.trace
                if r["event"] == "execute" and r["seq"] == 41 and r["node"] not in faulty}
    assert len(set(executed.values())) == 2, executed
    for node, digest in executed.items():
        told = {r["digest"] for r in sends(fork, "PRE-PREPARE") if r["to"] == node
                and r["seq"] == 41}
        assert told == {digest}, (node, told)
    # Honest replicas never send two digests at one seq.
    honest: dict[tuple[str, int], set[str]] = defaultdict(set)
    for row in sends(fork, "PREPARE"):
        if row["node"] not in faulty:
            honest[(row["node"], row["seq"])].add(row["digest"])
    assert all(len(d) == 1 for d in honest.values())


def test_every_committed_request_has_an_accept_row(crash: RunResult) -> None:
    accepts = {r["request"]: r for r in crash.trace if r["event"] == "accept"}
    committed = [r for r in crash.requests if r.commit_ns is not None]
    assert committed and len(accepts) == len(committed)
    for rec in committed:
        row = accepts[rec.key]
        assert row["node"] == rec.client and row["t"] == rec.commit_ns
        assert row["replies"] == 2, "f+1 matching replies (n = 4)"
        assert row["view"] == rec.view and HEX.fullmatch(row["result"])
        replies = [r for r in sends(crash, "REPLY") if r["request"] == rec.key
                   and row["t"] in r["arrive"] and r["result"] == row["result"]]
        assert len(replies) >= 2


def test_every_view_change_says_why(crash: RunResult) -> None:
    rows = [r for r in crash.trace if r["event"] == "view-change"]
    assert len(rows) == 3, "the three live backups"
    assert {r["cause"] for r in rows} == {"request-timer"}
    stalled = {r["request"] for r in rows}
    assert len(stalled) == 1
    (key,) = stalled
    assert any(rec.key == key and rec.view == 1 for rec in crash.requests), (
        "the request the timers waited for commits in the new view")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cascade-of-faulty-primaries", "partition-and-heal",
                                  "byzantine-primary-equivocates"])
def test_view_change_causes_of_the_shipped_scenarios(name: str) -> None:
    rows = [r for r in traced(name).trace if r["event"] == "view-change"]
    assert rows and all(r["cause"] in CAUSES for r in rows), rows
    expected = {"cascade-of-faulty-primaries": "new-view-timer",
                "partition-and-heal": "f+1-view-changes",
                "byzantine-primary-equivocates": "f+1-view-changes"}[name]
    assert expected in {r["cause"] for r in rows}
    assert all("request" not in r for r in rows if r["cause"] != "request-timer")


def test_a_byzantine_view_change_is_called_so() -> None:
    data = {"name": "t", "seed": 1, "duration": "2.5s", "nodes": 4,
            "network": {"latency": "10ms"}, "cpu": "none",
            "workload": {"clients": 1, "outstanding": 1},
            "faults": [{"at": "1s", "byzantine": "pharmacy-1",
                        "behavior": "premature-view-change"}]}
    result = run_scenario(parse_scenario(data, "<test>"), trace=True)
    rows = [r for r in result.trace if r["event"] == "view-change"]
    assert rows and all(r["node"] == "pharmacy-1" and r["cause"] == "byzantine"
                        and r["behavior"] == "premature-view-change" for r in rows), rows


def test_messages_to_a_crashed_party_are_lost_not_delivered(crash: RunResult) -> None:
    crashed = next(r["t"] for r in crash.trace if r["event"] == "crash")
    recovered = next((r["t"] for r in crash.trace if r["event"] == "recover"), 10**18)
    to_dead = [r for r in sends(crash) if r["to"] == "hospital-1" and r["arrive"]
               and crashed <= r["arrive"][0] < recovered]
    assert to_dead and all(r["lost"] and r["reason"] == "crashed" for r in to_dead)
    alive = [r for r in sends(crash) if r["to"] == "hospital-1" and r["arrive"]
             and r["arrive"][0] < crashed]
    assert alive and not any(r["lost"] for r in alive)


def test_messages_lost_on_the_way_say_why() -> None:
    result = traced("partition-and-heal", "duration=3s")
    lost = [r for r in sends(result) if r["lost"]]
    assert lost and {r["reason"] for r in lost} <= {"partition", "isolated", "loss", "crashed"}
    assert "partition" in {r["reason"] for r in lost}
    assert all(not r["arrive"] for r in lost if r["reason"] == "partition")


def test_the_new_fields_change_nothing_else(crash: RunResult) -> None:
    """A traced run and an untraced one measure the same (the fields are computed only for
    the trace)."""
    plain = run_scenario(load_scenario(SCENARIOS / "primary-crash.yaml", ["duration=5s"]))
    assert digest_summary(plain.summary | {"wall_time_s": 0}) == digest_summary(
        crash.summary | {"wall_time_s": 0})
    assert not plain.trace
