"""What the figures and sweeps need from a run's protocol events: when each request crossed each
PBFT phase boundary, when views changed, when faults were active, and the longest stall.

Why this exists: `sim.run` records protocol events (pre-prepare, prepared, committed, execute,
view-change, enter-view, crash, recover ...) per replica; a figure or a sweep wants a few small
tables instead. Every definition lives here, once, next to the code that computes it, and
docs/results.md repeats them. It reads only recorded events and request records (never a clock)
and knows nothing about matplotlib or files.

Phase boundaries of one committed request (times in seconds of virtual time). The request's
certificate is (v, seq, d): the view, sequence number and batch digest of the first `execute`
event that ran it.
- submit: the client sent it (`RequestRecord.submit_ns`);
- pre-prepare: the earliest `pre-prepare` event for (v, seq, d), i.e. when the primary of view v
  assigned it a sequence number (if view v has none, because the request was carried into v
  by a NEW-VIEW, the earliest `pre-prepare` of (seq, d) in any view);
- prepared: when the q-th distinct replica became prepared for (v, seq, d), q = the quorum
  ceil((n+f+1)/2) (2f+1 when n = 3f+1): from then on a commit quorum can form;
- committed: when the (f+1)-th distinct replica became committed-local for (v, seq, d): the
  first instant at which f+1 replicas, the number the client waits for, can execute it;
- reply: the client accepted f+1 matching replies (`RequestRecord.commit_ns`).
When fewer replicas than needed recorded the event (crashes), the last one that did counts; a
missing boundary takes the previous one. Each boundary is then clamped between its neighbours,
so the four phases (request, prepare, commit, reply) are never negative and add up to the
request's latency exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medbft.metrics import RequestRecord
from node.quorum import faults_tolerated, quorum

if TYPE_CHECKING:
    from sim.events import EventLog

__all__ = ["FAULT_EVENTS", "PHASES", "VIEW_EVENTS", "FaultRow", "PhaseRow",
           "ViewRow", "fault_rows", "phase_rows", "stall_ms", "view_rows"]

#: The four phases of a request, in order, each ending at the next boundary.
PHASES: tuple[str, ...] = ("request", "prepare", "commit", "reply")

_NS = 1e9


@dataclass(frozen=True, slots=True)
class PhaseRow:
    """One committed request's phase boundaries, in seconds."""

    request: str
    view: int
    seq: int
    submit_s: float
    pre_prepare_s: float
    prepared_s: float
    committed_s: float
    reply_s: float

    def durations_ms(self) -> dict[str, float]:
        """Phase name -> duration in milliseconds (they add up to the latency)."""
        bounds = (self.submit_s, self.pre_prepare_s, self.prepared_s, self.committed_s,
                  self.reply_s)
        return {name: (bounds[i + 1] - bounds[i]) * 1e3 for i, name in enumerate(PHASES)}


@dataclass(frozen=True, slots=True)
class ViewRow:
    """A view some replica moved to: when the first VIEW-CHANGE for it was sent and when the
    first replica entered it (None: never entered, the view change did not complete)."""

    view: int
    primary: str
    view_change_s: float | None
    entered_s: float | None


@dataclass(frozen=True, slots=True)
class FaultRow:
    """One row of faults.csv: a fault active from `start_s` to `end_s` in seconds (None:
    until the end of the run). The simulator records its windows in nanoseconds
    (`sim.faults.FaultWindow`); this is what the figures read back."""

    kind: str
    target: str
    start_s: float
    end_s: float | None
    label: str


# -- phases ----------------------------------------------------------------------------------


def _phase_index(events: EventLog) -> tuple[
        dict[str, tuple[int, int, str]], dict[tuple[str, Any], list[int]]]:
    """What phase boundaries are read from, taken from the run's events without building
    their rows:

    - request key -> (view, seq, digest) of the first execute event that ran it;
    - (kind, certificate) -> sorted first times per distinct replica, for the three votes.
      Keys: ('pre-prepare', (v, seq, d)), ('pre-prepare-any', (seq, d)),
      ('prepared', (v, seq, d)) and ('committed', (v, seq, d)).
    """
    certs: dict[str, tuple[int, int, str]] = {}
    for executed, view, seq, digest in events.fields(("execute",),
                                                     ("executed", "view", "seq", "digest")):
        for key in executed:
            certs.setdefault(key, (view, seq, digest))
    first: dict[tuple[str, Any], dict[str, int]] = {}
    for kind, node, t, view, seq, digest in events.fields(
            _VOTES, ("event", "node", "t", "view", "seq", "digest")):
        first.setdefault((kind, (view, seq, digest)), {}).setdefault(node, t)
        if kind == "pre-prepare":
            first.setdefault(("pre-prepare-any", (seq, digest)), {}).setdefault(node, t)
    return certs, {key: sorted(times.values()) for key, times in first.items()}


_VOTES = ("pre-prepare", "prepared", "committed")


def _nth(times: Sequence[int] | None, n: int) -> int | None:
    if not times:
        return None
    return times[min(n, len(times)) - 1]


def phase_rows(records: Iterable[RequestRecord], events: EventLog, n: int) -> list[PhaseRow]:
    """Phase boundaries of every committed request (see the module docstring), in the order
    of `records`. Requests never committed, or with no execute event, are left out."""
    certs, times = _phase_index(events)
    q, f1 = quorum(n), faults_tolerated(n) + 1
    rows = []
    for rec in records:
        cert = certs.get(rec.key)
        if rec.commit_ns is None or cert is None:
            continue
        view, seq, digest = cert
        pp = _nth(times.get(("pre-prepare", cert)), 1)
        if pp is None:
            pp = _nth(times.get(("pre-prepare-any", (seq, digest))), 1)
        bounds = [rec.submit_ns, pp, _nth(times.get(("prepared", cert)), q),
                  _nth(times.get(("committed", cert)), f1), rec.commit_ns]
        clamped = _clamp(bounds)
        rows.append(PhaseRow(rec.key, view, seq, *(t / _NS for t in clamped)))
    return rows


def _clamp(bounds: list[int | None]) -> list[int]:
    """Fill missing boundaries with the previous one and keep them in order, inside
    [first, last]."""
    first, last = bounds[0], bounds[-1]
    assert first is not None and last is not None
    out = [first]
    for t in bounds[1:-1]:
        value = out[-1] if t is None else t
        out.append(min(max(value, out[-1]), last))
    out.append(last)
    return out


# -- views and faults ------------------------------------------------------------------------


#: The events `view_rows` reads.
VIEW_EVENTS: frozenset[str] = frozenset({"view-change", "enter-view"})


def view_rows(events: Iterable[Mapping[str, Any]], node_ids: Sequence[str]) -> list[ViewRow]:
    """Every view above 0 that a replica asked for (VIEW-CHANGE) or entered, in order."""
    asked: dict[int, int] = {}
    entered: dict[int, int] = {}
    for ev in events:
        if ev["event"] == "view-change":
            asked.setdefault(ev["view"], ev["t"])
        elif ev["event"] == "enter-view":
            entered.setdefault(ev["view"], ev["t"])
    views = sorted(v for v in set(asked) | set(entered) if v > 0)
    n = len(node_ids)
    return [ViewRow(v, node_ids[v % n],
                    asked[v] / _NS if v in asked else None,
                    entered[v] / _NS if v in entered else None) for v in views]


#: The events `fault_rows` reads.
FAULT_EVENTS: frozenset[str] = frozenset({"crash", "recover"})


def fault_rows(summary: Mapping[str, Any],
                  events: Iterable[Mapping[str, Any]]) -> list[FaultRow]:
    """Fault windows: `summary['faults']` when the run recorded it, else crash -> recover
    pairs from the events (a crash never recovered lasts to the end of the run)."""
    if summary.get("faults") is not None:
        return [FaultRow(str(w["kind"]), str(w["target"]), float(w["start_s"]),
                            None if w.get("end_s") is None else float(w["end_s"]),
                            str(w.get("label") or f"{w['kind']} {w['target']}"))
                for w in summary["faults"]]
    open_at: dict[str, int] = {}
    out: list[FaultRow] = []
    for ev in events:
        if ev["event"] == "crash":
            open_at.setdefault(ev["node"], ev["t"])
        elif ev["event"] == "recover" and ev["node"] in open_at:
            start = open_at.pop(ev["node"])
            out.append(FaultRow("crash", ev["node"], start / _NS, ev["t"] / _NS,
                                   f"crash {ev['node']}"))
    out += [FaultRow("crash", node, start / _NS, None, f"crash {node}")
            for node, start in open_at.items()]
    return sorted(out, key=lambda w: (w.start_s, w.target))


# -- derived metrics -------------------------------------------------------------------------


def stall_ms(commit_times_s: Iterable[float], duration_s: float) -> float:
    """The longest interval within [0, duration] in which no request committed, in ms."""
    marks = sorted(t for t in commit_times_s if t <= duration_s)
    edges = [0.0, *marks, duration_s]
    return max(b - a for a, b in itertools.pairwise(edges)) * 1e3
