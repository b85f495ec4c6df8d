"""Is the simulator's cost linear in run length? Wall time and peak memory of a 2 s and a
20 s run of one ledger scenario, their ratio, and what each committed request costs as the
long run goes on.

Why this exists: the simulator-speed issue "Linear cost in run length" asks that a 20 s run
cost at most 11x a 2 s run of the same scenario with the ledger app. Before incremental
checkpoint digests, every checkpoint serialised the whole ledger (O(state), and the state
grows with the run), so long runs cost quadratically more. This script measures the ratio on
this machine, the CPU time per committed request in each 2 s of the long run (a cost that
grows with the run shows as a rising row; a cheap start as a low first entry), and the peak
memory each extra committed request adds (the issue also asks for peak memory flat in run
length). It is a measuring tool, never used in tests (its arithmetic is:
tests/test_bench_tools.py).

How to run (from the project root):

    .venv/bin/python bench/run_length.py                # one 2 s and one 20 s run, ~30 s
    .venv/bin/python bench/run_length.py --repeat 3     # three rounds, medians
    .venv/bin/python bench/run_length.py --json results/run_length.json

The scenario is built in code: n = 4, constant 10 ms links, `cpu: none`, the ledger app (the
default workload app), 4 closed-loop clients x 4 outstanding, default protocol parameters,
a 1 s drain. Every run has a fresh child process of its own, so that its peak memory
(ru_maxrss) is its own and nothing one run remembers (the ledger's and the codecs' bounded
memos live as long as the process) speeds up the next. Wall time covers the whole
`run_scenario` call. A round runs the two lengths one after the other, and the ratio is
taken within each round: this machine's speed drifts by 10-20% over minutes, which moved
the ratio by as much when all the short runs came first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 11.0
LENGTHS = ("2s", "20s")
#: The windows of simulated time the cost per committed request is given for.
WINDOW_S = 2.0


def scenario_dict(duration: str) -> dict[str, Any]:
    return {
        "name": f"run-length-{duration}",
        "seed": 1,
        "duration": duration,
        "drain": "1s",
        "nodes": 4,
        "network": {"latency": "10ms"},
        "cpu": "none",
        "workload": {"clients": 4, "outstanding": 4},
    }


def maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def run_case(duration: str) -> dict[str, Any]:
    """One run of `duration`, in this process: wall time, counts, peak memory, and CPU time
    and committed requests per progress slice (to see how the cost per request moves)."""
    from medbft.scenario import parse_scenario
    from sim.run import run_scenario

    scenario = parse_scenario(scenario_dict(duration), "bench/run_length.py")
    slices: list[tuple[float, float, int]] = []  # (simulated s, CPU s, committed) at its end

    def progress(now_ns: int, _duration_ns: int, settled: int, _submitted: int) -> None:
        slices.append((now_ns / 1e9, time.process_time(), settled))

    slices.append((0.0, time.process_time(), 0))
    t0 = time.perf_counter()
    result = run_scenario(scenario, progress=progress)
    wall = time.perf_counter() - t0
    summary = result.summary
    return {
        "duration": duration,
        "wall_s": wall,
        "committed": summary["requests"]["committed"],
        "messages": summary["messages"]["total"],
        "peak_rss_mb": maxrss_mb(),
        "safety_ok": summary["safety"]["ok"],
        "liveness_ok": summary["liveness"]["ok"],
        "cost_us_per_request": cost_by_window(slices, WINDOW_S, scenario.duration_ns / 1e9),
    }


def cost_by_window(slices: list[tuple[float, float, int]], window_s: float,
                   duration_s: float) -> list[float]:
    """CPU microseconds per committed request in each `window_s` of simulated time, from
    (simulated s, CPU s, committed so far) at the end of each progress slice, the first
    (0, start, 0). A window is closed by the first slice that ends at or after its end; the
    last one runs to the end of the drain after `duration_s`. A window in which nothing
    committed is left out."""
    out: list[float] = []
    start_cpu, start_done = slices[0][1], slices[0][2]
    edge = window_s
    for i, (sim_s, cpu_s, done) in enumerate(slices[1:], 1):
        last = i == len(slices) - 1
        if (sim_s + 1e-9 >= edge and edge < duration_s - 1e-9) or last:
            if done > start_done:
                out.append((cpu_s - start_cpu) / (done - start_done) * 1e6)
            start_cpu, start_done = cpu_s, done
            while edge <= sim_s + 1e-9:
                edge += window_s
    return out


def memory_growth_kb(short: dict[str, Any], long: dict[str, Any]) -> float:
    """Peak memory added per extra committed request, in KB, from the short run to the long
    one (the issue asks for peak memory flat in run length: 0)."""
    extra = long["committed"] - short["committed"]
    if extra <= 0:
        raise ValueError("the long run committed no more requests than the short one")
    return (long["peak_rss_mb"] - short["peak_rss_mb"]) * 1024 / extra


def run_in_child(duration: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--case", duration],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"case {duration} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (the lower middle one of an even count), with every
    run's wall time beside it."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    return {**ordered[(len(ordered) - 1) // 2], "wall_s_all": [r["wall_s"] for r in runs]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds (a 2 s and a 20 s run each); the medians are reported "
                         "(default 1)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one length, print JSON
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    if args.case:
        print(json.dumps(run_case(args.case)))
        return 0

    print(f"run length on {platform.machine()} / Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; n = 4, 10 ms links, "
          f"cpu: none, ledger app, 4 clients x 4 outstanding, drain 1 s")
    rounds = [[run_in_child(d) for d in LENGTHS] for _ in range(args.repeat)]
    ratios = [long["wall_s"] / short["wall_s"] for short, long in rounds]
    rows = [median_row([r[i] for r in rounds]) for i in range(len(LENGTHS))]
    print(f"{'duration':>8} {'wall s':>8} {'committed':>9} {'messages':>9} {'peak RSS':>9}  ok")
    for r in rows:
        ok = "yes" if r["safety_ok"] and r["liveness_ok"] else "NO"
        print(f"{r['duration']:>8} {r['wall_s']:>8.2f} {r['committed']:>9} {r['messages']:>9} "
              f"{r['peak_rss_mb']:>6.0f} MB  {ok}")
    ratio = statistics.median(ratios)
    each = f" (rounds: {', '.join(f'{x:.2f}' for x in ratios)})" if len(ratios) > 1 else ""
    print(f"ratio 20 s / 2 s wall time: {ratio:.2f}{each} (target <= {TARGET_RATIO:g}: "
          f"{'met' if ratio <= TARGET_RATIO else 'not met'}); "
          f"{rows[1]['committed'] / rows[0]['committed']:.2f}x the committed requests")
    for short, long in rounds:
        print(f"CPU us per committed request, by {WINDOW_S:g} s of simulated time: "
              f"2 s run {' '.join(f'{x:.0f}' for x in short['cost_us_per_request'])}; "
              f"20 s run {' '.join(f'{x:.0f}' for x in long['cost_us_per_request'])}")
    growth = memory_growth_kb(rows[0], rows[1])
    print(f"peak memory: +{rows[1]['peak_rss_mb'] - rows[0]['peak_rss_mb']:.0f} MB for "
          f"{rows[1]['committed'] - rows[0]['committed']} more committed requests, "
          f"{growth:.1f} KB each (target: flat)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "machine": platform.machine(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "repeat": args.repeat, "target_ratio": TARGET_RATIO,
            "ratio": ratio, "round_ratios": ratios,
            "peak_rss_kb_per_extra_request": growth, "runs": rows,
            "rounds": rounds,
        }, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
