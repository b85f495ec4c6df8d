"""The one `summary.json`: its keys, what each means, and the one `expect:` check, for
simulated and real runs alike.

Why this exists: a simulated run (`sim.run`) and a real one (`medbft.real.load`) measure the
same things from different vantage points: the simulator sees every message and every
replica, a real run reads the clients' clocks and the nodes' counters. Both hand what they
measured to `build_summary`, which derives the shared figures (requests, throughput, latency,
messages per request) one way and lays the keys out in one order, so a sweep, a plot or a
paper table can read either kind of run without asking which it was. `check_expect` then
judges a scenario's `expect:` block against either kind of summary, and `verdict` turns the
two into the exit code `medbft run` and `medbft cluster` share.

The keys, in order (docs/results.md defines each measurement):
- `scenario`, `scenario_hash` (None when the run had no scenario file), `version`;
- `mode` (`sim` or `real`), `transport` (`sim`, `http` or `mqtt`), `seed`, `n`, `f`;
- `duration_s` (how long clients submit), `sim_time_s` (virtual seconds the simulation
  covered; None in a real run, which has no virtual time), `wall_time_s` (wall-clock seconds
  the run took: the whole simulation, or the load phase of a real run);
- `requests`, `throughput_tps`, `latency_ms`, `messages`;
- `faults` (fault windows: kind, target, start_s, end_s, label), `byzantine`;
- `view_changes` (how many distinct views replicas entered during the run, counted from the
  replicas' own enter-view events in both modes), `final_view`, `stable_checkpoint`,
  `state_transfers`;
- `rejected_messages`, `ignored_messages` (drops, classified by the replica itself: see
  `node.pbft.BENIGN_DROPS`);
- `cpu`, `nodes` (each replica's final view, last executed and stable checkpoint);
- `safety`, `liveness`, then `ledger` on a ledger run, `harm` (domain harms, medbft/harm.py
  and docs/harm.md; null in a real run, which cannot see every replica's order), then
  `expect`.
What it must not know: how the parts were measured.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from medbft.metrics import RequestRecord, latency_stats

__all__ = ["Measured", "build_summary", "check_expect", "code_version", "verdict"]


def code_version() -> str:
    """The installed medbft version (`version` in every summary; part of a sweep's run key)."""
    try:
        return metadata.version("medbft")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


@dataclass
class Measured:
    """What one run measured, before it is laid out as a summary."""

    scenario: str
    scenario_hash: str | None
    version: str
    mode: str
    transport: str
    seed: int
    n: int
    f: int
    duration_ns: int
    sim_time_ns: int | None
    records: Sequence[RequestRecord]
    submitted: int
    """Requests offered, arrivals still queued at an open-loop client included."""
    settled: int
    """Requests whose client accepted f+1 matching replies."""
    messages: dict[str, Any]
    """total, bytes, lost, lost_by_reason, duplicated, reordered, by_type, bytes_by_type,
    by_node, bytes_by_node (per_committed_request is added here)."""
    views_entered: int
    final_view: int
    stable_checkpoint: int
    state_transfers: int
    rejected: dict[str, int]
    ignored: dict[str, int]
    cpu: dict[str, Any]
    nodes: dict[str, dict[str, int]]
    safety: dict[str, Any]
    liveness: dict[str, Any]
    faults: list[dict[str, Any]] = field(default_factory=list)
    byzantine: list[str] = field(default_factory=list)
    ledger: dict[str, Any] | None = None
    harm: dict[str, Any] | None = None
    """Domain harms (medbft/harm.py): simulated runs only (a real run cannot see every
    replica's order)."""


def build_summary(m: Measured, expect: Any = None) -> dict[str, Any]:
    """The summary of a run, its `expect` section judged against `expect` (a scenario's
    `ExpectSpec`; None: nothing asserted). `wall_time_s` is left None for the caller."""
    records = m.records
    settled = m.settled
    latencies = [r.latency_ns for r in records if r.latency_ns is not None]
    in_window = sum(1 for r in records if r.commit_ns is not None
                    and r.commit_ns <= m.duration_ns)
    messages = dict(m.messages)
    per_request = round(messages["total"] / settled, 6) if settled else None
    messages = _insert_after(messages, "reordered", "per_committed_request", per_request)
    summary: dict[str, Any] = {
        "scenario": m.scenario,
        "scenario_hash": m.scenario_hash,
        "version": m.version,
        "mode": m.mode,
        "transport": m.transport,
        "seed": m.seed,
        "n": m.n,
        "f": m.f,
        "duration_s": m.duration_ns / 1e9,
        "sim_time_s": None if m.sim_time_ns is None else round(m.sim_time_ns / 1e9, 9),
        "wall_time_s": None,
        "requests": {"submitted": m.submitted, "committed": settled},
        "throughput_tps": round(in_window / (m.duration_ns / 1e9), 6),
        "latency_ms": latency_stats(latencies),
        "messages": messages,
        "faults": m.faults,
        "byzantine": m.byzantine,
        "view_changes": m.views_entered,
        "final_view": m.final_view,
        "stable_checkpoint": m.stable_checkpoint,
        "state_transfers": m.state_transfers,
        "rejected_messages": {"total": sum(m.rejected.values()),
                              "by_reason": dict(sorted(m.rejected.items()))},
        "ignored_messages": {"total": sum(m.ignored.values()),
                             "by_reason": dict(sorted(m.ignored.items()))},
        "cpu": m.cpu,
        "nodes": dict(sorted(m.nodes.items())),
        "safety": m.safety,
        "liveness": m.liveness,
    }
    if m.ledger is not None:
        summary["ledger"] = m.ledger
    summary["harm"] = m.harm  # None (null) in a real run: both modes have the same keys
    summary["expect"] = check_expect(expect, summary)
    return summary


def _insert_after(d: dict[str, Any], after: str, key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out[k] = v
        if k == after:
            out[key] = value
    if key not in out:
        out[key] = value
    return out


# -- expectations ------------------------------------------------------------------------------


def _measured(summary: dict[str, Any]) -> dict[str, Any]:
    requests = summary["requests"]
    harm = summary.get("harm")
    return {
        "safety": summary["safety"]["ok"],
        "liveness": summary["liveness"]["ok"],
        "committed_fraction": (requests["committed"] / requests["submitted"]
                               if requests["submitted"] else 1.0),
        "latency_ms_p50": summary["latency_ms"]["p50"],
        "latency_ms_p99": summary["latency_ms"]["p99"],
        "throughput_tps": summary["throughput_tps"],
        "view_changes": summary["view_changes"],
        "rejected_messages": summary["rejected_messages"]["total"],
        "state_transfers": summary["state_transfers"],
        "final_view": summary["final_view"],
        "harm": harm["events"] if harm else None,
        "harm_unfair": harm["unfair"]["events"] if harm else None,
    }


def check_expect(expect: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """Compare every asserted expectation of `expect` (an `ExpectSpec`, or None) with what
    `summary` measured; name each failure with its expected and measured value."""
    if expect is None:
        return {"ok": True, "failed": []}
    measured = _measured(summary)
    failed: list[dict[str, Any]] = []

    def check(name: str, key: str, expected: Any, ok: Callable[[Any], bool]) -> None:
        value = measured[key]
        if expected is not None and (value is None or not ok(value)):
            failed.append({"name": name, "expected": expected, "measured": value})

    exp = expect
    check("safety", "safety", exp.safety, lambda v: v == exp.safety)
    check("liveness", "liveness", exp.liveness, lambda v: v == exp.liveness)
    for name in ("committed_fraction_min", "latency_ms_p99_min", "throughput_tps_min",
                 "rejected_messages_min", "state_transfers_min", "final_view_min"):
        bound = getattr(exp, name)
        check(name, name[: -len("_min")], bound, functools.partial(operator.le, bound))
    for name in ("latency_ms_p50_max", "latency_ms_p99_max", "throughput_tps_max"):
        bound = getattr(exp, name)
        check(name, name[: -len("_max")], bound, functools.partial(operator.ge, bound))
    for name in ("view_changes", "harm_unfair"):
        spec = getattr(exp, name)
        if spec is not None:
            check(name, name, spec.model_dump(exclude_none=True),
                  functools.partial(_in_range, spec.min, spec.max))
    check("harm", "harm", exp.harm, lambda v: v == exp.harm)
    return {"ok": not failed, "failed": failed}


def _in_range(lo: int | None, hi: int | None, value: int) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def verdict(summary: dict[str, Any], expected_safety: bool | None) -> bool:
    """Whether a run passes: its expectations hold, and safety held unless the scenario
    asserted something about safety itself (`expect: {safety: false}` for a planned fork)."""
    if not summary["expect"]["ok"]:
        return False
    return expected_safety is not None or summary["safety"]["ok"]
