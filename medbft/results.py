"""The results directory of one run: which file holds what, how to write the files the figures
and the report need, and how to read them all back.

Why this exists: `medbft plot DIR` must redraw every figure, and rebuild the report, from saved
files alone, without re-running the simulation; researchers load the same files elsewhere.
So everything a figure shows is first written here as a small CSV or JSON file, and the
figures read only those. `medbft.cli.write_results` writes summary.json, requests.csv and
trace.jsonl; this module adds the rest:

- `scenario.yaml`: the scenario exactly as run (canonical form, `medbft.scenario.to_dict`; it
  hashes to `summary.json`'s `scenario_hash` and `medbft run` accepts it);
- `run.json`: how the run was started (command line, scenario file, overrides);
- `phases.csv`: per committed request, its PBFT phase boundaries (`medbft.timeline`);
- `views.csv`: each view change (first VIEW-CHANGE sent, first replica entering the view);
- `faults.csv`: fault windows (kind, target, start, end, label);
- `plots/` (figures, `medbft.views`) and `report.html` (`medbft.views.report`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medbft.scenario import Scenario, to_dict
from medbft.timeline import FaultRow, PhaseRow, ViewRow, fault_rows, phase_rows, view_rows

__all__ = ["RequestRow", "RunData", "load_run", "read_requests", "reproduce_command",
           "save_run_data", "trace_digest", "write_results"]

SUMMARY, REQUESTS, SCENARIO, RUN = "summary.json", "requests.csv", "scenario.yaml", "run.json"
PHASES, VIEWS, FAULTS = "phases.csv", "views.csv", "faults.csv"
PHASE_COLUMNS = ("request", "view", "seq", "submit_s", "pre_prepare_s", "prepared_s",
                 "committed_s", "reply_s")
VIEW_COLUMNS = ("view", "primary", "view_change_s", "entered_s")
FAULT_COLUMNS = ("kind", "target", "start_s", "end_s", "label")


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One row of requests.csv, parsed (None where the request never committed)."""

    client: str
    session: int
    timestamp: int
    submit_s: float
    commit_s: float | None
    latency_ms: float | None


@dataclass
class RunData:
    """Everything saved about one run (what the figures and the report read)."""

    path: Path
    summary: dict[str, Any]
    requests: list[RequestRow]
    scenario: dict[str, Any] | None = None
    run_info: dict[str, Any] = field(default_factory=dict)
    phases: list[PhaseRow] | None = None
    views: list[ViewRow] | None = None
    faults: list[FaultRow] | None = None


def reproduce_command(scenario_path: str, seed: int, overrides: Sequence[str]) -> str:
    """The shell command that runs the same scenario with the same seed again."""
    cmd = ["medbft", "run", scenario_path, "--seed", str(seed)]
    for item in overrides:
        cmd += ["--set", item]
    return shlex.join(cmd)


# -- writing ---------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.9f}"


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def save_run_data(out: Path, scenario: Scenario, result: Any, info: dict[str, Any]) -> None:
    """Write scenario.yaml, run.json, phases.csv, views.csv and faults.csv into `out`.

    `result` is a `sim.run.RunResult`; `info` is saved as run.json (command, scenario file).
    """
    out.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(scenario), sort_keys=False, allow_unicode=True, width=96)
    (out / SCENARIO).write_text(text)
    (out / RUN).write_text(json.dumps(info, indent=2) + "\n")
    phases = phase_rows(result.requests, result.events, scenario.n)
    _write_csv(out / PHASES, PHASE_COLUMNS, (
        (p.request, p.view, p.seq, *(_fmt(t) for t in (p.submit_s, p.pre_prepare_s,
                                                        p.prepared_s, p.committed_s, p.reply_s)))
        for p in phases))
    views = view_rows(result.events, scenario.node_ids)
    _write_csv(out / VIEWS, VIEW_COLUMNS, (
        (v.view, v.primary, _fmt(v.view_change_s), _fmt(v.entered_s)) for v in views))
    faults = fault_rows(result.summary, result.events)
    _write_csv(out / FAULTS, FAULT_COLUMNS, (
        (w.kind, w.target, _fmt(w.start_s), _fmt(w.end_s), w.label) for w in faults))


def write_results(out: Path, summary: dict[str, Any], requests: list[Any],
                  trace: list[dict[str, Any]] | None) -> None:
    """Write summary.json, requests.csv and (when given) trace.jsonl into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    with (out / "requests.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["client", "session", "timestamp", "submit_s", "commit_s",
                         "latency_ms", "view", "seq"])
        for r in requests:
            writer.writerow([
                r.client, r.session, r.timestamp, f"{r.submit_ns / 1e9:.9f}",
                "" if r.commit_ns is None else f"{r.commit_ns / 1e9:.9f}",
                "" if r.latency_ns is None else f"{r.latency_ns / 1e6:.6f}",
                "" if r.view is None else r.view, "" if r.seq is None else r.seq,
            ])
    if trace is not None:
        with (out / "trace.jsonl").open("w") as fh:
            for row in trace:
                fh.write(json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n")


def trace_digest(trace: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for row in trace:
        h.update(json.dumps(row, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    return h.hexdigest()



# -- reading ---------------------------------------------------------------------------------


def _opt_float(text: str | None) -> float | None:
    return None if text in (None, "") else float(text)


def _read_csv(path: Path) -> list[dict[str, str]] | None:
    if not path.exists():
        return None
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def read_requests(path: Path) -> list[RequestRow]:
    """Parse requests.csv."""
    rows = _read_csv(path)
    if rows is None:
        raise FileNotFoundError(f"{path}: not found; expected the requests.csv of a run")
    return [RequestRow(r["client"], int(r["session"]), int(r["timestamp"]),
                       float(r["submit_s"]), _opt_float(r["commit_s"]),
                       _opt_float(r["latency_ms"])) for r in rows]


def load_run(path: Path) -> RunData:
    """Read a run's results directory. summary.json and requests.csv are required; the other
    files are optional (a directory from an older medbft lacks them: those figures are skipped).

    Raises FileNotFoundError naming the missing file.
    """
    if not (path / SUMMARY).exists():
        raise FileNotFoundError(f"{path}: no {SUMMARY}; expected a directory written by "
                                "`medbft run` (or a sweep directory with results.csv)")
    data = RunData(path, json.loads((path / SUMMARY).read_text()),
                   read_requests(path / REQUESTS))
    if (path / SCENARIO).exists():
        data.scenario = yaml.safe_load((path / SCENARIO).read_text())
    if (path / RUN).exists():
        data.run_info = json.loads((path / RUN).read_text())
    phases = _read_csv(path / PHASES)
    if phases is not None:
        data.phases = [PhaseRow(r["request"], int(r["view"]), int(r["seq"]),
                                *(float(r[c]) for c in PHASE_COLUMNS[3:])) for r in phases]
    views = _read_csv(path / VIEWS)
    if views is not None:
        data.views = [ViewRow(int(r["view"]), r["primary"], _opt_float(r["view_change_s"]),
                              _opt_float(r["entered_s"])) for r in views]
    faults = _read_csv(path / FAULTS)
    if faults is not None:
        data.faults = [FaultRow(r["kind"], r["target"], float(r["start_s"]),
                                   _opt_float(r["end_s"]), r["label"]) for r in faults]
    return data
