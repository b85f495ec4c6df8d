"""The sweep's files: runs/<key>.json for each finished run, results.csv over them all.

Why this exists: a sweep must survive being interrupted and give the same table whoever
ran it. A finished run is stored as runs/<key>.json, key = (scenario hash, seed, code
version) (`medbft.scenario.scenario_hash`, `sim.run.code_version`); a point whose file
exists is not run again. results.csv is rebuilt from those files, in grid order, so it is
identical whatever ran where and in which order. Wall-clock time is kept in runs/*.json
only, not in results.csv. The metric columns are defined in `flatten_metrics` (see
docs/results.md for each).

What it must not know: how runs are executed (execute.py).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .spec import SweepPoint, value_text

__all__ = ["RESULTS", "RUNS", "SPEC", "collect_rows", "flatten_metrics", "parse_cell",
           "read_results", "run_key", "store_run", "write_results_csv"]

RESULTS, SPEC, RUNS = "results.csv", "sweep.json", "runs"


def _stats(values: Iterable[float]) -> dict[str, float | None]:
    vals = list(values)
    if not vals:
        return {"mean": None, "max": None}
    return {"mean": round(sum(vals) / len(vals), 6), "max": round(max(vals), 6)}


def flatten_metrics(summary: Mapping[str, Any], derived: Mapping[str, Any]) -> dict[str, Any]:
    """The metric columns of one results.csv row (see docs/results.md for each)."""
    msgs = summary["messages"]
    util = (summary.get("cpu") or {}).get("utilisation") or {}
    out: dict[str, Any] = {"n": summary["n"], "f": summary["f"]}
    out.update({f"requests.{k}": v for k, v in summary["requests"].items()})
    out["throughput_tps"] = summary["throughput_tps"]
    out.update({f"latency_ms.{k}": v for k, v in summary["latency_ms"].items()})
    out["stall_ms"] = round(derived["stall_ms"], 6)
    out.update({f"phase_ms.{k}": None if v is None else round(v, 6)
                for k, v in derived["phase_ms"].items()})
    for key in ("total", "bytes", "lost", "per_committed_request"):
        out[f"messages.{key}"] = msgs[key]
    out.update({f"messages.by_type.{k}": v for k, v in msgs["by_type"].items()})
    for key in ("view_changes", "final_view", "stable_checkpoint", "state_transfers"):
        out[key] = summary[key]
    out["rejected_messages"] = summary["rejected_messages"]["total"]
    out["ignored_messages"] = summary["ignored_messages"]["total"]
    out.update({f"cpu.utilisation.{k}": v for k, v in _stats(util.values()).items()})
    for key in ("safety", "liveness", "expect"):
        out[f"{key}.ok"] = summary[key]["ok"]
    harm = summary.get("harm")  # simulated runs (docs/harm.md)
    out["harm.events"] = None if harm is None else harm["events"]
    out["harm.unfair"] = None if harm is None else harm["unfair"]["events"]
    out["sim_time_s"] = summary["sim_time_s"]
    return out


def run_key(scenario_hash_hex: str, seed: int, version: str) -> str:
    """The file name (without .json) of one finished run in runs/."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", version)
    return f"{scenario_hash_hex[:20]}-seed{seed}-v{safe}"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 9))
    return value_text(value) if not isinstance(value, int) else str(value)


def write_results_csv(path: Path, keys: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """results.csv: grid keys, seed, scenario_hash, version, then every metric (a message
    type a run did not send counts 0; a metric that does not apply is empty)."""
    fixed = [*keys, "seed", "scenario_hash", "version"]
    metrics: list[str] = []
    for row in rows:
        metrics += [k for k in row if k not in fixed and k not in metrics]
    by_type = sorted(m for m in metrics if m.startswith("messages.by_type."))
    metrics = [m for m in metrics if not m.startswith("messages.by_type.")] + by_type
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(fixed + metrics)
        for row in rows:
            writer.writerow([_cell(row.get(c, 0 if c in by_type else None))
                             for c in fixed + metrics])


def parse_cell(text: str) -> Any:
    """A results.csv cell back to a value: '' -> None, true/false, int, float, else text."""
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def read_results(path: Path) -> list[dict[str, Any]]:
    """Read results.csv into rows of typed values (see `parse_cell`)."""
    with path.open(newline="") as fh:
        return [{k: parse_cell(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _row(point: SweepPoint, seed: int, record: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = dict(point.params)
    row.update(seed=seed, scenario_hash=point.scenario_hash, version=record["version"])
    row.update(record["metrics"])
    return row


def store_run(runs: Path, key: str, point: SweepPoint, seed: int,
           result: Mapping[str, Any]) -> dict[str, Any]:
    summary = result["summary"]
    record = {"scenario_hash": summary["scenario_hash"], "seed": seed,
              "version": summary["version"], "overrides": list(point.overrides),
              "wall_time_s": result["wall_time_s"], "cpu_time_s": result["cpu_time_s"],
              "metrics": flatten_metrics(summary, result["derived"]), "summary": summary}
    tmp = runs / f"{key}.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(runs / f"{key}.json")
    return record


def collect_rows(points: Sequence[SweepPoint], seeds: Sequence[int], runs: Path,
                 version: str) -> list[dict[str, Any]]:
    """The rows of every finished run of the grid, in grid order."""
    rows = []
    for point in points:
        for seed in seeds:
            path = runs / f"{run_key(point.scenario_hash, seed, version)}.json"
            if path.exists():
                rows.append(_row(point, seed, json.loads(path.read_text())))
    return rows
