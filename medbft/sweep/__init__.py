"""Parameter sweeps: a base scenario, a grid of overrides by dotted path, every combination run
with each seed, in parallel, resumable; one CSV row per run.

Why this exists: a single run is an anecdote; a paper's figure is a metric against a parameter
over several seeds with a confidence interval. This module turns a sweep file into runs, runs
them on local processes (or a Dask distributed cluster), keeps each finished run on disk so
a rerun only does what is missing, and writes results.csv. Figures are `medbft.views.sweep_figures`.

Sweep file (YAML; paths relative to the file)::

    name: scale                    # optional, default: the file's stem
    description: ...               # optional
    base: ../baseline.yaml         # required: the base scenario
    set: {duration: 3s}            # optional: overrides for every point (mapping or list of
                                   #   'path=value' strings)
    grid:                          # required: dotted path -> list of values (>= 1 each)
      nodes: [4, 7, 10, 16, 31]
      protocol.batch_size: [1, 10]
    seeds: 3                       # optional, default 3: seeds 1..3; or a list [7, 8, 9]
    plots:                         # optional: default, each grid key against the main metrics,
      - {x: nodes, y: throughput_tps, lines: protocol.batch_size}   # one line per other key

Resume: a finished run is stored as runs/<key>.json, key = (scenario hash, seed, code version)
(`medbft.scenario.scenario_hash`, `sim.run.code_version`); a point whose file exists is not run
again. results.csv is rebuilt from those files, in grid order, so it is identical whatever
ran where and in which order. Wall-clock time is kept in runs/*.json only, not in results.csv.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import multiprocessing
import os
import re
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medbft.errors import UsageError
from medbft.scenario import ScenarioError, load_scenario, parse_scenario, scenario_hash, to_dict

__all__ = [
    "DEFAULT_METRICS",
    "Sweep",
    "SweepPoint",
    "flatten_metrics",
    "load_sweep",
    "mean_ci95",
    "read_results",
    "run_sweep",
    "run_task",
    "t_quantile_975",
]

#: Metrics drawn by default against each grid parameter.
DEFAULT_METRICS = ("throughput_tps", "latency_ms.p50", "latency_ms.p99",
                   "messages.per_committed_request")
RESULTS, SPEC, RUNS = "results.csv", "sweep.json", "runs"
#: How long to try to reach a Dask scheduler before giving up.
DASK_CONNECT_TIMEOUT = "10s"
_SWEEP_KEYS = {"name", "description", "base", "set", "grid", "seeds", "plots"}


# -- the sweep file --------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepPoint:
    """One combination of grid values: its overrides and the scenario they give."""

    params: dict[str, Any]
    overrides: tuple[str, ...]
    scenario: dict[str, Any]
    scenario_hash: str


@dataclass
class Sweep:
    """A validated sweep file."""

    name: str
    source: str
    base: Path
    fixed: tuple[str, ...]
    grid: dict[str, list[Any]]
    seeds: list[int]
    plots: list[dict[str, str]] = field(default_factory=list)
    description: str = ""

    def spec(self) -> dict[str, Any]:
        """The JSON-able form saved as sweep.json (what `medbft plot` needs)."""
        return {"name": self.name, "source": self.source, "base": str(self.base),
                "set": list(self.fixed), "grid": self.grid, "seeds": self.seeds,
                "plots": self.plots or default_plots(list(self.grid)),
                "description": self.description}


def value_text(value: Any) -> str:
    """A grid value as override text and as a CSV cell: YAML flow (JSON) for non-strings."""
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))


def _bad(source: str, where: str, message: str) -> UsageError:
    return UsageError(f"{source}: {where}: {message}" if where else f"{source}: {message}")


def _fixed_overrides(raw: Any, source: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, Mapping):
        return tuple(f"{k}={value_text(v)}" for k, v in raw.items())
    if isinstance(raw, list) and all(isinstance(x, str) and "=" in x for x in raw):
        return tuple(raw)
    raise _bad(source, "set", "expected a mapping {path: value} or a list of 'path=value' "
                              f"strings, e.g. set: {{duration: 3s}}; got {raw!r}")


def _grid(raw: Any, source: str) -> dict[str, list[Any]]:
    if not isinstance(raw, Mapping) or not raw:
        raise _bad(source, "grid", "expected a mapping of dotted paths to lists of values, "
                                   "e.g. grid: {nodes: [4, 7], protocol.batch_size: [1, 10]}")
    out: dict[str, list[Any]] = {}
    for key, values in raw.items():
        if not isinstance(key, str) or key in ("seed", "seeds"):
            raise _bad(source, f"grid.{key}", "use `seeds:` for seeds; grid keys are dotted "
                                              "scenario paths such as protocol.batch_size")
        if not isinstance(values, list) or not values:
            raise _bad(source, f"grid.{key}", f"expected a non-empty list of values; got "
                                              f"{values!r}")
        out[key] = values
    return out


def _seeds(raw: Any, source: str) -> list[int]:
    if raw is None:
        return [1, 2, 3]
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return list(range(1, raw + 1))
    if isinstance(raw, list) and raw and all(isinstance(s, int) and s >= 0 for s in raw):
        return list(dict.fromkeys(raw))
    raise _bad(source, "seeds", f"expected a count >= 1 (seeds 1..N) or a list of seeds "
                                f"such as [7, 8, 9]; got {raw!r}")


def _plots(raw: Any, grid: Mapping[str, Any], source: str) -> list[dict[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad(source, "plots", "expected a list of {x, y, lines} mappings")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not {"x", "y"} <= set(item) or not set(item) <= {
                "x", "y", "lines"}:
            raise _bad(source, f"plots[{i}]", "expected {x: <grid key>, y: <metric>, lines: "
                                              "<grid key, optional>}")
        for key in ("x", "lines"):
            if key in item and item[key] not in grid:
                raise _bad(source, f"plots[{i}].{key}", f"{item[key]!r} is not a grid key; "
                                                        f"grid keys: {', '.join(grid)}")
        out.append({k: str(v) for k, v in item.items()})
    return out


def default_plots(keys: Sequence[str]) -> list[dict[str, str]]:
    """Each grid key against each default metric; with two keys, one line per value of the
    other (more keys are pooled: name the figures you want in `plots:`)."""
    out = []
    for x in keys:
        others = [k for k in keys if k != x]
        for y in DEFAULT_METRICS:
            spec = {"x": x, "y": y}
            if len(others) == 1:
                spec["lines"] = others[0]
            out.append(spec)
    return out


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read and validate a sweep file; raise UsageError naming the file and field."""
    source = os.fspath(path)
    try:
        raw = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _bad(source, "", "file not found; expected a sweep YAML file such as "
                               "scenarios/sweeps/scale.yaml") from None
    except (OSError, yaml.YAMLError) as exc:
        raise _bad(source, "", f"cannot read the sweep file: {exc}") from None
    if not isinstance(raw, Mapping):
        raise _bad(source, "", "expected a mapping with base, grid and seeds")
    unknown = sorted(set(map(str, raw)) - _SWEEP_KEYS)
    if unknown:
        raise _bad(source, unknown[0], f"unknown field; allowed: {', '.join(sorted(_SWEEP_KEYS))}")
    if not isinstance(raw.get("base"), str):
        raise _bad(source, "base", "missing or not a path; e.g. base: ../baseline.yaml")
    grid = _grid(raw.get("grid"), source)
    return Sweep(
        name=str(raw.get("name") or Path(source).stem), source=source,
        base=(Path(source).parent / raw["base"]), fixed=_fixed_overrides(raw.get("set"), source),
        grid=grid, seeds=_seeds(raw.get("seeds"), source),
        plots=_plots(raw.get("plots"), grid, source),
        description=str(raw.get("description") or ""))


def expand(sweep: Sweep) -> list[SweepPoint]:
    """Every grid combination, in grid order (first key slowest), validated up front so a bad
    value stops the sweep before any run starts."""
    points = []
    keys = list(sweep.grid)
    for combo in itertools.product(*(sweep.grid[k] for k in keys)):
        params = dict(zip(keys, combo, strict=True))
        overrides = (*sweep.fixed, *(f"{k}={value_text(v)}" for k, v in params.items()))
        try:
            scenario = load_scenario(sweep.base, overrides=overrides)
        except ScenarioError as exc:
            raise UsageError(f"{sweep.source}: point {params}: {exc}") from None
        points.append(SweepPoint(params, overrides, to_dict(scenario), scenario_hash(scenario)))
    return points


# -- one run (in a worker) -------------------------------------------------------------------


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one (scenario, seed) and return its summary and derived metrics, or the error.

    Runs in a worker process (or a Dask worker): takes and returns only JSON-able data.
    """
    import time

    from medbft.timeline import PHASES, phase_rows, stall_ms
    from sim.run import run_scenario

    try:
        scenario = parse_scenario(task["scenario"], "<sweep point>")
        start, cpu_start = time.perf_counter(), time.process_time()
        result = run_scenario(scenario, seed=task["seed"])
        rows = phase_rows(result.requests, result.events, scenario.n)
        phase_ms = {name: (sum(r.durations_ms()[name] for r in rows) / len(rows) if rows
                           else None) for name in PHASES}
        commits = [r.commit_ns / 1e9 for r in result.requests if r.commit_ns is not None]
        derived = {"stall_ms": stall_ms(commits, scenario.duration_ns / 1e9),
                   "phase_ms": phase_ms}
        return {"summary": result.summary, "derived": derived,
                "wall_time_s": round(time.perf_counter() - start, 3),
                "cpu_time_s": round(time.process_time() - cpu_start, 3)}
    except Exception:  # reported per run, the sweep goes on
        return {"error": traceback.format_exc()}


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
    out["sim_time_s"] = summary["sim_time_s"]
    return out


# -- confidence intervals --------------------------------------------------------------------

#: Student's t, 0.975 quantile, for 1..30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (table to 30, then
    1.96 + 2.4/df, within 0.002 of the exact value)."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% confidence interval of the mean): t * s / sqrt(k), with
    s the sample standard deviation of k values; the half-width is 0 for one value."""
    k = len(values)
    if k == 0:
        return math.nan, math.nan
    mean = sum(values) / k
    if k == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (k - 1)
    return mean, t_quantile_975(k - 1) * math.sqrt(var) / math.sqrt(k)


# -- results files ---------------------------------------------------------------------------


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


# -- running ---------------------------------------------------------------------------------


@dataclass
class SweepOutcome:
    """What a sweep did: runs done now, runs reused from an earlier sweep, failures."""

    ran: int = 0
    reused: int = 0
    failed: list[tuple[dict[str, Any], int, str]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


Submit = Callable[[dict[str, Any]], Any]


def _local_pool(jobs: int) -> ProcessPoolExecutor:
    """Worker processes from a fork server that has imported the simulator once, so each
    worker starts fast and none inherits the parent's threads (rich's progress refresher,
    a Dask client's event loop). As with any non-fork start method, a script that calls
    `run_sweep` with jobs > 1 needs an `if __name__ == "__main__":` guard."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["medbft.sweep", "sim.run"])
    return ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)


def _local_results(tasks: list[dict[str, Any]], jobs: int) -> Iterator[tuple[int, dict]]:
    if jobs <= 1:
        for i, task in enumerate(tasks):
            yield i, run_task(task)
        return
    pool = _local_pool(jobs)
    try:
        futures: dict[Future[dict[str, Any]], int] = {
            pool.submit(run_task, task): i for i, task in enumerate(tasks)}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _dask_results(tasks: list[dict[str, Any]], address: str) -> Iterator[tuple[int, dict]]:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise UsageError("--scheduler needs Dask: pip install 'medbft[dask]'") from None
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        futures = {client.submit(run_task, task, pure=False,
                                 key=f"medbft-{task['key']}-{i}"): i
                   for i, task in enumerate(tasks)}
        for fut in dask_completed(list(futures), loop=client.loop):
            yield futures[fut], fut.result()
    finally:
        client.close()


def _row(point: SweepPoint, seed: int, record: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = dict(point.params)
    row.update(seed=seed, scenario_hash=point.scenario_hash, version=record["version"])
    row.update(record["metrics"])
    return row


def _store(runs: Path, key: str, point: SweepPoint, seed: int,
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


def _check(result: Mapping[str, Any], point: SweepPoint, version: str) -> str | None:
    """Why a worker's result cannot be stored under this key (None: it can)."""
    if "error" in result:
        return str(result["error"])
    summary = result["summary"]
    if summary["version"] != version:
        return (f"the worker runs medbft {summary['version']}, this sweep {version}: install "
                "the same version on every Dask worker")
    if summary["scenario_hash"] != point.scenario_hash:
        return "the worker ran a different scenario (hash mismatch)"
    return None


def run_sweep(sweep: Sweep, out: Path, *, jobs: int = 1, scheduler: str | None = None,
              progress: Callable[[int, int], Any] | None = None,
              on_advance: Callable[[], Any] | None = None) -> SweepOutcome:
    """Run every (point, seed) of `sweep` not already in out/runs/, write results.csv.

    `progress(total_todo, reused)` is called once before the runs start, `on_advance()` after
    each finished run. Figures are drawn by the caller (`medbft.views.sweep_figures`).
    """
    from sim.run import code_version

    version = code_version()
    points = expand(sweep)
    runs = out / RUNS
    runs.mkdir(parents=True, exist_ok=True)
    (out / SPEC).write_text(json.dumps(sweep.spec(), indent=2) + "\n")
    outcome = SweepOutcome()
    todo: list[tuple[SweepPoint, int, str]] = []
    for point in points:
        for seed in sweep.seeds:
            key = run_key(point.scenario_hash, seed, version)
            if (runs / f"{key}.json").exists():
                outcome.reused += 1
            else:
                todo.append((point, seed, key))
    if progress is not None:
        progress(len(todo), outcome.reused)
    tasks = [{"scenario": p.scenario, "seed": s, "key": k} for p, s, k in todo]
    stream = (_dask_results(tasks, scheduler) if scheduler
              else _local_results(tasks, jobs))
    try:
        for i, result in stream:
            point, seed, key = todo[i]
            problem = _check(result, point, version)
            if problem is None:
                _store(runs, key, point, seed, result)
                outcome.ran += 1
            else:
                outcome.failed.append((point.params, seed, problem))
            if on_advance is not None:
                on_advance()
    finally:
        outcome.rows = collect_rows(points, sweep.seeds, runs, version)
        write_results_csv(out / RESULTS, list(sweep.grid), outcome.rows)
    return outcome


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
