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

from medbft.views.sequence import Excerpt
from medbft.views.style import COLUMN_WIDTH_IN, PALETTE, ROLE_COLOURS, figure

__all__ = ["KIND_COLOURS", "sequence_chart"]

#: One colour per message kind of the normal case and of view changes; others are grey.
KIND_COLOURS = {
    "REQUEST": PALETTE["black"], "PRE-PREPARE": PALETTE["blue"], "PREPARE": PALETTE["green"],
    "COMMIT": PALETTE["orange"], "REPLY": PALETTE["purple"], "VIEW-CHANGE": PALETTE["vermillion"],
    "NEW-VIEW": PALETTE["sky"], "CHECKPOINT": PALETTE["yellow"],
}
#: Marker of each protocol event drawn on a lane.
EVENT_MARKS = {
    "pre-prepare": ("o", "pre-prepared"), "prepared": ("D", "prepared"),
    "committed": ("s", "committed-local"), "execute": ("*", "executed"),
    "view-change": ("v", "view change"), "enter-view": ("^", "entered view"),
    "crash": ("X", "crashed"), "recover": ("P", "recovered"),
    "state-transfer": ("h", "state transferred"),
}


def sequence_chart(ex: Excerpt) -> Figure:
    """The chart of `ex`: lanes left to right in `ex.lanes` order, milliseconds down."""
    lanes = ex.lanes
    x = {party: i for i, party in enumerate(lanes)}
    span_ms = max(1e-3, (ex.end_ns - ex.start_ns) / 1e6)
    wide = len(lanes) > 5
    width = COLUMN_WIDTH_IN * (2 if wide else 1)
    instants = len({m.t_ns for m in ex.messages} | {s.t_ns for s in ex.steps})
    fig, ax = figure(min(8.0, 2.4 + 0.22 * instants))
    fig.set_size_inches(width, fig.get_size_inches()[1])
    for party, i in x.items():
        colour = ROLE_COLOURS.get(ex.roles.get(party, "client"), PALETTE["grey"])
        ax.axvline(i, color=colour, linewidth=1.2, alpha=0.7, zorder=1)
        for since, until in ex.down.get(party, ()):  # crashed: a hatched stretch of lane
            ax.fill_betweenx([(since - ex.start_ns) / 1e6, (until - ex.start_ns) / 1e6],
                             i - 0.08, i + 0.08, color=PALETTE["vermillion"], alpha=0.25,
                             linewidth=0, zorder=2)
    kinds: dict[str, str] = {}
    paths: dict[tuple[str, str, int, int], list[str]] = {}
    for msg in ex.messages:
        if msg.src not in x or msg.dst not in x:
            continue
        colour = KIND_COLOURS.get(msg.kind, PALETTE["grey"])
        kinds.setdefault(msg.kind, colour)
        t0 = (msg.t_ns - ex.start_ns) / 1e6
        x0, x1 = x[msg.src], x[msg.dst]
        if msg.lost:  # half way, then a cross
            xm, tm = (x0 + x1) / 2, t0 + span_ms * 0.03
            ax.annotate("", xy=(xm, tm), xytext=(x0, t0), arrowprops=_arrow(colour, "--"))
            ax.plot([xm], [tm], marker="x", color=PALETTE["vermillion"], markersize=4, zorder=4)
            continue
        for arrive in msg.arrive_ns:
            t1 = (arrive - ex.start_ns) / 1e6
            path = (msg.src, msg.dst, msg.t_ns, arrive)
            bends = paths.setdefault(path, [])
            if msg.kind not in bends:  # another kind on the same path bends aside
                bends.append(msg.kind)
            ax.annotate("", xy=(x1, t1), xytext=(x0, t0),
                        arrowprops=_arrow(colour, "-", 0.15 * bends.index(msg.kind)))
    marks: dict[str, tuple[str, str]] = {}
    stacked: dict[tuple[str, int], int] = {}  # several events at one instant sit side by side
    drawn: set[tuple[str, int, str]] = set()  # one mark per party, instant and event
    for step in ex.steps:
        mark = EVENT_MARKS.get(step.event)
        if mark is None or step.node not in x or (step.node, step.t_ns, step.event) in drawn:
            continue
        drawn.add((step.node, step.t_ns, step.event))
        marks.setdefault(step.event, mark)
        k = stacked[(step.node, step.t_ns)] = stacked.get((step.node, step.t_ns), -1) + 1
        ax.plot([x[step.node] + 0.14 * k], [(step.t_ns - ex.start_ns) / 1e6], marker=mark[0],
                color="white", markeredgecolor=PALETTE["black"], markeredgewidth=0.6,
                markersize=4.5, linestyle="none", zorder=5)
    ax.set_xlim(-0.5, len(lanes) - 0.5)
    ax.set_ylim(span_ms * 1.02, -span_ms * 0.02)
    ax.set_xticks(range(len(lanes)))
    ax.set_xticklabels(lanes, rotation=30 if wide else 20, ha="left")
    ax.xaxis.tick_top()
    ax.set_xlabel("party")
    ax.xaxis.set_label_position("top")
    ax.grid(axis="x", visible=False)
    ax.set_ylabel(f"time (ms) after {ex.start_ns / 1e6:g} ms")
    handles: list[Any] = [Line2D([], [], color=c, label=k) for k, c in kinds.items()]
    handles += [Line2D([], [], marker=m, color="white", markeredgecolor=PALETTE["black"],
                       markeredgewidth=0.6, markersize=4.5, linestyle="none", label=label)
                for m, label in marks.values()]
    if ex.down:
        handles.append(Patch(color=PALETTE["vermillion"], alpha=0.25, label="crashed"))
    if any(msg.lost for msg in ex.messages):
        handles.append(Line2D([], [], marker="x", color=PALETTE["vermillion"],
                              linestyle="none", label="lost"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=4 if wide else 3)
    return fig


def _arrow(colour: str, style: str, bend: float = 0.0) -> dict[str, Any]:
    return {"arrowstyle": "-|>", "color": colour, "linewidth": 0.6, "linestyle": style,
            "shrinkA": 0, "shrinkB": 0, "mutation_scale": 5,
            "connectionstyle": f"arc3,rad={bend:g}"}
