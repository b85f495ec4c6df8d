"""Step by step: the messages and protocol events of a stretch of a run, as narrated lines and
as the data of a message sequence chart.

Why this exists: teachers show how PBFT reaches agreement one message at a time, as the
paper's Figure 1 does (REQUEST, PRE-PREPARE, PREPARE, COMMIT, REPLY), and how it survives a
fault (VIEW-CHANGE, NEW-VIEW). A run's `trace.jsonl` (`medbft run --trace`) holds every send
with its arrival times and every protocol event; this module picks a time window (by default
the first committed request), groups each multicast into one step, and explains each kind of
message and event the first time it appears. It reads only the files a run wrote and knows
nothing about matplotlib (medbft/views/sequence_chart.py draws the chart).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medbft.results import read_requests, read_scenario_copy, trace_rows

__all__ = [
    "EVENT_NOTES",
    "MESSAGE_NOTES",
    "Excerpt",
    "Sent",
    "Step",
    "TraceError",
    "excerpt_from_rows",
    "load_sequence",
    "narrate",
    "narration",
    "request_window",
]

#: What each message kind does, said once, the first time it appears (OSDI '99 section 4).
MESSAGE_NOTES = {
    "REQUEST": "the client sends its signed request to the replica it believes is the primary",
    "PRE-PREPARE": "the primary assigns the request a sequence number in its view and "
                   "multicasts the assignment to the backups (4.2)",
    "PREPARE": "a backup that accepts the PRE-PREPARE multicasts a PREPARE: it agrees to that "
               "sequence number for that digest (4.2)",
    "COMMIT": "a replica that is prepared (the PRE-PREPARE and 2f matching PREPAREs) multicasts "
              "a COMMIT (4.2)",
    "REPLY": "a replica that executed the request answers the client, which waits for f+1 "
             "matching replies (4.1)",
    "CHECKPOINT": "every checkpoint interval, replicas exchange signed digests of their state; "
                  "2f+1 matching ones make it stable and let them discard older log entries (4.3)",
    "VIEW-CHANGE": "a backup that waited too long for progress stops accepting messages of its "
                   "view and asks to move to the next one, with proof of what it prepared (4.4)",
    "NEW-VIEW": "the primary of the new view proves 2f+1 VIEW-CHANGEs and re-proposes every "
                "request that may have committed, so nothing committed is lost (4.4)",
    "FETCH-STATE": "a replica that fell behind asks its peers for a checkpointed state",
    "STATE-DATA": "a peer sends its state, checked against a stable checkpoint's digest",
    "FETCH-BATCH": "a replica asks for the body of a batch it knows only by digest",
    "BATCH-DATA": "a peer sends the batch body",
}
#: What each protocol event means, said once.
EVENT_NOTES = {
    "pre-prepare": "the primary assigned, or a backup accepted, a sequence number for the batch",
    "prepared": "holds the PRE-PREPARE and 2f matching PREPAREs: no other digest can be "
                "prepared at this sequence number in this view",
    "committed": "committed-local: prepared and 2f+1 matching COMMITs; the request survives any "
                 "view change",
    "execute": "executed the batch, in sequence-number order",
    "view-change": "started a view change",
    "join-view": "joined a view change that f+1 others asked for",
    "new-view": "sent the NEW-VIEW as the new primary",
    "enter-view": "installed the new view",
    "checkpoint": "took a checkpoint of its state",
    "stable": "its checkpoint became stable",
    "fetch-state": "asked its peers for state",
    "state-transfer": "installed a state transferred from its peers",
    "crash": "crashed",
    "recover": "recovered",
}


class TraceError(ValueError):
    """A run directory without a usable trace, or a window with nothing in it."""


@dataclass(frozen=True)
class Sent:
    """One message as the trace recorded its sending: who sent what kind to whom, when, and
    when its copies arrived (not a protocol message: node.messages has those)."""

    t_ns: int
    src: str
    dst: str
    kind: str
    arrive_ns: tuple[int, ...]  # empty: lost; two: duplicated

    @property
    def lost(self) -> bool:
        return not self.arrive_ns


@dataclass(frozen=True)
class Step:
    t_ns: int
    node: str
    event: str
    fields: dict[str, Any] = field(hash=False, compare=False)


@dataclass
class Excerpt:
    """What happened in [start_ns, end_ns], with the lanes (parties) in chart order."""

    start_ns: int
    end_ns: int
    lanes: list[str]
    roles: dict[str, str]
    messages: list[Sent]
    steps: list[Step]
    truncated: int = 0  # messages left out beyond the cap
    down: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """Party -> the stretches of the window it spent crashed, [from, to] in ns."""


def _read_trace(directory: Path) -> Iterator[dict[str, Any]]:
    """The rows of trace.jsonl, read and checked lazily (`medbft.results.trace_rows`; a
    damaged file raises RunFileError naming it)."""
    path = directory / "trace.jsonl"
    if not path.exists():
        raise TraceError(f"{path}: no trace; run the scenario with `medbft run --trace`")
    return trace_rows(path)


def _roles(directory: Path) -> dict[str, str]:
    """Node id -> role from the run's scenario copy (clients: client)."""
    path = directory / "scenario.yaml"
    if not path.exists():
        return {}
    return {str(nd["id"]): str(nd.get("role", ""))
            for nd in read_scenario_copy(path).get("nodes", [])}


def request_window(directory: Path, key: str | None) -> tuple[int, int]:
    """[submit, reply] of request `key` (client/session/timestamp) from requests.csv, or of the
    first committed request when `key` is None."""
    path = directory / "requests.csv"
    if not path.exists():
        raise TraceError(f"{path}: missing; expected a directory written by `medbft run`")
    for row in read_requests(path):
        if row.commit_s is None:
            continue
        this = f"{row.client}/{row.session}/{row.timestamp}"
        if key is None or this == key:  # up to, not including, the reply's arrival
            return round(row.submit_s * 1e9), round(row.commit_s * 1e9) - 1
    if key is None:
        raise TraceError(f"{path}: no request committed in this run; pick a window with "
                         f"--from and --to")
    raise TraceError(f"{path}: no committed request {key!r}; keys look like client-1/0/1")


def load_sequence(directory: str | Path, start_ns: int, end_ns: int,
                  nodes: list[str] | None = None, max_messages: int = 400) -> Excerpt:
    """The messages sent and the protocol events in [start_ns, end_ns] (of `nodes` only, when
    given), at most `max_messages` messages. Raises TraceError."""
    root = Path(directory)
    return excerpt_from_rows(_read_trace(root), _roles(root), start_ns, end_ns, nodes,
                             max_messages, source=root / "trace.jsonl")


def excerpt_from_rows(rows: Iterable[dict[str, Any]], roles: dict[str, str], start_ns: int,
                      end_ns: int, nodes: list[str] | None = None, max_messages: int = 400,
                      source: Path | str = "trace") -> Excerpt:
    """`load_sequence` on trace rows already in memory (in time order), with `roles` (node id
    -> role). The studio narrates the rows of a run in progress this way. Raises TraceError."""
    if end_ns < start_ns:
        raise TraceError(f"the window ends ({end_ns / 1e6:g} ms) before it starts "
                         f"({start_ns / 1e6:g} ms)")
    wanted = set(nodes) if nodes else None
    messages: list[Sent] = []
    steps: list[Step] = []
    truncated = 0
    crashed_at: dict[str, int] = {}
    down: dict[str, list[tuple[int, int]]] = {}
    for row in rows:
        t = int(row["t"])
        if t > end_ns:
            break  # rows come in time order: the rest is after the window
        if row["event"] in ("crash", "recover"):
            node = str(row["node"])
            if row["event"] == "crash":
                crashed_at.setdefault(node, max(t, start_ns))
            elif node in crashed_at:
                since = crashed_at.pop(node)
                if t >= start_ns:
                    down.setdefault(node, []).append((since, t))
        if not start_ns <= t <= end_ns:
            continue
        if row["event"] == "send":
            src, dst = str(row["node"]), str(row["to"])
            if wanted is not None and not (src in wanted and dst in wanted):
                continue
            if len(messages) >= max_messages:
                truncated += 1
                continue
            if "arrive" not in row and not row.get("lost"):
                raise TraceError(f"{source}: written by an older medbft, whose "
                                 f"sends carry no arrival times; run the scenario again with "
                                 f"--trace")
            arrive = tuple(int(a) for a in row.get("arrive", ()))
            messages.append(Sent(t, src, dst, str(row["kind"]), arrive))
        elif row["event"] in EVENT_NOTES and row.get("node") not in (None, "*"):
            node = str(row["node"])
            if wanted is None or node in wanted:
                fields = {k: v for k, v in row.items() if k not in ("t", "node", "event")}
                steps.append(Step(t, node, str(row["event"]), fields))
    if not messages and not steps:
        raise TraceError(f"nothing happened between {start_ns / 1e6:g} ms and "
                         f"{end_ns / 1e6:g} ms" + (f" among {', '.join(nodes)}" if nodes else ""))
    for node, since in crashed_at.items():
        down.setdefault(node, []).append((since, end_ns))
    seen = [m.src for m in messages] + [m.dst for m in messages] + [s.node for s in steps]
    clients = sorted({p for p in seen if p not in roles})
    replicas = [nid for nid in roles if nid in seen]
    return Excerpt(start_ns, end_ns, clients + replicas, roles, messages, steps, truncated,
                   {k: v for k, v in sorted(down.items()) if wanted is None or k in wanted})


_INDENT = " " * 17
_WIDTH = 96


def _ms(t_ns: int) -> str:
    return f"{t_ns / 1e6:10.3f} ms"


def _fields(step: Step) -> str:
    f = step.fields
    parts = []
    if "seq" in f:
        parts.append(f"seq {f['seq']}")
    if "view" in f:
        parts.append(f"view {f['view']}")
    if isinstance(f.get("digest"), str):
        parts.append(f"digest {f['digest'][:8]}")
    if f.get("requests"):
        reqs = list(f["requests"])
        parts.append(", ".join(reqs[:3]) + (f" +{len(reqs) - 3}" if len(reqs) > 3 else ""))
    return " ".join(parts)


def _rounds(sent: list[Sent]) -> int:
    """How many multicasts the messages of one kind a party sent at one instant make (after a
    NEW-VIEW that carries 29 batches, a backup sends 29 rounds of PREPAREs at once)."""
    per_dst: dict[str, int] = {}
    for m in sent:
        per_dst[m.dst] = per_dst.get(m.dst, 0) + 1
    return max(per_dst.values())


def _step_lines(steps: list[Step]) -> list[tuple[int, str, str]]:
    """(t, text, event) per protocol event; one party's events of one kind at one instant
    (prepared at seq 33, 34, ... 61) become one line."""
    groups: dict[tuple[int, str, str], list[Step]] = {}
    for step in steps:
        groups.setdefault((step.t_ns, step.node, step.event), []).append(step)
    out = []
    for (t, node, event), group in groups.items():
        seqs = [g.fields["seq"] for g in group if "seq" in g.fields]
        if len(group) > 1 and len(seqs) == len(group):
            views = {g.fields["view"] for g in group if "view" in g.fields}
            detail = f"seq {min(seqs)}-{max(seqs)} ({len(group)} batches)" + (
                f" view {next(iter(views))}" if len(views) == 1 else "")
        else:
            detail = "; ".join(filter(None, (_fields(g) for g in group)))
        out.append((t, f"{node}: {event}" + (f" {detail}" if detail else ""), event))
    return out


def narration(ex: Excerpt) -> list[tuple[int, str, str]]:
    """(t_ns, text, what) per multicast (messages of one kind a party sent at one instant) and
    per protocol event, in time order; `what` is the message kind or event, the key of
    MESSAGE_NOTES or EVENT_NOTES that explains it (the replay page shows those beside it)."""
    groups: dict[tuple[int, str, str], list[Sent]] = {}
    for msg in ex.messages:
        groups.setdefault((msg.t_ns, msg.src, msg.kind), []).append(msg)
    # (t, 0 for an event / 1 for a send, order, text, what it is): at one instant a party's
    # event comes before what it sends because of it (prepared, then COMMIT)
    entries: list[tuple[int, int, int, str, str]] = []
    for t, text, event in _step_lines(ex.steps):
        entries.append((t, 0, len(entries), text, event))
    for (t, src, kind), msgs in groups.items():
        rounds = _rounds(msgs)
        lost = [m.dst for m in msgs if m.lost]
        arrivals = sorted(a for m in msgs for a in m.arrive_ns)
        dsts = list(dict.fromkeys(m.dst for m in msgs))
        text = f"{src} -> {', '.join(dsts)}: {kind}" + (f" x{rounds}" if rounds > 1 else "")
        if arrivals:
            first, last = arrivals[0] / 1e6, arrivals[-1] / 1e6
            text += (f" (arrives at {first:g} ms)" if first == last
                     else f" (arrives {first:g}-{last:g} ms)")
        if lost:
            text += f"; lost to {', '.join(lost)}"
        entries.append((t, 1, len(entries), text, kind))
    return [(t, text, what) for t, _, _, text, what in sorted(entries)]


def narrate(ex: Excerpt, explain: bool = True) -> list[str]:
    """One line per multicast (messages of one kind a party sent at one instant) and per
    protocol event, in time order; with `explain`, each kind is explained the first time."""
    told: set[str] = set()
    lines = []
    for t, text, what in narration(ex):
        lines.append(f"{_ms(t)}  {text}")
        note = MESSAGE_NOTES.get(what) or EVENT_NOTES.get(what)
        if explain and note and what not in told:
            told.add(what)
            lines += textwrap.wrap(f"({note})", width=_WIDTH, initial_indent=_INDENT,
                                   subsequent_indent=_INDENT + " ")
    if ex.truncated:
        lines.append(f"... and {ex.truncated} more messages (raise --max-messages or narrow "
                     f"the window)")
    return lines
