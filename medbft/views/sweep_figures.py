"""Figures of a sweep: a metric against a grid parameter, the mean over seeds with a 95%
confidence interval, one line per value of another parameter.

Why this exists: this is the figure a sweep is run for. It reads only results.csv and
sweep.json, so `medbft plot SWEEPDIR` redraws it. Rows that differ in parameters other than
`x` and `lines` are pooled into one mean (name the figures you want in the sweep file's
`plots:` when the grid has more than two keys).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from medbft.sweep import RESULTS, SPEC, mean_ci95, read_results
from medbft.units import parse_duration_ns
from medbft.views.style import DEFAULT_FORMATS, figure, save, style

__all__ = ["axis_values", "draw_sweep", "metric_figure", "series"]

METRIC_LABELS = {
    "throughput_tps": "throughput (req/s)",
    "latency_ms.p50": "p50 latency (ms)",
    "latency_ms.p95": "p95 latency (ms)",
    "latency_ms.p99": "p99 latency (ms)",
    "latency_ms.mean": "mean latency (ms)",
    "latency_ms.max": "max latency (ms)",
    "stall_ms": "longest stall (ms)",
    "messages.per_committed_request": "messages per committed request",
    "messages.total": "messages sent",
    "messages.bytes": "bytes sent (B)",
    "view_changes": "view changes",
    "cpu.utilisation.max": "max CPU utilisation (fraction)",
    "cpu.utilisation.mean": "mean CPU utilisation (fraction)",
}
MARKERS = ("o", "s", "^", "D", "v", "P")
DASHES = ("-", "--", ":", "-.")
PARAM_LABELS = {
    "nodes": "n (replicas)",
    "protocol.batch_size": "batch size (requests)",
    "network.loss": "loss probability",
    "workload.clients": "clients",
    "workload.outstanding": "outstanding requests per client",
    "workload.rate": "offered load (req/s)",
    "network.latency": "link delay",
    "network.latency.mean": "mean link delay",
    "protocol.view_change_timeout": "view-change timeout",
    "protocol.client_timeout": "client timeout",
    "protocol.batch_timeout": "batch timeout",
    "protocol.checkpoint_interval": "checkpoint interval (requests)",
}


def short_label(param: str) -> str:
    """A parameter's name for a legend: its axis label without the unit."""
    return re.sub(r" \(.*\)$", "", PARAM_LABELS.get(param, param))


def metric_label(metric: str) -> str:
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    if metric.startswith("phase_ms."):
        return f"{metric[9:]} phase, mean (ms)"
    return metric


def _node_count(value: Any) -> float | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Mapping):
        return float(sum(int(v) for v in value.values()))
    if isinstance(value, list):
        return float(len(value))
    return None


def axis_values(param: str, values: Sequence[Any]) -> tuple[list[float], str, list[str] | None]:
    """Numeric x positions for a parameter's values, the axis label, and tick labels when the
    values are categories. Numbers stay numbers; durations ('10ms') become milliseconds;
    `nodes` mappings or lists become n; anything else is placed at 0, 1, 2 ..."""
    label = PARAM_LABELS.get(param, param)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values], label, None
    try:
        ms = [parse_duration_ns(v) / 1e6 for v in values]
        return ms, f"{label} (ms)", None
    except (ValueError, TypeError):
        pass
    parsed = [json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v for v in values]
    counts = [_node_count(v) for v in parsed]
    if param == "nodes" and all(c is not None for c in counts):
        return [float(c) for c in counts if c is not None], label, None
    return [float(i) for i in range(len(values))], label, [str(v) for v in values]


def series(rows: Sequence[Mapping[str, Any]], x: str, y: str,
           lines: str | None) -> dict[Any, list[tuple[Any, float, float, int]]]:
    """Line value (None: one line) -> [(x value, mean, ci95 half-width, runs)] in the order the
    values first appear; rows where `y` is empty are left out."""
    groups: dict[Any, dict[Any, list[float]]] = {}
    for row in rows:
        value = row.get(y)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        line = row.get(lines) if lines else None
        groups.setdefault(line, {}).setdefault(row[x], []).append(float(value))
    return {line: [(xv, *mean_ci95(vals), len(vals)) for xv, vals in by_x.items()]
            for line, by_x in groups.items()}


def metric_figure(rows: Sequence[Mapping[str, Any]], x: str, y: str,
                  lines: str | None = None) -> Figure | None:
    """`y` against `x`: mean over runs with 95% CI error bars, one line per `lines` value."""
    data = series(rows, x, y, lines)
    if not data:
        return None
    xs_all = list(dict.fromkeys(row[x] for row in rows))
    positions, xlabel, ticks = axis_values(x, xs_all)
    where = dict(zip(xs_all, positions, strict=True))
    fig, ax = figure(2.4)
    for i, (line, unordered) in enumerate(data.items()):
        points = sorted(unordered, key=lambda p: where[p[0]])
        name = f"{short_label(lines)} = {line}" if lines else y
        # Marker and dash vary too, so lines that coincide stay visible (and in greyscale).
        ax.errorbar([where[p[0]] for p in points], [p[1] for p in points],
                    yerr=[p[2] for p in points], marker=MARKERS[i % len(MARKERS)],
                    ls=DASHES[i % len(DASHES)], ms=3.5, capsize=2.5, lw=1.0,
                    elinewidth=0.8, label=name, gid=f"line-{line}")
    if ticks is not None:
        ax.set_xticks(positions, ticks, rotation=20)
    elif len(positions) <= 12:
        ax.set_xticks(positions, [f"{p:g}" for p in positions])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric_label(y))
    ax.set_ylim(bottom=0)
    runs = sorted({p[3] for pts in data.values() for p in pts})
    note = (f"mean ± 95% CI over {runs[0]} run{'s' if runs[0] > 1 else ''} per point"
            if len(runs) == 1 else f"mean ± 95% CI over {runs[0]}-{runs[-1]} runs per point")
    handles, _ = ax.get_legend_handles_labels()
    if lines:
        widest = max(len(h.get_label()) for h in handles)
        ncols = min(len(handles), 3 if widest <= 14 else 2 if widest <= 24 else 1)
        fig.legend(handles=handles, loc="outside upper center", ncols=ncols,
                   title=note, title_fontsize=6.5)
    else:
        ax.set_title(note, fontsize=6.5)
    return fig


def figure_name(spec: Mapping[str, str]) -> str:
    """File stem of a sweep figure, e.g. throughput_tps_vs_nodes_by_protocol.batch_size."""
    name = f"{spec['y']}_vs_{spec['x']}" + (f"_by_{spec['lines']}" if spec.get("lines") else "")
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def draw_sweep(out: Path, formats: Sequence[str] | None = None) -> list[Path]:
    """Draw every figure named in out/sweep.json from out/results.csv into out/plots/."""
    spec_path, results = out / SPEC, out / RESULTS
    if not spec_path.exists() or not results.exists():
        raise FileNotFoundError(f"{out}: no {SPEC} and {RESULTS}; expected a directory "
                                "written by `medbft sweep`")
    spec = json.loads(spec_path.read_text())
    rows = read_results(results)
    written: list[Path] = []
    with style():
        for plot in spec["plots"]:
            fig = metric_figure(rows, plot["x"], plot["y"], plot.get("lines"))
            if fig is not None:
                written += save(fig, out / "plots" / figure_name(plot),
                                tuple(formats or DEFAULT_FORMATS))
    return written
