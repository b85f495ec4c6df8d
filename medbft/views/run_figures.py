"""The figures of one run, drawn from its saved results directory (`medbft.results.RunData`).

Why this exists: a reader of a run wants to see it: throughput and latency over time with the
faults and view changes that explain them, the latency distribution, where in PBFT the time
goes, who carries the O(n^2) message load, CPU load, and the network itself. Each figure is a
function `RunData -> Figure | None` (None: the run has no data for it, e.g. no CPU model), so
tests can inspect the artists' data against the CSV it came from. The data artists carry a
`gid` ("throughput", "latency", "cdf", "p50" ...) for that purpose.
"""

from __future__ import annotations

import bisect
import math
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from medbft.metrics import percentile
from medbft.results import RunData, RunFileError
from medbft.timeline import PHASES, FaultRow, ViewRow
from medbft.views import fault_windows, may_fork
from medbft.views.style import (
    DEFAULT_FORMATS,
    FAULT_COLOURS,
    FAULT_CYCLE,
    PALETTE,
    ROLE_COLOURS,
    figure,
    nice_step,
    save,
    style,
    wants_log,
)

__all__ = ["CAPTIONS", "FIGURES", "NEEDS", "NotDrawn", "bin_edges", "draw_run", "histogram",
           "roles_of"]

#: Order in which message types are listed (protocol order); others follow by name.
MESSAGE_ORDER = ("REQUEST", "PRE-PREPARE", "PREPARE", "COMMIT", "REPLY", "CHECKPOINT",
                 "VIEW-CHANGE", "NEW-VIEW", "FETCH-BATCH", "BATCH-DATA", "FETCH-STATE",
                 "STATE-DATA")
PHASE_COLOURS = {"request": PALETTE["sky"], "prepare": PALETTE["blue"],
                 "commit": PALETTE["green"], "reply": PALETTE["orange"]}
THROUGHPUT_BINS, PHASE_BINS = 50, 20
MAX_VIEW_LABELS = 6


# -- shared helpers --------------------------------------------------------------------------


def run_end_s(data: RunData) -> float:
    """The x range of time plots: the whole run, drain included."""
    return max(float(data.summary.get("sim_time_s") or 0.0),
               float(data.summary.get("duration_s") or 0.0))


def bin_edges(end_s: float, step_s: float) -> list[float]:
    """Edges 0, step, 2*step ... up to the first edge >= end (at least one bin)."""
    count = max(1, math.ceil(end_s / step_s - 1e-9))
    return [round(i * step_s, 9) for i in range(count + 1)]


def histogram(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Counts per bin [edge_i, edge_i+1); values at or past the last edge go in the last bin."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        i = min(max(bisect.bisect_right(edges, v) - 1, 0), len(counts) - 1)
        counts[i] += 1
    return counts


def roles_of(data: RunData) -> dict[str, str]:
    """Endpoint id -> role ('client' for clients), from the saved scenario."""
    if not data.scenario:
        return {}
    roles = {nd["id"]: nd["role"] for nd in data.scenario.get("nodes", [])}
    clients = int((data.scenario.get("workload") or {}).get("clients", 1))
    roles.update({f"client-{i}": "client" for i in range(1, clients + 1)})
    return roles


def _duration_label(step_s: float) -> str:
    return f"{step_s * 1e3:g} ms" if step_s < 1 else f"{step_s:g} s"


def _fault_groups(faults: Sequence[FaultRow]) -> list[tuple[str, float, float | None, str]]:
    """Windows with the same kind and interval merged into one label, in time order."""
    groups: dict[tuple[str, float, float | None], list[str]] = {}
    for w in faults:
        groups.setdefault((w.kind, w.start_s, w.end_s), []).append(w.label or w.target)
    return sorted(((kind, start, end, ", ".join(labels))
                   for (kind, start, end), labels in groups.items()),
                  key=lambda g: (g[1], math.inf if g[2] is None else g[2]))


def _window_colours(groups: Sequence[tuple[str, float, float | None, str]]) -> list[str]:
    """One colour per window: the first window of a kind takes the kind's colour, the next
    ones the other palette colours in turn, so overlapping windows stay apart."""
    used: set[str] = set()
    out: list[str] = []
    for kind, *_ in groups:
        colour = FAULT_COLOURS.get(kind, PALETTE["grey"])
        if colour in used:
            colour = next((c for c in FAULT_CYCLE if c not in used),
                          FAULT_CYCLE[len(out) % len(FAULT_CYCLE)])
        used.add(colour)
        out.append(colour)
    return out


def _span_text(start: float, end: float | None) -> str:
    return f"{start:.3g}\u2013{end:.3g} s" if end is not None else f"from {start:.3g} s"


def shade_faults(ax: Axes, faults: Sequence[FaultRow] | None, end_s: float) -> list[Any]:
    """Shade each fault window in its own colour and tag it with a number just inside the
    top of the axes; return one legend handle per window ("1  pharmacy-1 crashed, 2-5 s").

    The labels live in the legend, where they cannot overflow the axes or run into each
    other however the windows overlap; the in-axes number ties a shade to its entry."""
    groups = _fault_groups(faults or ())
    handles: list[Any] = []
    rows: list[float] = []  # x where the last tag of each row of tags ends (axes fraction)
    width = end_s or 1.0  # the time axes run from 0 to end_s
    for i, ((_kind, start, end, label), colour) in enumerate(
            zip(groups, _window_colours(groups), strict=True)):
        stop = end_s if end is None else end
        ax.axvspan(start, stop, color=colour, alpha=0.22, lw=0, gid=f"fault-{i}")
        ax.axvline(start, color=colour, lw=0.8, alpha=0.9)
        x = min(max(start / width, 0.0), 0.96)
        row = next((r for r, last in enumerate(rows) if x > last), len(rows))
        if row == len(rows):
            rows.append(0.0)
        rows[row] = x + 0.04
        ax.text(x, 0.98 - 0.09 * (row % 4), f"{i + 1}", transform=ax.transAxes,
                fontsize=5.5, fontweight="bold", va="top", ha="left", color="0.1",
                clip_on=True, gid=f"fault-tag-{i}",
                bbox={"boxstyle": "round,pad=0.15", "fc": colour, "ec": "none",
                      "alpha": 0.55})
        handles.append(Patch(color=colour, alpha=0.45,
                             label=f"{i + 1}  {label}, {_span_text(start, end)}"))
    return handles


def mark_recoveries(ax: Axes, data: RunData, faults: Sequence[FaultRow] | None) -> list[Any]:
    """Near the bottom of the axes: a triangle where a crashed replica recovered (the end of
    its crash window, or a `recover` event) and a star where a replica installed a state
    transferred from its peers (events.csv; a real cluster's folder has no times for them)."""
    events = data.events or []
    recovered = sorted({t for t, _, ev in events if ev == "recover"}
                       | {w.end_s for w in faults or () if w.kind == "crash"
                          and w.end_s is not None})
    transfers = sorted(t for t, _, ev in events if ev == "state-transfer")
    handles: list[Any] = []
    for xs, gid, marker, y, colour, label in (
            (recovered, "recover", "^", 0.04, PALETTE["green"], "replica recovered"),
            (transfers, "state-transfer", "*", 0.13, PALETTE["black"],
             "state transfer installed")):
        if not xs:
            continue
        style = {"ls": "none", "marker": marker, "ms": 7 if marker == "*" else 5,
                 "mec": "white" if marker == "*" else "0.2", "mew": 0.4, "color": colour}
        ax.plot(xs, [y] * len(xs), transform=ax.get_xaxis_transform(), clip_on=False,
                zorder=5, gid=gid, **style)  # type: ignore[arg-type]
        handles.append(Line2D([], [], label=f"{label} ({len(xs)})",
                              **style))  # type: ignore[arg-type]
    return handles


def mark_views(ax: Axes, views: Sequence[ViewRow] | None) -> list[Line2D]:
    """Dashed line where a new view was entered, a tick where its VIEW-CHANGE started."""
    handles: list[Line2D] = []
    views = list(views or ())
    entered = [(v.view, v.entered_s) for v in views if v.entered_s is not None]
    for view, at_s in entered:
        ax.axvline(at_s, color="0.2", ls="--", lw=0.7, gid=f"view-{view}")
        if len(entered) <= MAX_VIEW_LABELS:
            ax.text(at_s, 1.0, f" v{view}", transform=ax.get_xaxis_transform(),
                    fontsize=5.5, va="bottom", ha="left", color="0.2", clip_on=False)
    if entered:
        handles.append(Line2D([], [], color="0.2", ls="--", lw=0.7, label="new view entered"))
    started = [v.view_change_s for v in views if v.view_change_s is not None]
    if started:
        ax.plot(started, [1.0] * len(started), transform=ax.get_xaxis_transform(), ls="none",
                marker="v", ms=3.5, color="0.2", clip_on=False, gid="view-change")
        handles.append(Line2D([], [], ls="none", marker="v", ms=3.5, color="0.2",
                              label="VIEW-CHANGE sent"))
    return handles


def shade_drain(ax: Axes, data: RunData) -> list[Patch]:
    """Hatch the drain: after `duration` clients submit nothing new, so throughput falls."""
    duration, end = float(data.summary.get("duration_s") or 0), run_end_s(data)
    if end <= duration:
        return []
    ax.axvspan(duration, max(end, ax.get_xlim()[1]), facecolor="none", edgecolor="0.75",
               hatch="////", lw=0, gid="drain")
    return [Patch(facecolor="none", edgecolor="0.6", hatch="////", lw=0,
                  label="drain (clients stopped)")]


#: Legend text longer than this (characters) takes the whole width; longer than WRAP, it wraps.
LEGEND_COLUMN_CHARS, LEGEND_WRAP_CHARS = 34, 62
#: Height added to a figure per legend line beyond the first two (inches): a long legend
#: grows the figure instead of squeezing the axes.
LEGEND_LINE_IN = 0.125


def _legend_above(fig: Figure, handles: Sequence[Any], ncols: int = 2) -> None:
    """A legend above the axes, within the figure's width: long labels (fault windows) wrap
    and take one column, and the figure grows by the lines it adds."""
    if not handles:
        return
    labels = [str(h.get_label()) for h in handles]
    if any(len(label) > LEGEND_COLUMN_CHARS for label in labels):
        ncols = 1
    wrapped = [textwrap.fill(label, LEGEND_WRAP_CHARS, subsequent_indent="   ")
               for label in labels]
    per_entry = [w.count("\n") + 1 for w in wrapped]
    lines = sum(max(per_entry[i:i + ncols]) for i in range(0, len(per_entry), ncols))
    if lines > 2:
        fig.set_figheight(fig.get_figheight() + LEGEND_LINE_IN * (lines - 2))
    fig.legend(handles=list(handles), labels=wrapped, loc="outside upper center", ncols=ncols,
               handlelength=1.5, columnspacing=1.0)


def _headroom(ax: Axes, ys: Sequence[float], log: bool, fraction: float = 0.3) -> None:
    """Leave the top `fraction` of the axes free for the fault labels."""
    if log:
        ax.set_yscale("log")
    if not ys:
        return
    low, high = min(ys), max(ys)
    if log:
        span = math.log10(high) - math.log10(low)
        ax.set_ylim(low / 10 ** (0.05 * span), high * 10 ** (fraction * span / (1 - fraction)))
    else:
        ax.set_ylim(0, high / (1 - fraction) if high > 0 else 1.0)


def _time_axis(ax: Axes, data: RunData, end_s: float | None = None) -> None:
    ax.set_xlim(0, run_end_s(data) if end_s is None else end_s)
    ax.set_xlabel("time (s)")


# -- time series -----------------------------------------------------------------------------


def throughput(data: RunData) -> Figure:
    """Requests committed per window, divided by the window (req/s), over the whole run."""
    end = run_end_s(data)
    step = nice_step(end, THROUGHPUT_BINS)
    edges = bin_edges(end, step)
    commits = [r.commit_s for r in data.requests if r.commit_s is not None]
    rates = [c / step for c in histogram(commits, edges)]
    fig, ax = figure(2.3)
    line = ax.stairs(rates, edges, color=PALETTE["blue"], lw=1.0, gid="throughput",
                     label="throughput")
    faults = fault_windows(data)
    handles = [line, *shade_faults(ax, faults, edges[-1]), *mark_views(ax, data.views),
               *mark_recoveries(ax, data, faults)]
    _time_axis(ax, data, edges[-1])
    handles += shade_drain(ax, data)
    _headroom(ax, [*rates, 1.0], log=False)
    ax.set_ylabel(f"throughput (req/s)\nper {_duration_label(step)} window")
    _legend_above(fig, handles)
    return fig


def latency_over_time(data: RunData) -> Figure:
    """Each committed request's latency, placed at the time it was submitted."""
    done = [r for r in data.requests if r.latency_ms is not None]
    fig, ax = figure(2.3)
    xs = [r.submit_s for r in done]
    ys = [r.latency_ms for r in done if r.latency_ms is not None]
    ax.scatter(xs, ys, s=3, lw=0, color=PALETTE["blue"], alpha=0.7, rasterized=True,
               gid="latency", label="committed request")
    handles: list[Any] = [Line2D([], [], ls="none", marker="o", ms=2.5, color=PALETTE["blue"],
                                 label="committed request")]
    faults = fault_windows(data)
    handles += shade_faults(ax, faults, run_end_s(data)) + mark_views(ax, data.views)
    handles += mark_recoveries(ax, data, faults)
    _time_axis(ax, data)
    handles += shade_drain(ax, data)
    ax.set_xlabel("submitted at (s)")
    ax.set_ylabel("latency (ms)")
    _headroom(ax, ys, log=wants_log(ys))
    handles += _mark_unsettled(ax, [r.submit_s for r in data.requests if r.latency_ms is None])
    if not ys:
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.45, "no request committed", transform=ax.transAxes, ha="center",
                va="center", color="0.3")
    _legend_above(fig, handles)
    return fig


def _mark_unsettled(ax: Axes, submits: Sequence[float]) -> list[Line2D]:
    """Requests that never committed: an x near the top, at the time they were submitted."""
    if not submits:
        return []
    style = {"ls": "none", "marker": "x", "ms": 3, "mew": 0.8, "color": PALETTE["vermillion"]}
    ax.plot(submits, [0.88] * len(submits), transform=ax.get_xaxis_transform(),
            gid="unsettled", **style)  # type: ignore[arg-type]
    return [Line2D([], [], label=f"never committed ({len(submits)})", **style)]  # type: ignore[arg-type]


#: A latency value holding at least this share of the requests is labelled on the CDF.
ATOM_SHARE = 0.05
MAX_ATOM_LABELS = 3


def _cdf_limits(low: float, high: float, log: bool) -> tuple[float, float]:
    """x limits with room on both sides, so a jump at the smallest or largest value (all of
    them, for constant links) is drawn inside the axes, not along its edge."""
    if log:
        return low / 1.3, high * 1.3
    span = high - low
    pad = 0.08 * span if span > 1e-9 * max(1.0, high) else 0.2 * max(abs(high), 1e-3)
    return max(0.0, low - pad) if low >= 0 else low - pad, high + pad


def latency_cdf(data: RunData) -> Figure | None:
    """Empirical CDF of request latency, with p50, p95 and p99 marked, the support (smallest
    to largest latency) shaded and each value that holds many requests labelled: a constant
    latency is one labelled jump from 0 to 1, not a curve hidden under the percentile lines."""
    ys = sorted(r.latency_ms for r in data.requests if r.latency_ms is not None)
    if not ys:
        return None
    fig, ax = figure(2.3)
    log = wants_log(ys)
    lo, hi = _cdf_limits(ys[0], ys[-1], log)
    fractions = [(i + 1) / len(ys) for i in range(len(ys))]
    ax.axvspan(ys[0], ys[-1], color=PALETTE["sky"], alpha=0.12, lw=0, gid="support")
    ax.plot([lo, ys[0]], [0.0, 0.0], [ys[-1], hi], [1.0, 1.0], color=PALETTE["blue"],
            lw=1.2, gid="cdf-tails")
    ax.step([ys[0], *ys], [0.0, *fractions], where="post", color=PALETTE["blue"], lw=1.4,
            zorder=4, gid="cdf", label=f"{len(ys)} requests")
    marks: dict[float, list[int]] = {}
    for p in (50, 95, 99):
        marks.setdefault(percentile(ys, p), []).append(p)
    styles = {50: ("-", PALETTE["green"]), 95: ("--", PALETTE["orange"]),
              99: (":", PALETTE["vermillion"])}
    for value, ps in marks.items():
        ls, colour = styles[ps[0]]
        name = " = ".join(f"p{p}" for p in ps)
        for p in ps:  # one line per percentile (gid p50 ...), drawn once where they coincide
            ax.axvline(value, ls=ls, lw=0.9, color=colour, gid=f"p{p}", zorder=3,
                       label=f"{name} = {value:.4g} ms" if p == ps[0] else None,
                       alpha=1.0 if p == ps[0] else 0.0)
    _label_atoms(ax, ys, lo, hi, log)
    if log:
        ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.02, 1.08)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of requests")
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Patch(color=PALETTE["sky"], alpha=0.3,
                         label=f"support {ys[0]:.4g}\u2013{ys[-1]:.4g} ms"
                         if ys[-1] > ys[0] else f"support: {ys[0]:.4g} ms only"))
    _legend_above(fig, handles)
    return fig


def _label_atoms(ax: Axes, ys: Sequence[float], lo: float, hi: float, log: bool) -> None:
    """Label the values that hold at least ATOM_SHARE of the requests (the jumps of the
    CDF): "50 ms: 200 of 201 (99.5 %)" beside the jump, halfway up it, on its roomier side."""
    scale: Callable[[float], float] = math.log10 if log else float
    counts: dict[float, int] = {}
    for y in ys:
        counts[y] = counts.get(y, 0) + 1
    atoms = sorted((c, v) for v, c in counts.items() if c / len(ys) >= ATOM_SHARE)
    below = 0
    cumulative = {}
    for v in sorted(counts):
        cumulative[v] = (below, below + counts[v])
        below += counts[v]
    for count, value in atoms[::-1][:MAX_ATOM_LABELS]:
        start, end = cumulative[value]
        middle = (start + end) / 2 / len(ys)
        right = scale(hi) - scale(value) >= scale(value) - scale(lo)
        ax.annotate(f"{value:.4g} ms: {count} of {len(ys)} ({100 * count / len(ys):.3g} %)",
                    (value, middle), xytext=(4 if right else -4, 0),
                    textcoords="offset points", ha="left" if right else "right",
                    va="center", fontsize=6, color="0.15", gid=f"atom-{value:g}",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none",
                          "alpha": 0.85})


def phases(data: RunData) -> Figure | None:
    """Mean time per PBFT phase of the requests submitted in each window, stacked."""
    if not data.phases:
        return None
    end = run_end_s(data)
    step = nice_step(end, PHASE_BINS)
    edges = bin_edges(end, step)
    bins: list[list[dict[str, float]]] = [[] for _ in edges[1:]]
    for row in data.phases:
        i = min(max(bisect.bisect_right(edges, row.submit_s) - 1, 0), len(bins) - 1)
        bins[i].append(row.durations_ms())
    used = [i for i, b in enumerate(bins) if b]
    centres = [edges[i] + step / 2 for i in used]
    fig, ax = figure(2.5)
    bottoms = [0.0] * len(used)
    every = [row.durations_ms() for row in data.phases]
    for name in PHASES:
        heights = [sum(d[name] for d in bins[i]) / len(bins[i]) for i in used]
        overall = sum(d[name] for d in every) / len(every)
        ax.bar(centres, heights, width=step * 0.85, bottom=bottoms, color=PHASE_COLOURS[name],
               lw=0, label=f"{name} ({overall:.3g} ms)", gid=f"phase-{name}")
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax.set_xlim(0, end)
    ax.set_xlabel(f"submitted at (s), {_duration_label(step)} windows")
    ax.set_ylabel("mean latency (ms)")
    ax.set_ylim(0, max(bottoms) * 1.05 if bottoms else 1)
    handles, _ = ax.get_legend_handles_labels()
    fig.legend(handles=handles, loc="outside upper center", ncols=2,
               title="phase (mean over the run)", title_fontsize=6.5)
    return fig


# -- load ------------------------------------------------------------------------------------


def _message_types(by_type: dict[str, int]) -> list[str]:
    known = [t for t in MESSAGE_ORDER if t in by_type]
    return known + sorted(t for t in by_type if t not in MESSAGE_ORDER)


def _byte_scale(max_bytes: float) -> tuple[float, str]:
    for factor, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if max_bytes >= factor:
            return factor, unit
    return 1.0, "B"


def _paired_bars(labels: Sequence[str], counts: Sequence[float], nbytes: Sequence[float],
                 colours: Sequence[str], what: str) -> Figure:
    """Two panels of horizontal bars sharing the label axis: messages and bytes."""
    fig, (left, right) = figure(0.75 + 0.16 * len(labels), 1, 2, sharey=True)
    ys = list(range(len(labels)))
    bars = left.barh(ys, counts, color=colours, height=0.7, gid=f"{what}-messages")
    left.bar_label(bars, fmt="%d", fontsize=5, padding=1.5)
    factor, unit = _byte_scale(max(nbytes, default=0))
    bars = right.barh(ys, [b / factor for b in nbytes], color=colours, height=0.7,
                      gid=f"{what}-bytes")
    right.bar_label(bars, fmt="%.3g", fontsize=5, padding=1.5)
    left.set_yticks(ys, labels)
    left.invert_yaxis()
    left.set_xlabel("messages sent")
    right.set_xlabel(f"bytes sent ({unit})")
    for ax in (left, right):
        ax.margins(x=0.22)
        ax.grid(axis="y", visible=False)
        ax.ticklabel_format(axis="x", style="plain")
        ax.tick_params(axis="x", labelrotation=30)
    return fig


def messages_by_type(data: RunData) -> Figure | None:
    """Messages and bytes put on the network, by message type."""
    msgs = data.summary.get("messages", {})
    types = _message_types(msgs.get("by_type", {}))
    if not types:
        return None
    return _paired_bars(types, [msgs["by_type"][t] for t in types],
                        [msgs["bytes_by_type"].get(t, 0) for t in types],
                        [PALETTE["blue"]] * len(types), "type")


def _endpoint_order(ids: Sequence[str], roles: dict[str, str]) -> list[str]:
    """Replicas in scenario order, then clients by number, then anything else."""
    order = {nid: i for i, nid in enumerate(roles)}
    return sorted(ids, key=lambda x: (order.get(x, len(order)), x))


def _role_legend(fig: Figure, roles: Sequence[str]) -> None:
    present = [r for r in ROLE_COLOURS if r in set(roles)]
    _legend_above(fig, [Patch(color=ROLE_COLOURS[r], label=r) for r in present], ncols=4)


def messages_by_node(data: RunData) -> Figure | None:
    """Messages and bytes sent by each replica and client, coloured by role."""
    msgs = data.summary.get("messages", {})
    roles = roles_of(data)
    nodes = _endpoint_order(list(msgs.get("by_node", {})), roles)
    if not nodes:
        return None
    colours = [ROLE_COLOURS.get(roles.get(n, ""), PALETTE["grey"]) for n in nodes]
    fig = _paired_bars(nodes, [msgs["by_node"][n] for n in nodes],
                       [msgs["bytes_by_node"].get(n, 0) for n in nodes], colours, "node")
    _role_legend(fig, [roles.get(n, "") for n in nodes])
    return fig


def cpu(data: RunData) -> Figure | None:
    """Per-replica CPU utilisation: busy virtual time / run time (only with a CPU model)."""
    util = (data.summary.get("cpu") or {}).get("utilisation")
    if not util:
        return None
    roles = roles_of(data)
    nodes = _endpoint_order(list(util), roles)
    fig, ax = figure(0.75 + 0.16 * len(nodes))
    ys = list(range(len(nodes)))
    ax.barh(ys, [100 * util[n] for n in nodes], height=0.7, gid="cpu",
            color=[ROLE_COLOURS.get(roles.get(n, ""), PALETTE["grey"]) for n in nodes])
    ax.set_yticks(ys, nodes)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("CPU utilisation (% of run time)")
    _role_legend(fig, [roles.get(n, "") for n in nodes])
    return fig


# -- topology --------------------------------------------------------------------------------


def _link_label(link: dict[str, Any]) -> str:
    parts = []
    lat = link.get("latency")
    if isinstance(lat, dict):
        parts.append(str(lat.get("value") or lat.get("mean") or lat.get("dist")))
    for key in ("bandwidth", "loss"):
        if key in link:
            parts.append(f"{key} {link[key]}")
    return ", ".join(parts)


def network_graph(data: RunData) -> nx.Graph:
    """The replicas and clients as a graph: every replica pair linked, each client to each
    replica; links the scenario overrides carry `label` (their latency, loss ...)."""
    roles = roles_of(data)
    g = nx.Graph()
    for nid, role in roles.items():
        g.add_node(nid, role=role)
    replicas = [n for n, r in roles.items() if r != "client"]
    for i, a in enumerate(replicas):
        for b in replicas[i + 1:]:
            g.add_edge(a, b, kind="replica")
    for c in (n for n, r in roles.items() if r == "client"):
        for b in replicas:
            g.add_edge(c, b, kind="client")
    for link in ((data.scenario or {}).get("network") or {}).get("links", []):
        a, b = link.get("between") or (link.get("from"), link.get("to"))
        if g.has_edge(a, b):
            g.edges[a, b]["label"] = _link_label(link)
    return g


def _marked_nodes(data: RunData) -> tuple[set[str], set[str]]:
    """(nodes that crashed at some point, nodes that were Byzantine at some point)."""
    faults = fault_windows(data) or []
    crashed = {w.target for w in faults if w.kind == "crash"}
    byz = set(data.summary.get("byzantine") or ())
    byz |= {w.target for w in faults if w.kind == "byzantine"}
    return crashed, byz


def network(data: RunData) -> Figure | None:
    """The network: replicas on a circle (view-0 primary at the top), clients inside."""
    if not data.scenario:
        return None
    g = network_graph(data)
    roles = nx.get_node_attributes(g, "role")
    replicas = [n for n in g if roles[n] != "client"]
    clients = [n for n in g if roles[n] == "client"]
    pos = _layout(replicas, clients)
    crashed, byz = _marked_nodes(data)
    fig, ax = figure(3.1 if len(replicas) <= 16 else 3.6)
    _draw_edges(ax, g, pos)
    for group, shape in ((replicas, "o"), (clients, "s")):
        honest = [n for n in group if n not in byz]
        for nodes, marker in ((honest, shape), ([n for n in group if n in byz], "D")):
            if not nodes:
                continue
            nx.draw_networkx_nodes(
                g, pos, nodelist=nodes, ax=ax, node_shape=marker,
                node_size=_node_size(len(replicas)) * (0.6 if roles[nodes[0]] == "client" else 1),
                node_color=[ROLE_COLOURS[roles[n]] for n in nodes],
                edgecolors=[PALETTE["vermillion"] if n in crashed else "white" for n in nodes],
                linewidths=[2.0 if n in crashed else 0.6 for n in nodes]).set_gid(
                f"nodes-{'byzantine' if marker == 'D' else shape}")
    _draw_labels(ax, g, pos, replicas, clients)
    ax.set_axis_off()
    ax.set_aspect("equal")
    ax.margins(0.18)
    _network_legend(fig, roles, crashed, byz, replicas)
    return fig


def _layout(replicas: Sequence[str], clients: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Replicas clockwise from the top (replica 0 = primary of view 0), clients on an inner
    circle (or the centre when there is one)."""
    pos: dict[str, tuple[float, float]] = {}
    for ring, radius in ((replicas, 1.0), (clients, 0.0 if len(clients) == 1 else 0.35)):
        for i, nid in enumerate(ring):
            angle = math.pi / 2 - 2 * math.pi * i / max(1, len(ring))
            pos[nid] = (radius * math.cos(angle), radius * math.sin(angle))
    return pos


def _node_size(n: int) -> float:
    return max(40.0, min(260.0, 2000.0 / n))


def _draw_edges(ax: Axes, g: nx.Graph, pos: dict[str, tuple[float, float]]) -> None:
    replica_edges = [(a, b) for a, b, k in g.edges(data="kind") if k == "replica"]
    client_edges = [(a, b) for a, b, k in g.edges(data="kind") if k == "client"]
    width = 0.6 if g.number_of_nodes() <= 12 else 0.3
    nx.draw_networkx_edges(g, pos, edgelist=replica_edges, ax=ax, width=width,
                           edge_color="0.55", alpha=0.8)
    nx.draw_networkx_edges(g, pos, edgelist=client_edges, ax=ax, width=0.4, style=":",
                           edge_color="0.7")
    special = {(a, b): lbl for a, b, lbl in g.edges(data="label") if lbl}
    if special:
        nx.draw_networkx_edges(g, pos, edgelist=list(special), ax=ax, width=1.6,
                               edge_color=PALETTE["black"])
        nx.draw_networkx_edge_labels(g, pos, edge_labels=special, ax=ax, font_size=5.5,
                                     bbox={"boxstyle": "round,pad=0.15", "fc": "white",
                                           "ec": "none", "alpha": 0.8})


def _draw_labels(ax: Axes, g: nx.Graph, pos: dict[str, tuple[float, float]],
                 replicas: Sequence[str], clients: Sequence[str]) -> None:
    """Replica ids just outside the circle, client ids below their markers."""
    size = 6 if len(replicas) <= 10 else 5 if len(replicas) <= 20 else 4
    radial = len(replicas) > 12  # around a crowded circle, labels point outwards
    for nid in replicas:
        x, y = pos[nid]
        if radial:
            angle = math.degrees(math.atan2(y, x))
            left = abs(angle) > 90
            ax.text(x * 1.08, y * 1.08, nid, fontsize=size, va="center",
                    ha="right" if left else "left", rotation=angle + (180 if left else 0),
                    rotation_mode="anchor")
            continue
        ha = "left" if x > 0.3 else "right" if x < -0.3 else "center"
        va = "bottom" if y > 0.3 else "top" if y < -0.3 else "center"
        ax.text(x * 1.13, y * 1.13, nid, fontsize=size, ha=ha, va=va)
    if len(clients) <= 8:
        for nid in clients:
            x, y = pos[nid]
            ax.text(x, y - 0.11, nid, fontsize=5, ha="center", va="top", color="0.3")


def _network_legend(fig: Figure, roles: dict[str, str], crashed: set[str], byz: set[str],
                    replicas: Sequence[str]) -> None:
    handles: list[Any] = [Line2D([], [], ls="none", marker="s" if r == "client" else "o",
                                 ms=5, color=ROLE_COLOURS[r], label=r)
                          for r in ROLE_COLOURS if r in set(roles.values())]
    if crashed:
        handles.append(Line2D([], [], ls="none", marker="o", ms=5, mfc="white",
                              mec=PALETTE["vermillion"], mew=1.6, label="crashed"))
    if byz:
        handles.append(Line2D([], [], ls="none", marker="D", ms=4.5, color="0.3",
                              label="Byzantine"))
    fig.legend(handles=handles, loc="outside upper center", ncols=min(4, len(handles)))
    if replicas:
        fig.text(0.5, 0.01, f"n = {len(replicas)}; primary of view 0: {replicas[0]} (top)",
                 ha="center", va="bottom", fontsize=6)


# -- drawing all -----------------------------------------------------------------------------

def sequence(data: RunData) -> Figure | None:
    """The message sequence chart of the first committed request, for a traced run (see
    `medbft sequence` for any other window)."""
    from medbft.views.sequence import TraceError, load_sequence, request_window
    from medbft.views.sequence_chart import sequence_chart

    trace = data.path / "trace.jsonl"
    if not trace.exists():
        if "trace.jsonl" in (data.run_info.get("files") or ()):
            raise NotDrawn(f"{trace}: missing, though run.json lists it")
        return None  # a run without --trace
    try:
        start, end = request_window(data.path, None)
        return sequence_chart(load_sequence(data.path, start, end))
    except RunFileError as exc:
        raise NotDrawn(str(exc)) from None
    except TraceError:
        return None  # no committed request: nothing to follow


FIGURES: dict[str, Callable[[RunData], Figure | None]] = {
    "throughput": throughput,
    "latency_over_time": latency_over_time,
    "latency_cdf": latency_cdf,
    "phases": phases,
    "messages_by_type": messages_by_type,
    "messages_by_node": messages_by_node,
    "cpu": cpu,
    "network": network,
    "sequence": sequence,
}

#: What each figure shows, for the report (definitions are in docs/results.md).
CAPTIONS = {
    "throughput": "Throughput: requests whose client accepted f+1 matching replies, per "
                  "window, divided by the window. Shaded: fault windows. Dashed: a new view "
                  "entered (first replica); triangles: first VIEW-CHANGE sent for a view.",
    "latency_over_time": "Latency of each committed request (submission to acceptance of f+1 "
                         "matching replies), at the time it was submitted.",
    "latency_cdf": "Latency distribution (empirical CDF) with p50, p95 and p99 marked.",
    "phases": "Latency split by PBFT phase, mean over the requests submitted in each window: "
              "request (submit to pre-prepare at the primary), prepare (to the q-th replica "
              "prepared), commit (to the (f+1)-th replica committed-local), reply (to the "
              "client's acceptance).",
    "messages_by_type": "Messages and bytes put on the network, by type (a multicast counts "
                        "once per receiver).",
    "messages_by_node": "Messages and bytes sent, by replica and client.",
    "cpu": "CPU utilisation per replica: busy simulated CPU time over the run's length.",
    "sequence": "Message sequence chart of the first committed request (runs with --trace): "
                "one lane per party (the primary, Byzantine and crashed parties labelled), "
                "time running down, an arrow per message from its send to its arrival (a "
                "cross: lost, or sent to a crashed party), protocol events marked on the lanes "
                "with the quorum each certificate took. `medbft sequence DIR` narrates it and "
                "draws any other window.",
    "network": "The network: replicas coloured by role, clients inside, links the scenario "
               "overrides drawn dark and labelled; crashed replicas ringed, Byzantine ones "
               "drawn as diamonds.",
}


class NotDrawn(Exception):
    """A figure cannot be drawn because a file it needs is missing or damaged (the message
    says which); `draw_run` warns and goes on with the other figures."""


#: The optional files of a run folder each figure reads beyond summary.json and requests.csv,
#: and what the figure lacks without them.
NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "throughput": (("views.csv", "view changes"), ("faults.csv", "fault windows"),
                   ("events.csv", "state-transfer markers")),
    "latency_over_time": (("views.csv", "view changes"), ("faults.csv", "fault windows"),
                          ("events.csv", "state-transfer markers")),
    "phases": (("phases.csv", ""),),
    "messages_by_node": (("scenario.yaml", "roles"),),
    "cpu": (("scenario.yaml", "roles"),),
    "network": (("scenario.yaml", ""),),
}


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _lacking(data: RunData, name: str) -> list[tuple[str, str]]:
    """The files figure `name` reads that the run lacks, and what it lacks without them. A
    real cluster's folder records its fault windows in summary.json and has no replica event
    times: nothing is lacking there."""
    real = data.summary.get("mode") == "real"
    return [(f, what) for f, what in NEEDS.get(name, ()) if f in data.missing
            and not (f == "faults.csv" and isinstance(data.summary.get("faults"), list))
            and not (f == "events.csv" and real)]


def draw_run(data: RunData, out: Path, formats: Sequence[str] | None = None,
             warn: Callable[[str], None] = _stderr, jobs: int | None = None) -> list[Path]:
    """Draw every figure the run has data for into `out` (one file per format) and remove
    stale files of figures that no longer apply. A figure that cannot be drawn, or is drawn
    without something, because a file is missing or damaged gets one `warn` line naming the
    file. Returns the paths written.

    `jobs` processes draw the figures side by side (default: one per usable core, at most
    4; 1 draws them here, one after another). Each figure is the same bytes either way and
    the warnings come in figure order: a worker only renders. matplotlib spends about a
    tenth of a second per figure and format even on a small one, and a 64-node run's
    per-node figures take seconds, so on two cores the figures take about half as long."""
    formats = tuple(formats or DEFAULT_FORMATS)
    names = list(FIGURES)
    jobs = _figure_jobs(len(names)) if jobs is None else max(1, min(jobs, len(names)))
    outcomes = _draw_in_workers(data, out, formats, names, jobs) if jobs > 1 else None
    written: list[Path] = []
    for i, name in enumerate(names):
        paths, warnings = (outcomes[i] if outcomes is not None
                           else _draw_one(data, name, out, formats))
        for message in warnings:
            warn(message)
        written += paths
    return written


def _draw_one(data: RunData, name: str, out: Path,
              formats: tuple[str, ...]) -> tuple[list[Path], list[str]]:
    """Draw figure `name` (or remove its stale files): the paths written and the warnings."""
    warnings: list[str] = []
    with style():
        lacking = _lacking(data, name)
        if any(not what for _, what in lacking):
            warnings.append(f"figure {name} not drawn: {data.path / lacking[0][0]} is missing")
            fig = None
        else:
            if lacking:
                warnings.append(f"figure {name} drawn without "
                                + ", ".join(f"{what} ({data.path / f} is missing)"
                                            for f, what in lacking))
            try:
                fig = FIGURES[name](data)
            except NotDrawn as exc:
                warnings.append(f"figure {name} not drawn: {exc}")
                fig = None
            except (ArithmeticError, AttributeError, LookupError, TypeError,
                    ValueError) as exc:  # data no reader checked: still no traceback
                warnings.append(f"figure {name} not drawn: unexpected data in {data.path} "
                                f"({type(exc).__name__}: {exc})")
                fig = None
        if fig is None:
            for old in out.glob(f"{name}.*"):
                old.unlink()
            return [], warnings
        return save(fig, out / name, formats), warnings


def _figure_jobs(figures: int) -> int:
    """Worker processes for `figures` figures: one per core this process may use, at most 4
    (more buys little: the largest figure bounds the time); 1 where it may not fork
    (`may_fork`)."""
    if not may_fork():
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4, figures))


#: What the forked workers draw from (set just before they start; they inherit it).
_WORK: tuple[RunData, Path, tuple[str, ...]] | None = None


def _draw_forked(name: str) -> tuple[list[Path], list[str]]:
    assert _WORK is not None
    data, out, formats = _WORK
    return _draw_one(data, name, out, formats)


def _draw_in_workers(data: RunData, out: Path, formats: tuple[str, ...], names: list[str],
                     jobs: int) -> list[tuple[list[Path], list[str]]] | None:
    """Each figure's outcome, drawn by `jobs` forked processes (the run's data reaches them
    by the fork, not through a pipe); None if the processes could not be started or one
    died, and the caller then draws them itself (a figure file is only ever written
    whole by savefig, so a figure drawn twice is the same file)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    global _WORK
    _WORK = (data, out, formats)
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_draw_forked, names))
    except (OSError, BrokenProcessPool):
        return None
    finally:
        _WORK = None
