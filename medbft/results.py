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
- `events.csv`: when each replica crashed, recovered and installed a transferred state;
- `plots/` (figures, `medbft.views`) and `report.html` (`medbft.views.report`).

A run folder holds the files of one run only. `check_run_dir` (before simulating) refuses an
--out that is a file, is not writable, or is a non-empty folder that no run wrote (unless
forced); `clear_run_dir` (after simulating, before writing) removes every file an earlier run
wrote there: those listed in its run.json `files` manifest, plus the names a run writes (for
folders from a medbft without the manifest). `write_manifest` lists the files this run wrote
in run.json. `append_index` adds one row per run to `results/index.csv`. `medbft cluster` and
`medbft load` use the same helpers; a cluster's folder also holds its network directory and
node logs, state of that run that the next cluster run removes before it starts
(`medbft.real.cluster.clear_cluster_state`).

Every command that reads a run folder (`plot`, `sequence`, `ledger`, `compare`) reads its
files through the readers at the end of this module (`load_run`, `read_summary`,
`read_table`, `read_json_object`, `read_yaml_mapping`, `trace_rows`). They check each file
(a JSON object with the keys readers need, a CSV header and a value of the right type in
every cell, a YAML mapping, whole JSON lines) and raise `RunFileError`, a UsageError naming
the file and what is wrong, so a truncated or hand-edited file gives one line and exit 2.
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
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medbft.errors import UsageError
from medbft.scenario import Scenario, to_dict
from medbft.timeline import (
    FAULT_EVENTS,
    VIEW_EVENTS,
    FaultRow,
    PhaseRow,
    ViewRow,
    fault_rows,
    phase_rows,
    view_rows,
)

__all__ = ["CLUSTER_LOGS", "CLUSTER_NETWORK", "INDEX", "INDEX_COLUMNS", "RequestRow", "RunData",
           "RunFileError", "append_index", "check_jsonl_end", "check_run_dir", "clear_run_dir",
           "code_commit", "finish_real_run", "headline", "index_path", "is_run_dir", "load_run",
           "package_version", "read_json_object", "read_requests", "read_scenario_copy",
           "read_summary", "read_table", "read_yaml_mapping", "real_command",
           "reproduce_command", "save_run_data", "trace_digest", "trace_rows", "write_manifest",
           "write_results"]

SUMMARY, REQUESTS, SCENARIO, RUN = "summary.json", "requests.csv", "scenario.yaml", "run.json"
PHASES, VIEWS, FAULTS, EVENTS = "phases.csv", "views.csv", "faults.csv", "events.csv"
PHASE_COLUMNS = ("request", "view", "seq", "submit_s", "pre_prepare_s", "prepared_s",
                 "committed_s", "reply_s")
VIEW_COLUMNS = ("view", "primary", "view_change_s", "entered_s")
FAULT_COLUMNS = ("kind", "target", "start_s", "end_s", "label")
EVENT_COLUMNS = ("t_s", "node", "event")
#: The replica events events.csv keeps: what the time-series figures mark.
MARKED_EVENTS = ("crash", "recover", "state-transfer")
#: Files and folders `medbft run` writes (the fallback when run.json has no `files` manifest).
RUN_FILES = (SUMMARY, REQUESTS, SCENARIO, RUN, PHASES, VIEWS, FAULTS, EVENTS, "trace.jsonl",
             "report.html", "ledger.json", "ledger_digests.json", "offchain.json")
PLOTS = "plots"
#: What `medbft cluster` writes under its --out besides the results: the network directory
#: (keys, certificates, node databases under data/) and the node logs.
CLUSTER_NETWORK, CLUSTER_LOGS = "network", "logs"
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
    #: (t_s, node, event) of each crash, recover and state-transfer (events.csv).
    events: list[tuple[float, str, str]] | None = None
    missing: list[str] = field(default_factory=list)
    """Optional files the folder lacks (an older medbft): their figures are skipped."""


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
    """Whether `path` is a folder written by `medbft run`, `cluster` or `load` (it has
    run.json or summary.json), or by a `medbft cluster` stopped before its results (it has
    the cluster's network/genesis.json)."""
    return ((path / RUN).is_file() or (path / SUMMARY).is_file()
            or (path / CLUSTER_NETWORK / "genesis.json").is_file())


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
        raise UsageError(f"{flag} {out}: the folder is not empty and no medbft run (`run`, "
                         f"`cluster`, `load`) wrote it; "
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


def real_command(argv: Sequence[str]) -> str:
    """The command line of a real run (`medbft cluster ...`, `medbft load ...`) as run.json's
    and the index's `command`: it repeats the run, not its numbers."""
    return shlex.join(["medbft", *argv])


def finish_real_run(out: Path, kept: AbstractSet[str], summary: dict[str, Any], ok: bool,
                    argv: Sequence[str], **extra: Any) -> Path | None:
    """After a real run wrote summary.json and requests.csv into `out`: run.json (mode
    "real", the command, `extra`, version, commit and the `files` manifest) and a row in
    results/index.csv when `out` lies under results/. Returns the index or None."""
    command = real_command(argv)
    info = {"mode": "real", "command": command, **extra}
    (out / RUN).write_text(json.dumps(info, indent=2) + "\n")
    write_manifest(out, {f for f in kept if (out / f).is_file()}, version=package_version(),
                   commit=code_commit())
    return append_index(out, summary, ok, command)


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
    """Write scenario.yaml, run.json, phases.csv, views.csv, faults.csv and events.csv into
    `out`.

    `result` is a `sim.run.RunResult`; `info` is saved as run.json (command, scenario file).
    """
    out.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(scenario), sort_keys=False, allow_unicode=True, width=96)
    (out / SCENARIO).write_text(text)
    (out / RUN).write_text(json.dumps(info, indent=2) + "\n")
    events = result.events  # a sim.events.EventLog: each reader selects the kinds it reads
    phases = phase_rows(result.requests, events, scenario.n)
    _write_csv(out / PHASES, PHASE_COLUMNS, (
        (p.request, p.view, p.seq, *(_fmt(t) for t in (p.submit_s, p.pre_prepare_s,
                                                        p.prepared_s, p.committed_s, p.reply_s)))
        for p in phases))
    views = view_rows(events.select(VIEW_EVENTS), scenario.node_ids)
    _write_csv(out / VIEWS, VIEW_COLUMNS, (
        (v.view, v.primary, _fmt(v.view_change_s), _fmt(v.entered_s)) for v in views))
    faults = fault_rows(result.summary, events.select(FAULT_EVENTS))
    _write_csv(out / FAULTS, FAULT_COLUMNS, (
        (w.kind, w.target, _fmt(w.start_s), _fmt(w.end_s), w.label) for w in faults))
    _write_csv(out / EVENTS, EVENT_COLUMNS, (
        (_fmt(ev["t"] / 1e9), ev["node"], ev["event"]) for ev in events.select(MARKED_EVENTS)))


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
#
# Every file of a run folder is read through one of the functions below. Each one checks what
# it reads (a JSON object with the keys the figures need, a CSV with its header and a value of
# the right type in every cell, a YAML mapping, JSON lines) and raises RunFileError, a
# UsageError naming the file and what is wrong with it, so a damaged folder gives one line and
# exit 2, never a traceback or a silently shorter figure.


class RunFileError(UsageError):
    """A file of a run folder is missing, truncated or malformed (the message names it)."""


#: A cell's type: (parser, what the message calls it). Parsers raise ValueError.
_Cell = tuple[Any, str]


def _int(text: str) -> int:
    return int(text)


def _opt_int(text: str) -> int | None:
    return None if text == "" else int(text)


def _float(text: str) -> float:
    value = float(text)
    if value != value:  # NaN: never written by a run
        raise ValueError(text)
    return value


def _opt_float(text: str | None) -> float | None:
    return None if text in (None, "") else _float(text)


INT: _Cell = (_int, "an integer")
OPT_INT: _Cell = (_opt_int, "an integer or empty")
FLOAT: _Cell = (_float, "a number")
OPT_FLOAT: _Cell = (_opt_float, "a number or empty")
TEXT: _Cell = (str, "text")

REQUEST_TYPES: dict[str, _Cell] = {
    "client": TEXT, "session": INT, "timestamp": INT, "submit_s": FLOAT, "commit_s": OPT_FLOAT,
    "latency_ms": OPT_FLOAT, "view": OPT_INT, "seq": OPT_INT}
PHASE_TYPES: dict[str, _Cell] = {"request": TEXT, "view": INT, "seq": INT,
                                 **{c: FLOAT for c in PHASE_COLUMNS[3:]}}
VIEW_TYPES: dict[str, _Cell] = {"view": INT, "primary": TEXT, "view_change_s": OPT_FLOAT,
                                "entered_s": OPT_FLOAT}
FAULT_TYPES: dict[str, _Cell] = {"kind": TEXT, "target": TEXT, "start_s": FLOAT,
                                 "end_s": OPT_FLOAT, "label": TEXT}
EVENT_TYPES: dict[str, _Cell] = {"t_s": FLOAT, "node": TEXT, "event": TEXT}
#: Columns an older requests.csv may lack (everything else is required).
_OPTIONAL_COLUMNS = frozenset({"view", "seq"})

_NUMBER = (int, float)
_NUMBER_OR_NULL = (int, float, type(None))
#: summary.json: key -> the JSON types its value may have (required keys only; the figures
#: and the report read the others with defaults).
SUMMARY_SHAPE: dict[str, tuple[type, ...]] = {
    "scenario": (str,), "n": (int,), "duration_s": _NUMBER, "requests": (dict,),
    "throughput_tps": _NUMBER, "latency_ms": (dict,), "messages": (dict,), "safety": (dict,),
    "liveness": (dict,)}
#: Keys that may be absent, but when present must have these types.
SUMMARY_OPTIONAL: dict[str, tuple[type, ...]] = {
    "seed": (int, type(None)), "f": (int, type(None)), "sim_time_s": _NUMBER_OR_NULL,
    "wall_time_s": _NUMBER_OR_NULL, "view_changes": (int, type(None)),
    "final_view": (int, type(None)), "expect": (dict,), "cpu": (dict, type(None)),
    "byzantine": (list, type(None)), "scenario_hash": (str, type(None))}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else _json_type(t()) for t in types)


def _text(path: Path, what: str) -> str:
    """The file's text; RunFileError if it is missing, unreadable or not UTF-8."""
    if not path.exists():
        raise RunFileError(f"{path}: missing; expected {what}")
    if not path.is_file():
        raise RunFileError(f"{path}: not a file; expected {what}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path}: not UTF-8 text (byte {exc.start}); expected {what}") \
            from None
    except OSError as exc:
        raise RunFileError(f"{path}: cannot be read ({exc.strerror}); expected {what}") \
            from None


def read_json_object(path: Path, what: str = "a JSON object",
                     shape: dict[str, tuple[type, ...]] | None = None,
                     optional: dict[str, tuple[type, ...]] | None = None) -> dict[str, Any]:
    """A JSON file holding an object, with the keys of `shape` (of those types) and the keys of
    `optional`, when present, of those types. Raises RunFileError naming the file."""
    text = _text(path, what)
    if not text.strip():
        raise RunFileError(f"{path}: empty; expected {what}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        cut = exc.pos >= len(text.rstrip())
        raise RunFileError(f"{path}: {'truncated' if cut else 'malformed'} JSON at line "
                           f"{exc.lineno} column {exc.colno} ({exc.msg}); expected {what}") \
            from None
    if not isinstance(value, dict):
        raise RunFileError(f"{path}: holds {_json_type(value)}; expected {what}")
    missing = [k for k in shape or () if k not in value]
    if missing:
        raise RunFileError(f"{path}: no {', '.join(missing)}; expected {what}")
    for key, types in {**(optional or {}), **(shape or {})}.items():
        if key in value and (not isinstance(value[key], types)
                             or (isinstance(value[key], bool) and bool not in types)):
            raise RunFileError(f"{path}: {key} is {_json_type(value[key])}, expected "
                               f"{_type_names(types)}")
    return value


def read_yaml_mapping(path: Path, what: str = "a YAML mapping") -> dict[str, Any]:
    """A YAML file holding a mapping. Raises RunFileError naming the file."""
    text = _text(path, what)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise RunFileError(f"{path}: malformed YAML{where} ({problem}); expected {what}") \
            from None
    if not isinstance(value, dict):
        got = "nothing" if value is None else _json_type(value).replace("an array", "a list")
        raise RunFileError(f"{path}: holds {got}; expected {what}")
    return value


def read_table(path: Path, types: dict[str, _Cell],
               optional: AbstractSet[str] = frozenset()) -> list[dict[str, Any]]:
    """A CSV file written by a run: a header naming every column of `types` (but `optional`),
    rows with as many fields as the header, each cell parsed by its type, and a final line
    break (a file without one was cut short). Raises RunFileError naming the file, the line
    and the column."""
    text = _text(path, f"a CSV file with columns {','.join(types)}")
    if not text:
        raise RunFileError(f"{path}: empty; expected a header line {','.join(types)}")
    if not text.endswith("\n"):
        raise RunFileError(f"{path}: truncated (the last line has no line break); it was cut "
                           f"short, run the scenario again")
    try:
        lines = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise RunFileError(f"{path}: malformed CSV ({exc})") from None
    header = lines[0] if lines else []
    missing = [c for c in types if c not in header and c not in optional]
    if missing:
        raise RunFileError(f"{path}: the header has no column {', '.join(missing)}; expected "
                           f"{','.join(types)}")
    rows = []
    for number, fields in enumerate(lines[1:], 2):
        if len(fields) != len(header):
            raise RunFileError(f"{path}: line {number} has {len(fields)} fields, the header "
                               f"{len(header)}")
        raw = dict(zip(header, fields, strict=True))
        row: dict[str, Any] = {}
        for column, (parse, kind) in types.items():
            if column not in raw:
                row[column] = None
                continue
            try:
                row[column] = parse(raw[column])
            except ValueError:
                raise RunFileError(f"{path}: line {number}, column {column}: {raw[column]!r} "
                                   f"is not {kind}") from None
        rows.append(row)
    return rows


def check_jsonl_end(path: Path) -> None:
    """Raise RunFileError unless `path` (JSON lines a run wrote in full) ends with a complete
    line: a cheap check, for readers that stop early, that the file was not cut short."""
    _text_head = "JSON lines (one object per line)"
    if not path.is_file():
        raise RunFileError(f"{path}: missing; expected {_text_head}")
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            raise RunFileError(f"{path}: empty; expected {_text_head}")
        fh.seek(max(0, size - 65536))
        tail = fh.read()
    if not tail.endswith(b"\n"):
        raise RunFileError(f"{path}: truncated (the last line has no line break); it was cut "
                           f"short, run the scenario again with --trace")
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        row = json.loads(last)
    except ValueError as exc:
        raise RunFileError(f"{path}:{_line_count(path)}: not a JSON line "
                           f"({getattr(exc, 'msg', exc)}); the last line is damaged") from None
    if not isinstance(row, dict):
        raise RunFileError(f"{path}:{_line_count(path)}: the last line holds "
                           f"{_json_type(row)}; expected {_text_head}")


def _line_count(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def trace_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of trace.jsonl, checked: the end first (not cut short), then each row lazily
    as it is read (a run writes them in time order, so a reader may stop after its window)."""
    check_jsonl_end(path)
    return _trace_rows(path)


def _trace_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RunFileError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("t"), int) \
                    or "event" not in row:
                raise RunFileError(f"{path}:{number}: expected an object with t (ns) and "
                                   f"event")
            need = ("node", "to", "kind") if row["event"] == "send" else ("node",)
            missing = [k for k in need if k not in row]
            if missing:
                raise RunFileError(f"{path}:{number}: a {row['event']} event without "
                                   f"{', '.join(missing)}")
            yield row


def read_summary(path: Path) -> dict[str, Any]:
    """summary.json, checked: the keys the figures, the report and a comparison read."""
    what = "the summary.json object `medbft run` writes"
    summary = read_json_object(path, what, SUMMARY_SHAPE, SUMMARY_OPTIONAL)
    for key in ("safety", "liveness"):
        if not isinstance(summary[key].get("ok"), bool | None):
            raise RunFileError(f"{path}: {key}.ok is {_json_type(summary[key].get('ok'))}, "
                               f"expected true/false")
    for key, value in summary["latency_ms"].items():
        if not isinstance(value, _NUMBER_OR_NULL) or isinstance(value, bool):
            raise RunFileError(f"{path}: latency_ms.{key} is {_json_type(value)}, expected "
                               f"a number or null")
    for key in ("submitted", "committed"):
        if not isinstance(summary["requests"].get(key), int):
            raise RunFileError(f"{path}: requests.{key} is "
                               f"{_json_type(summary['requests'].get(key))}, expected an integer")
    msgs = summary["messages"]
    for key in ("by_type", "bytes_by_type", "by_node", "bytes_by_node"):
        table = msgs.get(key, {})
        if not isinstance(table, dict) or not all(
                isinstance(v, _NUMBER) and not isinstance(v, bool) for v in table.values()):
            raise RunFileError(f"{path}: messages.{key} is not an object of numbers")
    return summary


def read_requests(path: Path) -> list[RequestRow]:
    """Parse requests.csv (RunFileError naming the file, line and column if damaged)."""
    return [RequestRow(r["client"], r["session"], r["timestamp"], r["submit_s"], r["commit_s"],
                       r["latency_ms"]) for r in read_table(path, REQUEST_TYPES,
                                                            _OPTIONAL_COLUMNS)]


def read_scenario_copy(path: Path) -> dict[str, Any]:
    """scenario.yaml (the scenario as run), checked: a whole file (it ends with a line break),
    a mapping with name, duration and `nodes`, a list of mappings with an id."""
    scenario = read_yaml_mapping(path, "the scenario as run (a YAML mapping)")
    if not _text(path, "").endswith("\n"):
        raise RunFileError(f"{path}: truncated (the last line has no line break); it was cut "
                           f"short, run the scenario again")
    missing = [k for k in ("name", "nodes", "duration") if k not in scenario]
    if missing:
        raise RunFileError(f"{path}: no {', '.join(missing)}; expected the scenario as run")
    nodes = scenario.get("nodes", [])
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and "id" in n for n in nodes):
        raise RunFileError(f"{path}: nodes is not a list of mappings with an id")
    workload = scenario.get("workload", {})
    if workload is not None and not isinstance(workload, dict):
        raise RunFileError(f"{path}: workload is {_json_type(workload)}, expected a mapping")
    return scenario


#: What each figure needs beyond summary.json and requests.csv (a figure whose file is
#: missing is not drawn, or drawn without what that file adds, with a warning).
OPTIONAL_FILES = (SCENARIO, RUN, PHASES, VIEWS, FAULTS, EVENTS)


def load_run(path: Path) -> RunData:
    """Read a run's results directory, checking every file. summary.json and requests.csv are
    required; the other files are optional (a folder from an older medbft lacks them; the
    figures that need them are skipped: `RunData.missing` lists them), but a file that is
    there must be whole and well formed.

    Raises RunFileError (a UsageError) naming the missing or damaged file.
    """
    if not (path / SUMMARY).exists():
        raise RunFileError(f"{path / SUMMARY}: missing; expected a directory written by "
                           "`medbft run` (or a sweep directory with results.csv)")
    data = RunData(path, read_summary(path / SUMMARY), read_requests(path / REQUESTS))
    data.missing = [name for name in OPTIONAL_FILES if not (path / name).exists()]
    if (path / SCENARIO).exists():
        data.scenario = read_scenario_copy(path / SCENARIO)
    if (path / RUN).exists():
        data.run_info = read_json_object(path / RUN, "the run.json object `medbft run` writes",
                                         optional={"command": (str,), "files": (list,),
                                                   "overrides": (list,)})
    if (path / PHASES).exists():
        data.phases = [PhaseRow(r["request"], r["view"], r["seq"],
                                *(r[c] for c in PHASE_COLUMNS[3:]))
                       for r in read_table(path / PHASES, PHASE_TYPES)]
    if (path / VIEWS).exists():
        data.views = [ViewRow(r["view"], r["primary"], r["view_change_s"], r["entered_s"])
                      for r in read_table(path / VIEWS, VIEW_TYPES)]
    if (path / FAULTS).exists():
        data.faults = [FaultRow(r["kind"], r["target"], r["start_s"], r["end_s"], r["label"])
                       for r in read_table(path / FAULTS, FAULT_TYPES)]
    if (path / EVENTS).exists():
        data.events = [(r["t_s"], r["node"], r["event"])
                       for r in read_table(path / EVENTS, EVENT_TYPES)]
    return data
