"""Layer 1: the simulator's compact event log (sim/events.py) gives back exactly the rows it
was given and is smaller than the dicts it replaces; in a run, the replicas' events hold one
copy of each text (node/pbft/normal_case.py remembers them)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from medbft.scenario import parse_scenario
from sim.events import COMPACT, EventLog
from sim.run import run_scenario

DIGEST = "ab" * 32


def _rows(seqs: int, nodes: int = 4) -> list[dict[str, Any]]:
    """What n replicas record for `seqs` batches, as the simulator records them: each replica
    builds its own strings (equal, not the same objects)."""
    rows: list[dict[str, Any]] = []
    for seq in range(1, seqs + 1):
        for i in range(nodes):
            node = f"hospital-{i + 1}"
            digest = f"{seq:064x}"
            keys = [f"client-{seq % 7}/{seq % 3}/{seq}"]
            t = seq * 1_000_000 + i
            rows.append({"t": t, "node": node, "event": "pre-prepare", "view": 0, "seq": seq,
                         "digest": digest[:], "requests": [k[:] for k in keys]})
            rows.append({"t": t + 1, "node": node, "event": "prepared", "view": 0, "seq": seq,
                         "digest": "".join(digest)})
            rows.append({"t": t + 2, "node": node, "event": "committed", "view": 0,
                         "seq": seq, "digest": "".join(digest)})
            rows.append({"t": t + 3, "node": node, "event": "execute", "view": 0, "seq": seq,
                         "digest": "".join(digest), "timestamp_ns": t,
                         "requests": ["".join(k) for k in keys],
                         "executed": ["".join(k) for k in keys]})
        if seq % 8 == 0:
            rows.append({"t": seq * 1_000_000 + 9, "node": "hospital-1", "event": "checkpoint",
                         "seq": seq, "digest": DIGEST})
    return rows


def test_rows_come_back_as_recorded_in_order() -> None:
    rows = _rows(20)
    rows.insert(5, {"t": 7, "node": "hospital-2", "event": "crash"})
    rows.append({"t": 10**9, "node": "hospital-2", "event": "view-change", "view": 1,
                 "stable_seq": 16, "prepared": 2, "cause": "timeout"})
    log = EventLog()
    for row in rows:
        fields = {k: v for k, v in row.items() if k not in ("t", "node", "event")}
        log.add(row["t"], row["node"], row["event"], fields)
    assert list(log) == rows
    assert [list(r) for r in log] == [list(r) for r in rows]  # the same key order
    assert all(type(r["requests"]) is list for r in log if "requests" in r)
    assert log == rows and len(log) == len(rows)
    # append() of the whole dict (a traced run) stores the same log
    appended = EventLog()
    for row in rows:
        appended.append(row)
    assert appended == log


def test_select_gives_the_kinds_asked_for_in_order() -> None:
    rows = _rows(16)
    rows.insert(9, {"t": 3, "node": "hospital-3", "event": "recover"})
    log = EventLog()
    for row in rows:
        log.append(row)
    for kinds in (("execute",), ("checkpoint", "recover"), ("pre-prepare", "recover"),
                  ("prepared", "committed"), ("nothing",)):
        assert list(log.select(kinds)) == [r for r in rows if r["event"] in kinds]
    # rows kept as dicts are handed out as they are, without walking the protocol rows
    recover = next(r for r in rows if r["event"] == "recover")
    assert next(log.select(("recover",))) is recover


def test_fields_reads_the_values_select_would_give() -> None:
    rows = _rows(12)
    rows.insert(3, {"t": 5, "node": "hospital-4", "event": "crash"})
    rows.insert(7, {"node": "hospital-1", "t": 6, "event": "execute", "seq": 0,
                    "executed": []})  # another key order: kept as a dict, read the same way
    log = EventLog()
    for row in rows:
        log.append(row)
    for kinds, names in ((("execute",), ("executed", "seq")), (("execute",), ("seq",)),
                         (("pre-prepare", "crash"), ("node", "t")), (("crash",), ("node",)),
                         (("prepared",), ())):
        assert list(log.fields(kinds, names)) == [
            tuple(row[n] for n in names) for row in log.select(kinds)]
    # a field named like a head key wins, as it does in the dict the row stands for
    log.add(9, "hospital-1", "prepared", {"seq": 3, "node": "someone else"})
    assert list(log.fields(("prepared",), ("node", "seq")))[-1] == ("someone else", 3)
    assert list(log)[-1] == {"t": 9, "node": "someone else", "event": "prepared", "seq": 3}
    with pytest.raises(KeyError, match="timestamp_ns"):
        list(log.fields(("prepared",), ("seq", "timestamp_ns")))


def test_a_row_in_another_key_order_is_kept_as_it_is() -> None:
    log = EventLog()
    odd = {"node": "hospital-1", "t": 1, "event": "prepared", "seq": 1}
    log.append(odd)
    assert list(log) == [odd] and next(iter(log)) is odd


def test_the_log_is_much_smaller_than_the_dicts_it_replaces() -> None:
    rows = _rows(200)  # the values (texts, numbers, lists) exist either way: not counted

    def held(build: Any) -> int:
        tracemalloc.start()
        try:
            kept = build()
            size = tracemalloc.get_traced_memory()[0]
            del kept
        finally:
            tracemalloc.stop()
        return size

    def as_log() -> EventLog:
        log = EventLog()
        for row in rows:
            log.append(row)
        return log

    dicts = held(lambda: [dict(row) for row in rows])  # what the simulator used to keep
    compact = held(as_log)
    assert compact < 0.55 * dicts, (compact, dicts)  # 0.44 measured: tuples, not dicts


def test_a_run_records_the_same_events_traced_or_not() -> None:
    sc = parse_scenario({
        "name": "t", "seed": 3, "duration": "1s", "nodes": 4, "network": {"latency": "10ms"},
        "cpu": "none", "workload": {"clients": 2, "outstanding": 2},
        "faults": [{"at": "300ms", "until": "500ms", "crash": "hospital-2"}],
    }, "<test>")
    plain, traced = run_scenario(sc), run_scenario(sc, trace=True)
    assert plain.events == traced.events
    kinds = {row["event"] for row in plain.events}
    assert kinds >= COMPACT | {"crash", "recover"}
    assert list(plain.events.select(("crash",))) == [
        r for r in traced.trace if r["event"] == "crash"]


def test_the_replicas_events_hold_one_copy_of_each_text() -> None:
    sc = parse_scenario({"name": "t", "seed": 1, "duration": "500ms", "nodes": 4,
                         "network": {"latency": "10ms"}, "cpu": "none",
                         "workload": {"clients": 2, "outstanding": 2}}, "<test>")
    by_seq: dict[int, list[dict[str, Any]]] = {}
    for row in run_scenario(sc).events.select(("pre-prepare", "prepared", "committed",
                                                  "execute")):
        by_seq.setdefault(row["seq"], []).append(row)
    assert len(by_seq) > 10
    for rows in by_seq.values():
        assert len(rows) == 16  # four replicas, four events each
        assert all(row["digest"] is rows[0]["digest"] for row in rows)
        first: dict[str, str] = {}
        for row in rows:
            for key in row.get("executed", []) + row.get("requests", []):
                assert key is first.setdefault(key, key)
        assert first
