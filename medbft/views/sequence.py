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
from node.quorum import faults_tolerated, primary_of

__all__ = [
    "CAUSES",
    "EVENT_NOTES",
    "MESSAGE_NOTES",
    "Excerpt",
    "Sent",
    "Step",
    "TraceError",
    "cause_text",
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
    "accept": "the client accepted the result: f+1 matching REPLYs, so at least one is from a "
              "correct replica (4.1)",
}
#: Why a replica started a view change (the `cause` of its `view-change` trace row), said
#: after its line; {request} and {behavior} come from the row.
CAUSES = {
    "request-timer": "its timer for {request} expired",
    "new-view-timer": "no NEW-VIEW came in time",
    "f+1-view-changes": "f+1 replicas asked for a higher view",
    "inadmissible-pre-prepare": "the primary proposed an inadmissible request",
    "byzantine": "Byzantine ({behavior}): no cause",
}


def cause_text(fields: dict[str, Any]) -> str:
    """The cause of a view change in words ('' when the row has none: an older trace)."""
    cause = fields.get("cause")
    if not isinstance(cause, str):
        return ""
    text = CAUSES.get(cause, cause)
    if cause == "request-timer" and "request" not in fields:
        text = "its request timer expired"
    return text.format(request=fields.get("request", ""),
                       behavior=fields.get("behavior", "Byzantine"))


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
    arrive_ns: tuple[int, ...]  # empty: lost on the way; two: duplicated
    view: int | None = None
    seq: int | None = None
    digest: str = ""  # as sent to `dst` (an equivocator sends different ones)
    reason: str = ""  # why it was lost: loss, partition, isolated, crashed (the receiver)

    @property
    def lost(self) -> bool:
        """Not received: lost on the way, or it reached a crashed party (`reason` crashed,
        `arrive_ns` says when)."""
        return not self.arrive_ns or self.reason == "crashed"


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
    byzantine: dict[str, str] = field(default_factory=dict)
    """Replica -> its Byzantine behaviour, for those faulty at some time in the window."""
    primaries: list[tuple[int, int, str]] = field(default_factory=list)
    """(from when, view, primary): the view at the window's start, then each view entered."""
    f: int = 0
    cut_ns: int | None = None
    """--max-messages: nothing from this instant on is shown (`truncated` messages in
    `truncated_groups` multicasts were left out); None: nothing was cut."""
    truncated_groups: int = 0
    """How many multicasts (or lone sends) the `truncated` messages make."""

    @property
    def n(self) -> int:
        """The number of replicas (the scenario's nodes)."""
        return len(self.roles)


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
    given), at most `max_messages` messages: when more were sent, the excerpt stops before the
    first instant that would go beyond the cap, so no multicast is ever cut in the middle
    (`Excerpt.cut_ns`). Raises TraceError."""
    root = Path(directory)
    return excerpt_from_rows(_read_trace(root), _roles(root), start_ns, end_ns, nodes,
                             max_messages, source=root / "trace.jsonl")


def excerpt_from_rows(rows: Iterable[dict[str, Any]], roles: dict[str, str], start_ns: int,
                      end_ns: int, nodes: list[str] | None = None, max_messages: int = 400,
                      source: Path | str = "trace") -> Excerpt:
    """`load_sequence` on trace rows already in memory (in time order), with `roles` (node id
    -> role). The studio narrates the rows of a run in progress this way. Raises TraceError."""
    replicas = list(roles)
    if end_ns < start_ns:
        raise TraceError(f"the window ends ({end_ns / 1e6:g} ms) before it starts "
                         f"({start_ns / 1e6:g} ms)")
    wanted = set(nodes) if nodes else None
    messages: list[Sent] = []
    steps: list[Step] = []
    crashed_at: dict[str, int] = {}
    down: dict[str, list[tuple[int, int]]] = {}
    faulty: dict[str, str] = {}  # Byzantine now
    byzantine: dict[str, str] = {}  # Byzantine at some time in the window
    view = start_view = 0
    primaries: list[tuple[int, int, str]] = []
    cut_ns: int | None = None
    cut_sends: dict[tuple[int, str, str, str], int] = {}  # (t, src, kind, dst) -> copies
    truncated = 0
    last_arrival = end_ns  # the REPLYs of the window may be accepted after it ends
    for row in rows:
        t = int(row["t"])
        event = row["event"]
        if t > end_ns:
            if t > last_arrival or cut_ns is not None:
                break  # rows come in time order: the rest is after the window
            if event == "accept" and (wanted is None or row["node"] in wanted):
                steps.append(Step(t, str(row["node"]), "accept", _step_fields(row)))
            continue
        if event in ("crash", "recover"):
            node = str(row["node"])
            if event == "crash":
                crashed_at.setdefault(node, max(t, start_ns))
            elif node in crashed_at:
                since = crashed_at.pop(node)
                if t >= start_ns:
                    down.setdefault(node, []).append((since, t))
        elif event == "byzantine-begin":
            faulty[str(row["node"])] = str(row.get("label", "")).split(" ", 1)[-1]
        elif event == "byzantine-end":
            faulty.pop(str(row["node"]), None)
        elif event == "enter-view" and int(row.get("view", 0)) > view:
            view = int(row["view"])
            if t >= start_ns:
                primaries.append((t, view, str(row.get("primary", ""))))
        if t < start_ns:
            start_view = view
            continue
        byzantine.update(faulty)
        if event == "send":
            src, dst = str(row["node"]), str(row["to"])
            if wanted is not None and not (src in wanted and dst in wanted):
                continue
            if cut_ns is not None:  # left out: counted, by multicast, for the trailer
                truncated += 1
                _count(cut_sends, (t, src, str(row["kind"]), dst))
                continue
            if "arrive" not in row and not row.get("lost"):
                raise TraceError(f"{source}: written by an older medbft, whose "
                                 f"sends carry no arrival times; run the scenario again with "
                                 f"--trace")
            if len(messages) >= max_messages:
                # Cut before this instant: what it sends is left out whole.
                cut_ns = t
                kept = [m for m in messages if m.t_ns < t]
                for m in messages[len(kept):]:
                    _count(cut_sends, (m.t_ns, m.src, m.kind, m.dst))
                truncated += len(messages) - len(kept) + 1
                _count(cut_sends, (t, src, str(row["kind"]), dst))
                messages = kept
                steps = [st for st in steps if st.t_ns < t]
                continue
            sent = _sent(row, src, dst, t)
            messages.append(sent)
            if sent.kind == "REPLY" and sent.arrive_ns:
                last_arrival = max(last_arrival, *sent.arrive_ns)
        elif cut_ns is None and event in EVENT_NOTES and row.get("node") not in (None, "*"):
            node = str(row["node"])
            if wanted is None or node in wanted:
                steps.append(Step(t, node, str(event), _step_fields(row)))
    if not messages and not steps:
        if cut_ns is not None:
            raise TraceError(f"the first instant of the window ({cut_ns / 1e6:g} ms) alone "
                             f"has more than --max-messages {max_messages} messages; raise "
                             f"--max-messages")
        raise TraceError(f"nothing happened between {start_ns / 1e6:g} ms and "
                         f"{end_ns / 1e6:g} ms" + (f" among {', '.join(nodes)}" if nodes else ""))
    # A client's acceptance is shown with the REPLYs that made it (not one of an earlier
    # request that happens to fall in the window).
    replied = {(m.dst, a) for m in messages if m.kind == "REPLY" and not m.lost
               for a in m.arrive_ns}
    steps = [st for st in steps if st.event != "accept" or (st.node, st.t_ns) in replied]
    shown_end = end_ns if cut_ns is None else cut_ns
    for node, since in crashed_at.items():
        down.setdefault(node, []).append((since, shown_end))
    seen = [m.src for m in messages] + [m.dst for m in messages] + [s.node for s in steps]
    clients = sorted({p for p in seen if p not in roles})
    lanes = clients + [nid for nid in replicas if nid in seen]
    first = (start_ns, start_view,
             replicas[primary_of(start_view, len(replicas))] if replicas else "")
    return Excerpt(start_ns, end_ns, lanes, roles, messages, steps, truncated,
                   {k: [(a, b) for a, b in v if a < shown_end]
                    for k, v in sorted(down.items()) if wanted is None or k in wanted},
                   {k: v for k, v in sorted(byzantine.items()) if k in lanes},
                   [first, *[p for p in primaries if p[0] < shown_end]],
                   faults_tolerated(len(replicas)) if replicas else 0,
                   cut_ns, _multicasts(cut_sends))


def _count(counts: dict[tuple[int, str, str, str], int],
           key: tuple[int, str, str, str]) -> None:
    counts[key] = counts.get(key, 0) + 1


def _multicasts(counts: dict[tuple[int, str, str, str], int]) -> int:
    """How many multicasts the sends counted in `counts` make: per party, kind and instant,
    the most copies any one receiver got (as `_rounds` counts them; a lone send is one)."""
    rounds: dict[tuple[int, str, str], int] = {}
    for (t, src, kind, _), copies in counts.items():
        rounds[(t, src, kind)] = max(rounds.get((t, src, kind), 0), copies)
    return sum(rounds.values())


def _step_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("t", "node", "event")}


def _sent(row: dict[str, Any], src: str, dst: str, t: int) -> Sent:
    """A send row as a `Sent` (the view, seq and digest of traces written since 2026-12)."""
    view, seq = row.get("view"), row.get("seq")
    return Sent(t, src, dst, str(row["kind"]), tuple(int(a) for a in row.get("arrive", ())),
                int(view) if isinstance(view, int) else None,
                int(seq) if isinstance(seq, int) else None,
                str(row.get("digest", "")), str(row.get("reason", "")))


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
    if step.event == "accept":
        parts.append(f"{f.get('request', '')}, {f.get('replies', '?')} matching replies")
    cause = cause_text(f)
    if cause:
        parts.append(f"({cause})")
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


def _versions(msgs: list[Sent]) -> str:
    """'; seq 41: digest e7d53dd2 to a and b, c1bb5298 to c' for each sequence number whose
    messages in `msgs` carry different digests to different receivers (an equivocator)."""
    by_seq: dict[int, dict[str, list[str]]] = {}
    for m in msgs:
        if m.digest and m.seq is not None:
            by_seq.setdefault(m.seq, {}).setdefault(m.digest, []).append(m.dst)
    return "".join(
        f"; seq {seq}: digest " + ", ".join(f"{d[:8]} to {' and '.join(dict.fromkeys(to))}"
                                          for d, to in by_digest.items())
        for seq, by_digest in by_seq.items() if len(by_digest) > 1)


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
        lost = list(dict.fromkeys(m.dst + (" (crashed)" if m.reason == "crashed" else "")
                                  for m in msgs if m.lost))
        arrivals = sorted(a for m in msgs if not m.lost for a in m.arrive_ns)
        dsts = list(dict.fromkeys(m.dst for m in msgs))
        text = f"{src} -> {', '.join(dsts)}: {kind}" + (f" x{rounds}" if rounds > 1 else "")
        if arrivals:
            first, last = arrivals[0] / 1e6, arrivals[-1] / 1e6
            text += (f" (arrives at {first:g} ms)" if first == last
                     else f" (arrives {first:g}-{last:g} ms)")
        if lost:
            text += f"; lost to {', '.join(lost)}"
        text += _versions(msgs)
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
    if ex.cut_ns is not None:
        lines.append(f"... cut at {ex.cut_ns / 1e6:.3f} ms by --max-messages: the "
                     f"{ex.truncated} messages ({ex.truncated_groups} multicasts) and the "
                     f"events from there to {ex.end_ns / 1e6:.3f} ms are not shown; raise "
                     f"--max-messages or narrow the window")
    return lines
