"""report.html: one self-contained page about one run, readable offline and easy to share.

Why this exists: a run's results are several files; a person wants one page that says what was
run (the scenario text and its hash, the seed, the code version, the command that reproduces
it), whether it was correct (the checker's verdicts and the scenario's expectations), what it
measured (the summary table, the phase split) and every figure. The page has no external
references at all: CSS is inline and figures are PNG data URIs, so it opens from a mail
attachment or an archive. It reads only a saved results directory (`medbft.results.RunData`).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from medbft.results import RunData
from medbft.timeline import PHASES, stall_ms
from medbft.views import fault_windows

__all__ = ["figure_grid", "figure_html", "render_report", "summary_rows", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:120rem;margin:2rem auto;
padding:0 1.5rem;color:#222;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.2rem .8rem .2rem 0;
text-align:left;vertical-align:top}th{font-weight:600;color:#444}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
pre{background:#f6f6f6;padding: .8rem;overflow-x:auto;border-radius:4px}
.ok{color:#007a4d;font-weight:600}.bad{color:#b3261e;font-weight:600}.muted{color:#666}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,32rem),1fr));
gap:0 2.5rem;align-items:start}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,30rem),1fr));
gap:1.5rem 2rem;align-items:start}
figure{margin:0}figure img{width:100%;height:auto;border:1px solid #eee;cursor:zoom-in}
figcaption{font-size:.9rem;color:#444}
figure .close{display:none}
figure:target img{position:fixed;inset:0;margin:auto;width:auto;height:auto;max-width:98vw;
max-height:96vh;z-index:11;background:#fff;border:none;pointer-events:none;
box-shadow:0 0 0 100vmax rgba(0,0,0,.75)}
figure:target .close{display:block;position:fixed;inset:0;z-index:10;cursor:zoom-out}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _per_request(value: float | None) -> str:
    """Messages per committed request, rounded as the terminal tables round it (one decimal,
    `medbft.cli.tables.per_request`; views sit below the commands, so the rule is repeated)."""
    return "–" if value is None else f"{value:.1f}"


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, value) rows of the summary table (the same facts `medbft run` prints)."""
    lat = summary.get("latency_ms", {})
    msgs = summary.get("messages", {})
    req = summary.get("requests", {})
    rows = [
        ("requests committed / submitted", f"{req.get('committed')} / {req.get('submitted')}"),
        ("throughput", f"{summary.get('throughput_tps', 0):.2f} req/s"),
        ("latency p50 / p95 / p99",
         f"{_ms(lat.get('p50'))} / {_ms(lat.get('p95'))} / {_ms(lat.get('p99'))} ms"),
        ("latency mean / max", f"{_ms(lat.get('mean'))} / {_ms(lat.get('max'))} ms"),
        ("messages (bytes)", f"{msgs.get('total')} ({msgs.get('bytes')} B)"),
        ("messages lost", str(msgs.get("lost"))),
        ("messages per committed request", _per_request(msgs.get("per_committed_request"))),
        ("view changes (final view)",
         f"{summary.get('view_changes')} ({summary.get('final_view')})"),
        ("stable checkpoint", str(summary.get("stable_checkpoint"))),
        ("state transfers", str(summary.get("state_transfers"))),
        ("rejected / ignored messages", (
            f"{(summary.get('rejected_messages') or {}).get('total')} / "
            f"{(summary.get('ignored_messages') or {}).get('total')}")),
    ]
    wall = summary.get("wall_time_s")
    wall_text = "–" if wall is None else f"{wall} s"
    if summary.get("sim_time_s") is None:  # a real run has no virtual time
        rows.append(("wall time", wall_text))
    else:
        rows.append(("simulated / wall time", f"{summary['sim_time_s']:.3f} s / {wall_text}"))
    return rows


def _table(rows: Iterable[Sequence[str]], header: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table>{'<tr>' + head + '</tr>' if head else ''}{body}</table>"


def _verdict(ok: bool | None, good: str, bad: str) -> str:
    if ok is None:
        return '<span class="muted">not checked</span>'
    return f'<span class="ok">{good}</span>' if ok else f'<span class="bad">{bad}</span>'


def _verdicts(summary: dict[str, Any]) -> str:
    safety = summary.get("safety", {})
    live = summary.get("liveness", {})
    expect = summary.get("expect", {})
    rows = [
        ("safety (agreement, validity, exactly-once)",
         _verdict(safety.get("ok"), "held", f"VIOLATED ({len(safety.get('violations', []))})")),
        ("liveness (every request settled)",
         _verdict(live.get("ok"), "held", "lost") + " <span class=muted>"
         + _e(", ".join(f"{k} {v}" for k, v in live.items() if k != "ok")) + "</span>"),
        ("scenario expectations", _verdict(expect.get("ok"), "met", "FAILED")),
    ]
    out = _table(((_e(k), v) for k, v in rows))
    details = [f"expected {f.get('name')} = {f.get('expected')}, measured {f.get('measured')}"
               for f in expect.get("failed", [])]
    details += [json.dumps(v, sort_keys=True) for v in safety.get("violations", [])[:10]]
    if details:
        out += "<ul>" + "".join(f"<li><code>{_e(d)}</code></li>" for d in details) + "</ul>"
    return out


def _phase_table(data: RunData) -> str:
    if not data.phases:
        return "<p class=muted>No committed request: no phase split.</p>"
    rows = [row.durations_ms() for row in data.phases]
    cells = []
    for name in PHASES:
        values = sorted(r[name] for r in rows)
        cells.append((_e(name), f'<span class="num">{sum(values) / len(values):.3f}</span>',
                      f'<span class="num">{values[len(values) // 2]:.3f}</span>',
                      f'<span class="num">{values[-1]:.3f}</span>'))
    commits = [r.commit_s for r in data.requests if r.commit_s is not None]
    stall = stall_ms(commits, float(data.summary.get("duration_s") or 0))
    return (_table(cells, ("phase", "mean (ms)", "median (ms)", "max (ms)"))
            + f"<p>Longest stall (no request committed) within the duration: "
              f"<b>{stall:.1f} ms</b>.</p>")


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _events_table(data: RunData) -> str:
    """Fault windows and view changes, the events that explain the time series."""
    faults = [(_e(w.kind), _e(w.target), _s(w.start_s),
               _s(w.end_s) if w.end_s is not None else "end of run", _e(w.label))
              for w in fault_windows(data) or ()]
    views = [(str(v.view), _e(v.primary), _s(v.view_change_s), _s(v.entered_s))
             for v in data.views or ()]
    out = (_table(faults, ("fault", "target", "from (s)", "until (s)", "label")) if faults
           else "<p class=muted>No fault was injected.</p>")
    out += (_table(views, ("view", "primary", "first VIEW-CHANGE (s)", "entered (s)"))
            if views else "<p class=muted>No view change: view 0 throughout.</p>")
    return out


def _figures(data: RunData, with_figures: bool) -> str:
    if not with_figures:
        return (f"<p class=muted>Figures were not drawn (<code>--no-plots</code>); "
                f"<code>medbft plot {_e(data.path)}</code> draws them.</p>")
    # only for names and captions; matplotlib loads with it (half a second), so not above
    from medbft.views.run_figures import CAPTIONS, FIGURES

    parts = []
    for name in FIGURES:
        png = data.path / "plots" / f"{name}.png"
        if png.exists():
            parts.append(figure_html(name, png.read_bytes(), CAPTIONS.get(name, "")))
    return figure_grid(parts)


def figure_html(name: str, png: bytes, caption: str) -> str:
    """One figure as a data URI; a click opens it full size over the page (CSS :target, no
    script) and a click anywhere, or Back, closes it (back to `#figures`)."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f'<figure id="fig-{name}"><a href="#fig-{name}" title="open full size">'
            f'<img alt="{_e(name)}" src="{uri}"></a>'
            f'<a class="close" href="#figures" title="close" aria-label="close"></a>'
            f"<figcaption><b>{_e(name)}</b>: {_e(caption)}</figcaption></figure>")


def figure_grid(parts: Sequence[str]) -> str:
    """The figures in as many columns as the screen fits (the `.figs` grid of `_CSS`)."""
    if not parts:
        return "<p class=muted>No figure.</p>"
    return ('<p class=muted>Click a figure to open it full size; click again (or Back) to '
            'close it.</p><div class="figs">' + "".join(parts) + "</div>")


def _replay_link(data: RunData) -> str:
    """A link to replay.html when the run folder has one (`medbft run --trace` writes it)."""
    if not (data.path / "replay.html").exists():
        return ""
    return ('<h2 id="replay">Replay</h2><p><a href="replay.html">Play this run back message by '
            'message</a>: lanes, a time slider, each replica\'s log and quorum counters, and the '
            'narration of each step (replay.html, beside this page; it works offline).</p>\n')


def render_report(data: RunData, with_figures: bool = True) -> str:
    """The HTML text of the report of the run saved in `data.path`."""
    s = data.summary
    scenario_text = (data.path / "scenario.yaml").read_text() if (
        data.path / "scenario.yaml").exists() else "(scenario.yaml not saved)"
    description = (data.scenario or {}).get("description", "")
    meta = [
        ("scenario",
         f"<b>{_e(s.get('scenario'))}</b> (n = {_e(s.get('n'))}, f = {_e(s.get('f'))})"),
        ("scenario hash", f"<code>{_e(s.get('scenario_hash'))}</code>"),
        ("seed", f"<code>{_e(s.get('seed'))}</code>"),
        ("code version", f"<code>medbft {_e(s.get('version'))}</code>"),
        ("reproduce with", f"<code>{_e(data.run_info.get('command', '–'))}</code>"),
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>medbft: {_e(s.get('scenario'))} (seed {_e(s.get('seed'))})</title>
<style>{_CSS}</style></head><body>
<h1>medbft run: {_e(s.get('scenario'))}</h1>
<p>{_e(description)}</p>
{_table(((_e(k), v) for k, v in meta))}
<div class="cols"><section>
<h2>Verdicts</h2>
{_verdicts(s)}
<h2>Summary</h2>
{_table(((_e(k), f'<span class="num">{_e(v)}</span>') for k, v in summary_rows(s)))}
</section><section>
<h2>Faults and view changes</h2>
{_events_table(data)}
<h2>Where the time goes</h2>
{_phase_table(data)}
</section></div>
{_replay_link(data)}<h2 id="figures">Figures</h2>
{_figures(data, with_figures)}
<h2>Scenario</h2>
<p class=muted>As run (canonical form; it hashes to the scenario hash above).</p>
<pre>{_e(scenario_text)}</pre>
<p class=muted>Files beside this page: summary.json, requests.csv, phases.csv, views.csv,
faults.csv, events.csv, scenario.yaml, plots/ (and with --trace: trace.jsonl, replay.html).
Definitions: docs/results.md.</p>
</body></html>
"""


def write_report(data: RunData, path: Path, with_figures: bool = True) -> Path:
    """Write report.html for the run in `data` to `path`."""
    path.write_text(render_report(data, with_figures), encoding="utf-8")
    return path
