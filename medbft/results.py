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

A run folder holds the files of one run only. `check_run_dir` (before simulating) refuses an
--out that is a file, is not writable, or is a non-empty folder that no run wrote (unless
forced); `clear_run_dir` (after simulating, before writing) removes every file an earlier run
wrote there: those listed in its run.json `files` manifest, plus the names a run writes (for
folders from a medbft without the manifest). `write_manifest` lists the files this run wrote
in run.json. `append_index` adds one row per run to `results/index.csv`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medbft.errors import UsageError
from medbft.scenario import Scenario, to_dict
from medbft.timeline import FaultRow, PhaseRow, ViewRow, fault_rows, phase_rows, view_rows

__all__ = ["INDEX", "INDEX_COLUMNS", "RequestRow", "RunData", "append_index", "check_run_dir",
           "clear_run_dir", "code_commit", "headline", "index_path", "is_run_dir", "load_run",
           "package_version", "read_requests", "reproduce_command", "save_run_data",
           "trace_digest", "write_manifest", "write_results"]

SUMMARY, REQUESTS, SCENARIO, RUN = "summary.json", "requests.csv", "scenario.yaml", "run.json"
PHASES, VIEWS, FAULTS = "phases.csv", "views.csv", "faults.csv"
PHASE_COLUMNS = ("request", "view", "seq", "submit_s", "pre_prepare_s", "prepared_s",
                 "committed_s", "reply_s")
VIEW_COLUMNS = ("view", "primary", "view_change_s", "entered_s")
FAULT_COLUMNS = ("kind", "target", "start_s", "end_s", "label")
#: Files and folders `medbft run` writes (the fallback when run.json has no `files` manifest).
RUN_FILES = (SUMMARY, REQUESTS, SCENARIO, RUN, PHASES, VIEWS, FAULTS, "trace.jsonl",
             "report.html", "ledger.json", "ledger_digests.json", "offchain.json")
PLOTS = "plots"
#: The run index under results/ and its columns.
INDEX = "index.csv"
INDEX_COLUMNS = ("finished_utc", "scenario", "seed", "scenario_hash", "version", "commit",
                 "path", "throughput_tps", "latency_p50_ms", "latency_p99_ms", "safety_ok",
                 "liveness_ok", "verdict", "command")


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


# -- the run folder --------------------------------------------------------------------------


def package_version() -> str:
    """medbft's version: the installed package's (importlib.metadata), else pyproject.toml's
    when running from a source tree, else '0+unknown'."""
    from importlib import metadata

    try:
        return metadata.version("medbft")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1) if match else "0+unknown"


def code_commit() -> str:
    """The git commit of the medbft source ('<sha>' or '<sha>+dirty'), '' outside git."""
    here = str(Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{sha}+dirty" if dirty else sha


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a folder written by `medbft run` (it has run.json or summary.json)."""
    return (path / RUN).is_file() or (path / SUMMARY).is_file()


def check_run_dir(out: Path, force: bool = False, flag: str = "--out") -> None:
    """Refuse, before anything runs, a results folder the run could not (or must not) write:
    an existing file, a path under a file, an unwritable folder, or a non-empty folder no run
    wrote (unless `force`). Raises UsageError with a one-line reason."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out}: is a file, not a folder; give a folder for the results")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"{flag} {out}: {probe} is a file, so the results folder cannot be "
                         f"created there")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out}: {probe} is not writable")
    if out.is_dir() and not force and not is_run_dir(out) and any(out.iterdir()):
        raise UsageError(f"{flag} {out}: the folder is not empty and no `medbft run` wrote it; "
                         f"pick another folder, or pass --force to write into it anyway")


def _manifest(out: Path, key: str = "files") -> list[str]:
    """run.json's `files` (what the run wrote) or `kept` (what it found and left alone)."""
    try:
        info = json.loads((out / RUN).read_text())
    except (OSError, ValueError):
        return []
    files = info.get(key) if isinstance(info, dict) else None
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def _files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def clear_run_dir(out: Path) -> tuple[dict[str, Any] | None, set[str]]:
    """Remove what an earlier run wrote into `out` (a run folder; nothing is removed from
    any other folder): its manifest's files, the files a run writes and everything under
    plots/ but the manifest's `kept` files. Returns (the earlier run's summary or None, the
    files left in place: not written by a run)."""
    if not out.is_dir() or not is_run_dir(out):
        return None, set(_files(out)) if out.is_dir() else set()
    previous = None
    if (out / SUMMARY).is_file():
        try:
            previous = json.loads((out / SUMMARY).read_text())
        except ValueError:
            previous = {}
    resolved = out.resolve()
    kept = {out / name for name in _manifest(out, "kept")}
    emptied: set[Path] = set()
    for name in {*_manifest(out), *RUN_FILES}:
        path = out / name
        inside = path.parent.resolve() == resolved or resolved in path.parent.resolve().parents
        if inside and ".." not in Path(name).parts and (path.is_file() or path.is_symlink()):
            path.unlink()  # a symlink itself, never what it points to
            emptied.update(p for p in path.parents if resolved in p.resolve().parents)
    plots = out / PLOTS
    if plots.is_symlink():
        plots.unlink()
    elif plots.is_dir():
        for path in sorted(plots.rglob("*"), reverse=True):
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            elif path not in kept:
                path.unlink()
        if not any(plots.iterdir()):
            plots.rmdir()
    for path in sorted(emptied, reverse=True):  # folders the manifest's files emptied
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    return previous, set(_files(out))


def write_manifest(out: Path, kept: AbstractSet[str] = frozenset(), **extra: Any) -> list[str]:
    """Add `files` (every file in `out` but `kept`, relative, sorted), `kept` (files found
    there that no run wrote, when any) and `extra` to run.json; the next run into `out`
    removes exactly `files`. Returns them."""
    info: dict[str, Any] = {}
    if (out / RUN).is_file():
        info = json.loads((out / RUN).read_text())
    info.update(extra)
    files = sorted({*(f for f in _files(out) if f not in kept), RUN})
    info["files"] = files
    if kept:
        info["kept"] = sorted(kept)
    else:
        info.pop("kept", None)
    (out / RUN).write_text(json.dumps(info, indent=2) + "\n")
    return files


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures a script or the index wants first: throughput, p50/p99, safety, liveness."""
    lat = summary.get("latency_ms") or {}
    return {"throughput_tps": summary.get("throughput_tps"),
            "latency_p50_ms": lat.get("p50"), "latency_p99_ms": lat.get("p99"),
            "messages_per_request": (summary.get("messages") or {}).get("per_committed_request"),
            "safety_ok": summary["safety"]["ok"], "liveness_ok": summary["liveness"]["ok"]}


def index_path(out: Path) -> Path | None:
    """results/index.csv of the nearest folder named `results` holding `out`, or None."""
    for parent in out.resolve().parents:
        if parent.name == "results":
            return parent / INDEX
    return None


def append_index(out: Path, summary: dict[str, Any], ok: bool, command: str) -> Path | None:
    """Append one row for the run in `out` to results/index.csv when `out` lies under a folder
    named results/ (writing the header first if the file is new). Returns the index or None."""
    index = index_path(out)
    if index is None:
        return None
    head = headline(summary)
    row = {"finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "scenario": summary.get("scenario"), "seed": summary.get("seed"),
           "scenario_hash": summary.get("scenario_hash") or "",
           "version": package_version(), "commit": code_commit(),
           "path": os.path.relpath(out.resolve(), index.parent.parent),
           **{k: head[k] for k in INDEX_COLUMNS if k in head},
           "verdict": "pass" if ok else "fail", "command": command}
    new = not index.exists()
    with index.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in INDEX_COLUMNS})
    return index


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
