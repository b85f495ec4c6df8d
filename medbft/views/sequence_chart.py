"""The message sequence chart: one vertical lane per party, time running down, an arrow per
message from its send to its arrival, protocol events as marks on the lanes.

Why this exists: the picture of PBFT every course draws (Castro & Liskov, OSDI '99, Figure 1),
drawn from a real run rather than by hand, so a teacher can show the normal case, then the
same picture with a crashed primary and the view change that follows. The data comes from
`medbft.views.sequence` (a window of a run's trace); nothing here reads files.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from medbft.views.sequence import Excerpt, cause_text
from medbft.views.style import COLUMN_WIDTH_IN, PALETTE, ROLE_COLOURS, figure
from node.quorum import quorum, reply_quorum

__all__ = ["KIND_COLOURS", "forked", "lane_label", "quorum_notes", "sequence_chart"]

#: One colour per message kind of the normal case and of view changes; others are grey.
#: NEW-VIEW is wine (not an Okabe-Ito colour): next to the PRE-PREPAREs it re-proposes, the
#: palette's sky blue was too close to their blue.
KIND_COLOURS = {
    "REQUEST": PALETTE["black"], "PRE-PREPARE": PALETTE["blue"], "PREPARE": PALETTE["green"],
    "COMMIT": PALETTE["orange"], "REPLY": PALETTE["purple"], "VIEW-CHANGE": PALETTE["vermillion"],
    "NEW-VIEW": "#882255", "CHECKPOINT": PALETTE["yellow"],
}
#: Kinds drawn thicker: the rare messages a view change turns on.
THICK = {"VIEW-CHANGE", "NEW-VIEW"}
#: Marker of each protocol event drawn on a lane.
EVENT_MARKS = {
    "pre-prepare": ("o", "pre-prepared"), "prepared": ("D", "prepared"),
    "committed": ("s", "committed-local"), "execute": ("*", "executed"),
    "view-change": ("v", "view change"), "enter-view": ("^", "entered view"),
    "crash": ("X", "crashed"), "recover": ("P", "recovered"),
    "state-transfer": ("h", "state transferred"), "accept": ("p", "client accepted"),
}
#: Line styles that tell the versions of a forked sequence number apart (in order of
#: appearance); the first is the ordinary solid line.
DIGEST_STYLES: list[Any] = ["-", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]
BYZANTINE_COLOUR = PALETTE["purple"]
_NOTE = {"fontsize": 5, "zorder": 4.5,  # over the arrows, under the event marks
         "bbox": {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                  "alpha": 0.85}}


def forked(ex: Excerpt) -> dict[int, list[str]]:
    """seq -> its digests in order of appearance, for the sequence numbers whose PRE-PREPAREs,
    PREPAREs or COMMITs carry more than one digest in the excerpt (an equivocating primary)."""
    seen: dict[int, dict[str, None]] = {}
    for msg in ex.messages:
        if msg.seq is not None and msg.digest and msg.kind in ("PRE-PREPARE", "PREPARE",
                                                               "COMMIT"):
            seen.setdefault(msg.seq, {})[msg.digest] = None
    return {seq: list(ds) for seq, ds in sorted(seen.items()) if len(ds) > 1}


def quorum_notes(ex: Excerpt) -> dict[str, str]:
    """What each certificate took, for the first event of its kind in the chart."""
    n, f = ex.n, ex.f
    if not n:
        return {}
    q = quorum(n)
    textbook = n == 3 * f + 1
    prepares = f"2f = {q - 1}" if textbook else f"q - 1 = {q - 1}"
    commits = f"2f+1 = {q}" if textbook else f"q = {q}"
    return {"prepared": f"{prepares} PREPAREs → prepared",
            "committed": f"{commits} COMMITs → committed",
            "accept": f"f+1 = {reply_quorum(n)} matching REPLYs → accepted"}


def lane_label(ex: Excerpt, party: str) -> str:
    """The lane's name, with what it is at the window's start: the primary, Byzantine,
    crashed."""
    tags = []
    if ex.primaries and ex.primaries[0][2] == party:
        tags.append(f"primary v{ex.primaries[0][1]}")
    if party in ex.byzantine:
        tags.append(f"Byzantine ({ex.byzantine[party]})" if ex.byzantine[party]
                    else "Byzantine")
    if party in ex.down:
        tags.append("crashed")
    return "\n".join([party, *tags])


def sequence_chart(ex: Excerpt) -> Figure:
    """The chart of `ex`: lanes left to right in `ex.lanes` order, milliseconds down."""
    lanes = ex.lanes
    x = {party: i for i, party in enumerate(lanes)}
    shown_end = ex.end_ns if ex.cut_ns is None else ex.cut_ns
    span_ms = max(1e-3, (shown_end - ex.start_ns) / 1e6)
    forks = forked(ex)
    wide = len(lanes) > 5 or bool(forks)
    width = COLUMN_WIDTH_IN * (2 if wide else 1)
    instants = len({m.t_ns for m in ex.messages} | {s.t_ns for s in ex.steps})
    fig, ax = figure(min(8.0, 2.6 + 0.22 * instants + (0.3 if forks else 0.0)))
    fig.set_size_inches(width, fig.get_size_inches()[1])

    def y(t_ns: int) -> float:
        return (t_ns - ex.start_ns) / 1e6

    last = max([y(a) for m in ex.messages for a in m.arrive_ns] + [span_ms])

    for party, i in x.items():
        byz = party in ex.byzantine
        colour = BYZANTINE_COLOUR if byz else ROLE_COLOURS.get(ex.roles.get(party, "client"),
                                                               PALETTE["grey"])
        ax.axvline(i, color=colour, linewidth=2.4 if byz else 1.2, alpha=0.7, zorder=1,
                   linestyle=(0, (4, 1.5)) if byz else "-", gid="lane-byzantine" if byz else None)
        for since, until in ex.down.get(party, ()):  # crashed: a shaded stretch of lane
            bottom = last if until >= shown_end else y(until)  # still down: to the bottom
            ax.fill_betweenx([y(since), bottom], i - 0.08, i + 0.08,
                             color=PALETTE["vermillion"], alpha=0.25, linewidth=0, zorder=2,
                             gid="lane-crashed")
    for t, view, primary in ex.primaries[1:]:  # the primary of each view entered
        if primary in x:
            ax.annotate(f"primary v{view}", (x[primary], y(t)), xytext=(3, -2),
                        textcoords="offset points", ha="left", va="top", gid="primary-label",
                        color=PALETTE["black"], **_NOTE)
    styles = {d: DIGEST_STYLES[k % len(DIGEST_STYLES)]
              for ds in forks.values() for k, d in enumerate(ds)}
    kinds: dict[str, str] = {}
    paths: dict[tuple[str, str, int, int], list[str]] = {}
    labelled: set[tuple[str, str]] = set()
    for msg in ex.messages:
        if msg.src not in x or msg.dst not in x:
            continue
        colour = KIND_COLOURS.get(msg.kind, PALETTE["grey"])
        kinds.setdefault(msg.kind, colour)
        width_ = 1.1 if msg.kind in THICK else 0.6
        t0 = y(msg.t_ns)
        x0, x1 = x[msg.src], x[msg.dst]
        if not msg.arrive_ns:  # lost on the way: half way, then a cross
            xm, tm = (x0 + x1) / 2, t0 + span_ms * 0.03
            ax.annotate("", xy=(xm, tm), xytext=(x0, t0), arrowprops=_arrow(colour, "--"),
                        gid="lost")
            ax.plot([xm], [tm], marker="x", color=PALETTE["vermillion"], markersize=4, zorder=4)
            continue
        style = styles.get(msg.digest, "-") if msg.seq in forks else "-"
        for arrive in msg.arrive_ns:
            t1 = y(arrive)
            if msg.lost:  # it reached a crashed party: dashed, ending in a cross
                ax.plot([x0, x1], [t0, t1], color=colour, linewidth=0.6, linestyle="--",
                        zorder=3, gid="lost")
                ax.plot([x1], [t1], marker="x", color=PALETTE["vermillion"], markersize=4,
                        zorder=4)
                continue
            path = (msg.src, msg.dst, msg.t_ns, arrive)
            bends = paths.setdefault(path, [])
            if msg.kind not in bends:  # another kind on the same path bends aside
                bends.append(msg.kind)
            ax.annotate("", xy=(x1, t1), xytext=(x0, t0),
                        arrowprops=_arrow(colour, style, 0.15 * bends.index(msg.kind), width_),
                        gid=f"msg-{msg.kind}")
            if (msg.seq in forks and msg.kind == "PRE-PREPARE"
                    and (msg.dst, msg.digest) not in labelled):
                labelled.add((msg.dst, msg.digest))
                ax.annotate(msg.digest[:8], (x1, t1), xytext=(-2, 2),
                            textcoords="offset points", ha="right", va="bottom",
                            color=colour, gid="digest-label", **_NOTE)
    marks: dict[str, tuple[str, str]] = {}
    stacked: dict[tuple[str, int], int] = {}  # several events at one instant sit side by side
    drawn: set[tuple[str, int, str]] = set()  # one mark per party, instant and event
    notes = quorum_notes(ex)
    noted: set[str] = set()
    for step in ex.steps:
        mark = EVENT_MARKS.get(step.event)
        if mark is None or step.node not in x or (step.node, step.t_ns, step.event) in drawn:
            continue
        drawn.add((step.node, step.t_ns, step.event))
        marks.setdefault(step.event, mark)
        k = stacked[(step.node, step.t_ns)] = stacked.get((step.node, step.t_ns), -1) + 1
        px, py = x[step.node] + 0.14 * k, y(step.t_ns)
        ax.plot([px], [py], marker=mark[0], color="white", markeredgecolor=PALETTE["black"],
                markeredgewidth=0.6, markersize=4.5, linestyle="none", zorder=5,
                gid=f"event-{step.event}")
        text = ""
        if step.event in notes and step.event not in noted and step.node not in ex.byzantine:
            noted.add(step.event)
            text, gid = notes[step.event], "quorum-note"
        elif step.event == "view-change" and cause_text(step.fields) and (
                "view-change:" + str(step.fields.get("cause"))) not in noted:
            noted.add("view-change:" + str(step.fields.get("cause")))
            text, gid = f"view change: {cause_text(step.fields)}", "cause-note"
        elif (step.event == "execute" and step.fields.get("seq") in forks
              and step.node not in ex.byzantine):  # which honest replica executed which
            ax.annotate(f"executed\n{str(step.fields.get('digest', ''))[:8]}", (px, py),
                        xytext=(0, -5), textcoords="offset points", ha="center", va="top",
                        gid="fork-note", **_NOTE)
        if text and step.event == "accept":  # beside the mark: nothing else is on its lane
            ax.annotate(text, (px, py), xytext=(4, 0), textcoords="offset points",
                        ha="left", va="center", gid=gid, **_NOTE)
        elif text:  # under the mark: the other replicas' marks of the instant stay visible
            i = x[step.node]
            ax.annotate(text, (px, py), xytext=(0, -5), textcoords="offset points",
                        ha="left" if i == 0 else "right" if i == len(lanes) - 1 else "center",
                        va="top", gid=gid, **_NOTE)
    if ex.cut_ns is not None:
        ax.axhline(y(ex.cut_ns), color=PALETTE["black"], linewidth=0.6, linestyle=(0, (1, 1)),
                   zorder=6, gid="cut")
        ax.annotate(f"cut: {ex.truncated} more messages ({ex.truncated_groups} multicasts) to "
                    f"{ex.end_ns / 1e6:g} ms not drawn", (0.5, y(ex.cut_ns)),
                    xycoords=("axes fraction", "data"), xytext=(0, -2),
                    textcoords="offset points", ha="center", va="top", gid="cut-note",
                    **_NOTE)
    ax.set_xlim(-0.5, len(lanes) - 0.5)
    ax.set_ylim(last * 1.02 + (span_ms * 0.06 if ex.cut_ns is not None else 0.0),
                -span_ms * 0.02)  # room for the cut's note under its line
    ax.set_xticks(range(len(lanes)))
    ax.set_xticklabels([lane_label(ex, p) for p in lanes], rotation=30 if wide else 20,
                       ha="left")
    for tick, party in zip(ax.get_xticklabels(), lanes, strict=True):
        if party in ex.byzantine:
            tick.set_color(BYZANTINE_COLOUR)
            tick.set_fontweight("bold")
    ax.xaxis.tick_top()
    ax.set_xlabel("party")
    ax.xaxis.set_label_position("top")
    ax.grid(axis="x", visible=False)
    ax.set_ylabel(f"time (ms) after {ex.start_ns / 1e6:g} ms")
    handles: list[Any] = [Line2D([], [], color=c, label=k,
                                 linewidth=1.1 if k in THICK else 0.8)
                          for k, c in kinds.items()]
    handles += [Line2D([], [], marker=m, color="white", markeredgecolor=PALETTE["black"],
                       markeredgewidth=0.6, markersize=4.5, linestyle="none", label=label)
                for m, label in marks.values()]
    for seq, digests in forks.items():
        handles += [Line2D([], [], color=PALETTE["black"], linewidth=0.8, linestyle=styles[d],
                           label=f"seq {seq}: digest {d[:8]}") for d in digests]
    if ex.byzantine:
        handles.append(Line2D([], [], color=BYZANTINE_COLOUR, linewidth=2.0,
                              linestyle=(0, (4, 1.5)), label="Byzantine lane"))
    if ex.down:
        handles.append(Patch(color=PALETTE["vermillion"], alpha=0.25, label="crashed"))
    if any(msg.lost for msg in ex.messages):
        handles.append(Line2D([], [], marker="x", color=PALETTE["vermillion"],
                              linestyle="--", linewidth=0.6, label="lost"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=4 if wide else 3)
    return fig


def _arrow(colour: str, style: Any, bend: float = 0.0, width: float = 0.6) -> dict[str, Any]:
    return {"arrowstyle": "-|>", "color": colour, "linewidth": width, "linestyle": style,
            "shrinkA": 0, "shrinkB": 0, "mutation_scale": 5,
            "connectionstyle": f"arc3,rad={bend:g}"}
