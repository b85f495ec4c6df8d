"""Is the simulator's cost linear in run length? Wall time and peak memory of a 2 s and a
20 s run of one ledger scenario, and their ratio.

Why this exists: the simulator-speed issue "Linear cost in run length" asks that a 20 s run
cost at most 11x a 2 s run of the same scenario with the ledger app. Before incremental
checkpoint digests, every checkpoint serialised the whole ledger (O(state), and the state
grows with the run), so long runs cost quadratically more. This script measures the ratio on
this machine, and the peak memory each extra committed request adds (the issue also asks
for peak memory flat in run length). It is a measuring tool, never used in tests (its
arithmetic is: tests/test_bench_tools.py).

How to run (from the project root):

    .venv/bin/python bench/run_length.py                # 2 s and 20 s runs, ~1-2 min
    .venv/bin/python bench/run_length.py --repeat 3     # median of 3 per length
    .venv/bin/python bench/run_length.py --json results/run_length.json

The scenario is built in code: n = 4, constant 10 ms links, `cpu: none`, the ledger app (the
default workload app), 4 closed-loop clients x 4 outstanding, default protocol parameters,
a 1 s drain. Each length runs in a fresh child process so that its peak memory (ru_maxrss)
is its own; wall time covers the whole `run_scenario` call.
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


def run_case(duration: str, repeat: int) -> dict[str, Any]:
    from medbft.scenario import parse_scenario
    from sim.run import run_scenario

    scenario = parse_scenario(scenario_dict(duration), "bench/run_length.py")
    rss_before = maxrss_mb()
    walls = []
    summary: dict[str, Any] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = run_scenario(scenario)
        walls.append(time.perf_counter() - t0)
        summary = result.summary
        del result
    return {
        "duration": duration,
        "wall_s": statistics.median(walls),
        "wall_s_all": walls,
        "committed": summary["requests"]["committed"],
        "messages": summary["messages"]["total"],
        "rss_before_mb": rss_before,
        "peak_rss_mb": maxrss_mb(),
        "safety_ok": summary["safety"]["ok"],
        "liveness_ok": summary["liveness"]["ok"],
    }


def memory_growth_kb(short: dict[str, Any], long: dict[str, Any]) -> float:
    """Peak memory added per extra committed request, in KB, from the short run to the long
    one (the issue asks for peak memory flat in run length: 0)."""
    extra = long["committed"] - short["committed"]
    if extra <= 0:
        raise ValueError("the long run committed no more requests than the short one")
    return (long["peak_rss_mb"] - short["peak_rss_mb"]) * 1024 / extra


def run_in_child(duration: str, repeat: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--case", duration, "--repeat", str(repeat)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"case {duration} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per length; the median wall time is reported (default 1)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one length, print JSON
    args = ap.parse_args(argv)

    if args.case:
        print(json.dumps(run_case(args.case, args.repeat)))
        return 0

    print(f"run length on {platform.machine()} / Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; n = 4, 10 ms links, "
          f"cpu: none, ledger app, 4 clients x 4 outstanding, drain 1 s")
    rows = [run_in_child(d, args.repeat) for d in LENGTHS]
    print(f"{'duration':>8} {'wall s':>8} {'committed':>9} {'messages':>9} {'peak RSS':>9}  ok")
    for r in rows:
        ok = "yes" if r["safety_ok"] and r["liveness_ok"] else "NO"
        print(f"{r['duration']:>8} {r['wall_s']:>8.2f} {r['committed']:>9} {r['messages']:>9} "
              f"{r['peak_rss_mb']:>6.0f} MB  {ok}")
    ratio = rows[1]["wall_s"] / rows[0]["wall_s"]
    print(f"ratio 20 s / 2 s wall time: {ratio:.2f} (target <= {TARGET_RATIO:g}: "
          f"{'met' if ratio <= TARGET_RATIO else 'not met'})")
    growth = memory_growth_kb(rows[0], rows[1])
    print(f"peak memory: +{rows[1]['peak_rss_mb'] - rows[0]['peak_rss_mb']:.0f} MB for "
          f"{rows[1]['committed'] - rows[0]['committed']} more committed requests, "
          f"{growth:.1f} KB each (target: flat)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "machine": platform.machine(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "repeat": args.repeat, "target_ratio": TARGET_RATIO,
            "ratio": ratio, "peak_rss_kb_per_extra_request": growth, "runs": rows,
        }, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
