"""Does a sweep use both cores? 100 tiny runs with --jobs 1, then with --jobs 2; prints both
wall times and the speed-up.

Why this exists: the results issue asks that a sweep of 100 runs use both cores of the
project's 2-core machines, and that the benchmark report its speed-up over one job. Runs are
independent, so the ideal is 2x; what is lost goes to starting the worker processes (a fork
server that imports the simulator once), to moving scenarios and summaries between
processes, and to the parent's bookkeeping (writing runs/*.json and results.csv). The two
sweeps must also write byte-identical results.csv files, which the script checks. It also
prints the CPU time the runs used and the cores that makes on average, and the load average
before each sweep: on a machine where other work holds a core, two jobs cannot reach 2x, and
these numbers say why. It is a measuring tool, never used in tests.

How to run (from the project root):

    .venv/bin/python bench/sweep_speed.py            # 100 runs twice: ~15 s on a 2-core VM
    .venv/bin/python bench/sweep_speed.py --runs 40 --duration 200ms
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medbft.sweep import load_sweep, run_sweep  # noqa: E402 (after the sys.path line)


def _sweep_file(folder: Path, runs: int, duration: str) -> Path:
    """A sweep of `runs` tiny runs: 4 grid points (n = 4, 7; batch 1, 4) x runs/4 seeds."""
    seeds = max(1, runs // 4)
    spec = {
        "name": "sweep-speed",
        "base": str(ROOT / "scenarios" / "baseline.yaml"),
        "set": {"duration": duration, "drain": "1s", "workload.outstanding": 2,
                "network.latency": {"dist": "uniform", "low": "5ms", "high": "15ms"}},
        "grid": {"nodes": [4, 7], "protocol.batch_size": [1, 4]},
        "seeds": seeds,
    }
    path = folder / "sweep-speed.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _load() -> str:
    """The 1-minute load average: other work on the machine takes cores from the sweep."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def _timed(sweep_path: Path, out: Path, jobs: int) -> float:
    sweep = load_sweep(sweep_path)
    load = _load()
    start = time.perf_counter()
    outcome = run_sweep(sweep, out, jobs=jobs)
    elapsed = time.perf_counter() - start
    if outcome.failed or outcome.reused:
        raise SystemExit(f"unexpected: {len(outcome.failed)} failed, {outcome.reused} reused")
    cpu = sum(json.loads(p.read_text())["cpu_time_s"] for p in (out / "runs").glob("*.json"))
    print(f"--jobs {jobs}: {outcome.ran} runs in {elapsed:.2f} s ({outcome.ran / elapsed:.1f} "
          f"runs/s); the runs used {cpu:.2f} CPU-s, {cpu / elapsed:.2f} cores on average "
          f"(load average before: {load})")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="runs per sweep (default 100)")
    parser.add_argument("--duration", default="500ms", help="simulated duration of each run")
    args = parser.parse_args()
    print(f"{args.runs} runs of {args.duration} each; {os.cpu_count()} CPU(s)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sweep = _sweep_file(folder, args.runs, args.duration)
        one = _timed(sweep, folder / "jobs1", 1)
        two = _timed(sweep, folder / "jobs2", 2)
        same = ((folder / "jobs1" / "results.csv").read_bytes()
                == (folder / "jobs2" / "results.csv").read_bytes())
    print(f"speed-up with 2 jobs: {one / two:.2f}x (ideal 2.00x); results.csv identical: "
          f"{'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":  # the guard matters: worker processes import this file
    sys.exit(main())
