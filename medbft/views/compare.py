"""Runs side by side: a headline table, overlaid figures, compare.csv and one self-contained
compare.html, for "before/after" and "protocol setting A vs B" questions.

Why this exists: a question such as "does a 4 s view-change timeout stall longer than 1 s?"
needs two or more runs on one page, with the same axes and the same definitions, and with a
confidence interval when several seeds were run per setting. Runs are grouped by label: an
explicit one (`LABEL=DIR` on the command line), else runs whose scenario is the same but for
its seed form one group (its label: what their folder names share), else each run is its own
group under its folder name. A group of several runs shows the mean and the 95% confidence
interval of each headline metric (`medbft.sweep.stats`). The page embeds its figures as PNG
data URIs and its CSS inline, like report.html, so it opens anywhere. It reads only saved run
folders (`medbft.results.load_run`), never runs anything.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from medbft.metrics import percentile
from medbft.results import RunData
from medbft.sweep.stats import mean_ci95
from medbft.timeline import FaultRow, stall_ms
from medbft.views import fault_windows
from medbft.views.report import _CSS, figure_grid, figure_html
from medbft.views.run_figures import (
    MESSAGE_ORDER,
    THROUGHPUT_BINS,
    bin_edges,
    histogram,
    run_end_s,
    shade_faults,
)
from medbft.views.style import CYCLE, DEFAULT_FORMATS, figure, nice_step, save, style, wants_log

__all__ = ["COLUMNS", "HEADLINE", "Group", "compare_runs", "group_runs", "render_compare",
           "run_row", "write_compare_csv"]

#: The headline metrics: (column, what the table calls it, unit, format).
HEADLINE: tuple[tuple[str, str, str, str], ...] = (
    ("throughput_tps", "throughput", "req/s", "{:.2f}"),
    ("latency_p50_ms", "latency p50", "ms", "{:.3f}"),
    ("latency_p99_ms", "latency p99", "ms", "{:.3f}"),
    ("view_changes", "view changes", "", "{:.3g}"),
    ("stall_ms", "longest stall", "ms", "{:.1f}"),
    ("messages_per_request", "messages per request", "", "{:.2f}"),
)
#: compare.csv: one row per run.
COLUMNS = ("label", "run", "path", "scenario", "seed", *(h[0] for h in HEADLINE),
           "committed", "submitted", "safety_ok", "liveness_ok", "scenario_hash")
FIGURE_NAMES = ("compare_latency_cdf", "compare_throughput", "compare_stall")


@dataclass
class Group:
    """Runs compared as one: the same settings (or the same explicit label)."""

    label: str
    runs: list[RunData] = field(default_factory=list)
    colour: str = CYCLE[0]


def _num(value: Any) -> float | None:
    return None if value is None or isinstance(value, bool) else float(value)


def run_stall_ms(data: RunData) -> float:
    """The longest stretch within the run's duration in which no request committed."""
    commits = [r.commit_s for r in data.requests if r.commit_s is not None]
    return stall_ms(commits, float(data.summary.get("duration_s") or 0))


def run_row(data: RunData, label: str) -> dict[str, Any]:
    """The row of compare.csv for one run."""
    s = data.summary
    lat = s.get("latency_ms") or {}
    return {"label": label, "run": run_name(data), "path": str(data.path),
            "scenario": s.get("scenario"), "seed": s.get("seed"),
            "throughput_tps": _num(s.get("throughput_tps")),
            "latency_p50_ms": _num(lat.get("p50")), "latency_p99_ms": _num(lat.get("p99")),
            "view_changes": s.get("view_changes"), "stall_ms": round(run_stall_ms(data), 6),
            "messages_per_request": _num((s.get("messages") or {}).get("per_committed_request")),
            "committed": s["requests"].get("committed"),
            "submitted": s["requests"].get("submitted"),
            "safety_ok": s["safety"].get("ok"), "liveness_ok": s["liveness"].get("ok"),
            "scenario_hash": s.get("scenario_hash")}


def run_name(data: RunData) -> str:
    return data.path.resolve().name or str(data.path)


def _settings_key(data: RunData) -> str:
    """Runs of the same scenario but for the seed share this key; others do not."""
    if data.scenario is None:
        return f"run:{data.path.resolve()}"
    rest = {k: v for k, v in data.scenario.items() if k != "seed"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()


def _shared_label(names: Sequence[str]) -> str:
    """What the folder names of a group share ('pc-4s' for pc-4s-seed1, pc-4s-seed2)."""
    prefix = ""
    for chars in zip(*names, strict=False):
        if len(set(chars)) > 1:
            break
        prefix += chars[0]
    prefix = prefix.rstrip("-_. ")
    for tail in ("seed", "s", "run"):
        if prefix.endswith(tail) and len(prefix) > len(tail):
            stripped = prefix[: -len(tail)].rstrip("-_. ")
            if stripped and tail != "s":
                prefix = stripped
    return prefix or f"{names[0]} (+{len(names) - 1})"


def group_runs(runs: Sequence[tuple[RunData, str | None]]) -> list[Group]:
    """Groups in the order their first run was given: runs with the same explicit label
    together; the rest by settings (the scenario without its seed)."""
    keyed: dict[str, list[RunData]] = {}
    explicit: dict[str, str] = {}
    for data, label in runs:
        key = f"label:{label}" if label else _settings_key(data)
        keyed.setdefault(key, []).append(data)
        if label:
            explicit[key] = label
    groups = []
    for key, members in keyed.items():
        label = explicit.get(key) or (run_name(members[0]) if len(members) == 1
                                      else _shared_label([run_name(m) for m in members]))
        groups.append(Group(label, members))
    seen: dict[str, int] = {}
    for i, group in enumerate(groups):  # distinct labels and colours
        seen[group.label] = seen.get(group.label, 0) + 1
        if seen[group.label] > 1:
            group.label = f"{group.label} ({seen[group.label]})"
        group.colour = CYCLE[i % len(CYCLE)]
    return groups


def write_compare_csv(path: Path, groups: Sequence[Group]) -> Path:
    """compare.csv: one row per run, its group's label first, the headline columns."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for group in groups:
            for data in group.runs:
                row = run_row(data, group.label)
                writer.writerow({k: "" if row[k] is None else row[k] for k in COLUMNS})
    return path


# -- figures ---------------------------------------------------------------------------------


def latency_cdfs(groups: Sequence[Group]) -> Figure | None:
    """Each group's latency distribution (its runs pooled) as an empirical CDF, overlaid."""
    pooled = {g.label: sorted(r.latency_ms for d in g.runs for r in d.requests
                              if r.latency_ms is not None) for g in groups}
    if not any(pooled.values()):
        return None
    fig, ax = figure(2.4)
    every: list[float] = []
    for g in groups:
        ys = pooled[g.label]
        if not ys:
            continue
        every += ys
        fractions = [(i + 1) / len(ys) for i in range(len(ys))]
        ax.step([ys[0], *ys], [0.0, *fractions], where="post", color=g.colour,
                gid=f"cdf-{g.label}",
                label=f"{g.label}: p50 {percentile(ys, 50):.4g}, p99 {percentile(ys, 99):.4g} ms")
    if wants_log(every):
        ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of requests")
    ax.legend(loc="lower right", frameon=True, framealpha=0.9, edgecolor="none")
    return fig


def throughput_overlay(groups: Sequence[Group]) -> Figure:
    """Throughput over time per group (the mean over its runs, per window), fault windows
    shaded, and a dashed line in the group's colour where its first run entered a new view."""
    end = max(run_end_s(d) for g in groups for d in g.runs)
    step = nice_step(end, THROUGHPUT_BINS)
    edges = bin_edges(end, step)
    fig, ax = figure(2.5)
    handles: list[Any] = []
    tops = [1.0]
    for i, g in enumerate(groups):
        per_run = [histogram([r.commit_s for r in d.requests if r.commit_s is not None], edges)
                   for d in g.runs]
        rates = [sum(col) / len(per_run) / step for col in zip(*per_run, strict=True)]
        tops += rates
        handles.append(ax.stairs(rates, edges, color=g.colour, lw=1.8 if i == 0 else 1.0,
                                 gid=f"throughput-{g.label}", label=g.label))
        for v in g.runs[0].views or ():
            if v.entered_s is not None:
                ax.axvline(v.entered_s, color=g.colour, ls="--", lw=0.8,
                           gid=f"view-{g.label}-{v.view}")
    windows: dict[tuple[str, float, float | None, str], FaultRow] = {}
    for g in groups:
        for w in fault_windows(g.runs[0]) or ():
            windows.setdefault((w.kind, w.start_s, w.end_s, w.label), w)
    handles += shade_faults(ax, list(windows.values()), edges[-1])
    if any(v.entered_s is not None for g in groups for v in g.runs[0].views or ()):
        handles.append(Line2D([], [], color="0.3", ls="--", lw=0.8,
                              label="new view entered (group colour)"))
    ax.set_xlim(0, edges[-1])
    ax.set_ylim(0, max(tops) / 0.7)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"throughput (req/s)\nper {step * 1e3:g} ms window" if step < 1
                  else f"throughput (req/s)\nper {step:g} s window")
    fig.legend(handles=handles, loc="outside upper center", ncols=2, handlelength=1.5)
    return fig


def stall_bars(groups: Sequence[Group]) -> Figure:
    """The longest stall of each run, one bar per run in its group's colour."""
    rows = [(g, d) for g in groups for d in g.runs]
    fig, ax = figure(0.8 + 0.22 * len(rows))
    ys = list(range(len(rows)))
    values = [run_stall_ms(d) for _, d in rows]
    bars = ax.barh(ys, values, color=[g.colour for g, _ in rows], height=0.7, gid="stall")
    ax.bar_label(bars, fmt="%.0f ms", fontsize=6, padding=2)
    names = [g.label if len(g.runs) == 1 else f"{g.label}: {run_name(d)}" for g, d in rows]
    ax.set_yticks(ys, names)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.margins(x=0.25)
    ax.set_xlabel("longest stall: no request committed (ms)")
    return fig


FIGURES: dict[str, tuple[Callable[[Sequence[Group]], Figure | None], str]] = {
    "compare_stall": (stall_bars, "Longest stall of each run: the longest stretch within the "
                      "run's duration in which no request committed."),
    "compare_throughput": (throughput_overlay, "Throughput over time, per group (the mean of "
                           "its runs per window). Shaded: fault windows; dashed: a new view "
                           "entered, in the group's colour."),
    "compare_latency_cdf": (latency_cdfs, "Latency distributions (empirical CDF, each group's "
                            "runs pooled) with each group's p50 and p99."),
}


# -- the page --------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _values(group: Group, column: str) -> list[float]:
    rows = [run_row(d, group.label)[column] for d in group.runs]
    return [float(v) for v in rows if v is not None]


def group_stat(group: Group, column: str) -> tuple[float, float] | None:
    """(mean, half-width of its 95% CI; 0 for one run) of a headline column, None if no run
    has it."""
    values = _values(group, column)
    return mean_ci95(values) if values else None


def _cell(group: Group, column: str, fmt: str) -> str:
    stat = group_stat(group, column)
    if stat is None:
        return "–"
    mean, half = stat
    text = fmt.format(mean)
    if len(group.runs) > 1 and not math.isnan(half):
        text += f" ± {fmt.format(half)}"
    return text


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _swatch(group: Group) -> str:
    return (f'<span style="display:inline-block;width:.8em;height:.8em;'
            f'background:{group.colour};margin-right:.3em"></span><b>{_e(group.label)}</b>')


def _at_a_glance(groups: Sequence[Group]) -> str:
    """One sentence per key metric, each group against the first."""
    first = groups[0]
    parts = []
    for column, name, unit, fmt in (HEADLINE[4], HEADLINE[0], HEADLINE[2]):
        stats = [(g, group_stat(g, column)) for g in groups]
        if any(s is None for _, s in stats):
            continue
        base = stats[0][1][0]  # type: ignore[index]
        items = []
        for g, s in stats:
            mean = s[0]  # type: ignore[index]
            text = f"{_e(g.label)} <b>{fmt.format(mean)} {unit}</b>"
            if g is not first and base:
                text += f" ({'+' if mean >= base else '−'}{fmt.format(abs(mean - base))}, " \
                        f"×{mean / base:.2f} vs {_e(first.label)})"
            items.append(text)
        parts.append(f"<li>{_e(name)}: " + "; ".join(items) + "</li>")
    return f"<ul class=glance>{''.join(parts)}</ul>"


def _messages_table(groups: Sequence[Group]) -> str:
    types: dict[str, None] = {}
    per_group = []
    for g in groups:
        totals: dict[str, float] = {}
        for d in g.runs:
            for kind, count in ((d.summary.get("messages") or {}).get("by_type") or {}).items():
                totals[kind] = totals.get(kind, 0) + count / len(g.runs)
                types.setdefault(kind)
        per_group.append(totals)
    order = [t for t in MESSAGE_ORDER if t in types] + sorted(t for t in types
                                                              if t not in MESSAGE_ORDER)
    if not order:
        return "<p class=muted>No message counted.</p>"
    rows = [[_e(t), *(f'<span class="num">{totals.get(t, 0):.0f}</span>'
                      for totals in per_group)] for t in order]
    return _table(rows, ["message type", *(g.label for g in groups)]) + (
        "<p class=muted>Mean over each group's runs; a multicast counts once per receiver."
        "</p>" if any(len(g.runs) > 1 for g in groups) else "")


def _events_table(groups: Sequence[Group]) -> str:
    rows = []
    for g in groups:
        for d in g.runs:
            views = "; ".join(
                f"v{v.view} ({_e(v.primary)}): VIEW-CHANGE {v.view_change_s or 0:.3f} s, "
                + (f"entered {v.entered_s:.3f} s" if v.entered_s is not None else "not entered")
                for v in d.views or ()) or "none"
            faults = "; ".join(
                f"{_e(w.kind)} {_e(w.target)} {w.start_s:.3f}–"
                + (f"{w.end_s:.3f} s" if w.end_s is not None else "end")
                for w in fault_windows(d) or ()) or "none"
            if d.views is None:
                views = "<span class=muted>views.csv missing</span>"
            if fault_windows(d) is None:
                faults = "<span class=muted>faults.csv missing</span>"
            rows.append([_swatch(g), _e(run_name(d)), views, faults])
    return _table(rows, ["group", "run", "view changes", "fault windows"])


def _runs_table(groups: Sequence[Group]) -> str:
    rows = []
    for g in groups:
        for d in g.runs:
            s = d.summary
            verdict = ("ok" if s["safety"].get("ok") and s["liveness"].get("ok")
                       else "safety or liveness failed")
            rows.append([_swatch(g), f"<code>{_e(d.path)}</code>", _e(s.get("scenario")),
                         _e(s.get("seed")), f"<code>{_e(str(s.get('scenario_hash'))[:12])}</code>",
                         _e(verdict), f"<code>{_e(d.run_info.get('command', '–'))}</code>"])
    return _table(rows, ["group", "folder", "scenario", "seed", "scenario hash", "verdicts",
                         "reproduce with"])


def render_compare(groups: Sequence[Group], figures: dict[str, bytes]) -> str:
    """The HTML text of compare.html (`figures`: name -> PNG bytes, embedded)."""
    header = ["group", "runs", *(f"{name} ({unit})" if unit else name
                                 for _, name, unit, _ in HEADLINE)]
    rows = [[_swatch(g), str(len(g.runs)),
             *(f'<span class="num">{_cell(g, col, fmt)}</span>' for col, _, _, fmt in HEADLINE)]
            for g in groups]
    ci = any(len(g.runs) > 1 for g in groups)
    figs = []
    for name, (_, caption) in FIGURES.items():
        if name not in figures:
            continue
        figs.append(figure_html(name, figures[name], caption))
    title = " vs ".join(g.label for g in groups)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>medbft compare: {_e(title)}</title>
<style>{_CSS}ul.glance li{{margin:.2rem 0}}</style></head><body>
<h1>medbft compare: {_e(title)}</h1>
<h2 id="glance">At a glance</h2>
{_at_a_glance(groups)}
<h2 id="headline">Headline figures</h2>
{_table(rows, header)}
<p class=muted>{"Groups of several runs: mean ± half-width of the 95% confidence interval of "
                "the mean (Student's t). " if ci else ""}Longest stall: the longest stretch
within the run's duration in which no request committed. Definitions: docs/results.md.</p>
<h2 id="figures">Figures</h2>
{figure_grid(figs)}
<h2 id="messages">Messages by type</h2>
{_messages_table(groups)}
<h2 id="events">View changes and fault windows</h2>
{_events_table(groups)}
<h2 id="runs">Runs</h2>
{_runs_table(groups)}
<p class=muted>Beside this page: compare.csv (one row per run) and plots/.</p>
</body></html>
"""


def compare_runs(groups: Sequence[Group], out: Path, formats: Sequence[str] | None = None,
                 warn: Callable[[str], None] | None = None) -> list[Path]:
    """Draw the figures into out/plots, write out/compare.csv and out/compare.html. Returns
    the files written; `warn` gets one line per figure not drawn or drawn without something."""
    formats = tuple(formats or DEFAULT_FORMATS)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    pngs: dict[str, bytes] = {}
    for g in groups:
        for d in g.runs:
            lacking = [f for f in ("views.csv", "faults.csv") if f in d.missing
                       and not (f == "faults.csv" and fault_windows(d) is not None)]
            if lacking and warn:
                warn(f"figure compare_throughput drawn without the "
                     f"{' and '.join(lacking)} of {d.path} (missing)")
    with style():
        for name, (draw, _) in FIGURES.items():
            fig = draw(groups)
            if fig is None:
                if warn:
                    warn(f"figure {name} not drawn: no run committed a request")
                for old in (out / "plots").glob(f"{name}.*"):
                    old.unlink()
                continue
            written += save(fig, out / "plots" / name, formats)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=150, metadata={"Software": None})
            pngs[name] = buffer.getvalue()
    written.append(write_compare_csv(out / "compare.csv", groups))
    page = out / "compare.html"
    page.write_text(render_compare(groups, pngs), encoding="utf-8")
    written.append(page)
    return written
