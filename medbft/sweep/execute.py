"""Running a sweep: every (point, seed) not already stored, on local worker processes or
a Dask distributed cluster, then results.csv.

Why this exists: a grid of runs over seeds takes long, and each run is independent. The
runs go to a process pool (or Dask workers) as JSON-able tasks; each result is checked
(same code version, same scenario) and stored as it arrives (store.py), so an interrupted
sweep resumes where it stopped. results.csv is rewritten at the end, even after an error.

What it must not know: the command line (medbft/cli/sweep.py reports progress through the
callbacks of `run_sweep`) and figures (medbft/views/sweep_figures.py).
"""

from __future__ import annotations

import json
import multiprocessing
import traceback
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medbft.errors import UsageError
from medbft.scenario import parse_scenario

from .spec import Sweep, SweepPoint, expand
from .store import RESULTS, RUNS, SPEC, collect_rows, run_key, store_run, write_results_csv

__all__ = ["DASK_CONNECT_TIMEOUT", "SweepOutcome", "run_sweep", "run_task"]

#: How long to try to reach a Dask scheduler before giving up.
DASK_CONNECT_TIMEOUT = "10s"


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


@dataclass
class SweepOutcome:
    """What a sweep did: runs done now, runs reused from an earlier sweep, failures."""

    ran: int = 0
    reused: int = 0
    failed: list[tuple[dict[str, Any], int, str]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


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
              on_advance: Callable[[int], Any] | None = None) -> SweepOutcome:
    """Run every (point, seed) of `sweep` not already in out/runs/, write results.csv.

    `progress(total_todo, reused)` is called once before the runs start, `on_advance(failed)`
    after each finished run, with the number of runs failed so far. Figures are drawn by the
    caller (`medbft.views.sweep_figures`).
    """
    from medbft.summary import code_version

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
                store_run(runs, key, point, seed, result)
                outcome.ran += 1
            else:
                outcome.failed.append((point.params, seed, problem))
            if on_advance is not None:
                on_advance(len(outcome.failed))
    finally:
        outcome.rows = collect_rows(points, sweep.seeds, runs, version)
        write_results_csv(out / RESULTS, list(sweep.grid), outcome.rows)
    return outcome

