"""How fast does the simulator run? Simulated protocol messages and simulated seconds per wall
second, for n = 4, 16 and 64, and with batching.

Why this exists: the simulator is only useful if sweeps finish in minutes, and the issue sets a
target of >= 100,000 simulated protocol messages per wall second at n = 4. PBFT sends O(n^2)
messages per request, so simulated seconds per wall second fall quickly with n; this script
measures both on this machine so changes to node/ and sim/ can be judged by numbers. It is a
measuring tool, never used in tests.

How to run (from the project root):

    .venv/bin/python bench/sim_speed.py                 # full: ~20 s on a 2-core VM
    .venv/bin/python bench/sim_speed.py --quick         # shorter runs: ~5 s
    .venv/bin/python bench/sim_speed.py --json results/sim_speed.json
    .venv/bin/python bench/sim_speed.py --profile       # cProfile of the n = 4 case: what
                                                        # limits speed (top 25 functions)

Scenarios are built in code (constant 10 ms links, `cpu: none`, batch_size 1, one closed-loop
client with one request outstanding; n = 64 uses a short duration). The second table runs n = 4
with batch_size 10 and 10 clients x 2 outstanding. Each case runs in a fresh child process so
that its peak memory (ru_maxrss) is its own; the child reports its RSS before the run too, so
the growth during the run is visible, and the wall time spent in the cyclic garbage collector
(`gc.callbacks`; it grows with the run's live objects, so long runs slow down). Wall time
covers the whole `run_scenario` call (building identities and replicas included), median over
`--repeat` runs.
"""

from __future__ import annotations

import argparse
import gc
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

TARGET_MSGS_PER_S = 100_000
TARGET_TEXT = "target: >= 100,000 simulated protocol messages per wall second at n = 4"

# (n, full duration, quick duration)
SCALING = ((4, "60s", "15s"), (16, "15s", "4s"), (64, "1500ms", "400ms"))
BATCHED = ((4, "20s", "5s"),)


def scenario_dict(n: int, duration: str, *, batch_size: int = 1, clients: int = 1,
                  outstanding: int = 1) -> dict[str, Any]:
    return {
        "name": f"sim-speed-n{n}-b{batch_size}-c{clients}x{outstanding}",
        "seed": 1,
        "duration": duration,
        "drain": "5s",
        "nodes": n,
        "network": {"latency": "10ms"},
        "protocol": {"batch_size": batch_size},
        "cpu": "none",
        "workload": {"clients": clients, "outstanding": outstanding},
    }


def maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


# ---------------------------------------------------------------------------------------------
# One case (runs in a child process)


def run_case(spec: dict[str, Any], repeat: int) -> dict[str, Any]:
    from medbft.scenario import parse_scenario
    from sim.run import digest_summary, run_scenario

    scenario = parse_scenario(spec, "bench/sim_speed.py")
    rss_before = maxrss_mb()
    gc_spent = [0.0, 0.0]  # total, start of the current collection

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_spent[1] = time.perf_counter()
        else:
            gc_spent[0] += time.perf_counter() - gc_spent[1]

    gc.callbacks.append(on_gc)
    walls, gcs, digests = [], [], set()
    summary: dict[str, Any] = {}
    for _ in range(repeat):
        gc.collect()
        gc_spent[0] = 0.0
        t0 = time.perf_counter()
        result = run_scenario(scenario)
        walls.append(time.perf_counter() - t0)
        gcs.append(gc_spent[0])
        summary = result.summary
        digests.add(digest_summary(summary))
        del result
    gc.callbacks.remove(on_gc)
    wall = statistics.median(walls)
    messages = summary["messages"]["total"]
    return {
        "n": summary["n"],
        "batch_size": spec["protocol"]["batch_size"],
        "clients": spec["workload"]["clients"],
        "outstanding": spec["workload"]["outstanding"],
        "duration": spec["duration"],
        "sim_s": summary["sim_time_s"],
        "wall_s": wall,
        "wall_s_all": walls,
        "gc_s": statistics.median(gcs),
        "committed": summary["requests"]["committed"],
        "submitted": summary["requests"]["submitted"],
        "messages": messages,
        "msgs_per_wall_s": messages / wall,
        "sim_s_per_wall_s": summary["sim_time_s"] / wall,
        "committed_per_wall_s": summary["requests"]["committed"] / wall,
        "rss_before_mb": rss_before,
        "peak_rss_mb": maxrss_mb(),
        "safety_ok": summary["safety"]["ok"],
        "liveness_ok": summary["liveness"]["ok"],
        "deterministic": len(digests) == 1,
    }


def run_in_child(spec: dict[str, Any], repeat: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(spec), "--repeat", str(repeat)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"case {spec['name']} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Output


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(title)
    head = (f"{'n':>3} {'batch':>5} {'load':>6} {'sim s':>7} {'wall s':>7} {'committed':>9} "
            f"{'messages':>9} {'msgs/wall s':>11} {'sim s/wall s':>12} {'req/wall s':>10} "
            f"{'GC s':>5} {'peak RSS':>9} {'run +RSS':>8}  ok")
    print(head)
    print("-" * len(head))
    for r in rows:
        ok = "yes" if r["safety_ok"] and r["liveness_ok"] and r["deterministic"] else "NO"
        load = f"{r['clients']}x{r['outstanding']}"
        print(f"{r['n']:>3} {r['batch_size']:>5} {load:>6} "
              f"{r['sim_s']:>7.2f} {r['wall_s']:>7.2f} {r['committed']:>9} {r['messages']:>9} "
              f"{r['msgs_per_wall_s']:>11,.0f} {r['sim_s_per_wall_s']:>12.3f} "
              f"{r['committed_per_wall_s']:>10,.0f} {r['gc_s']:>5.2f} {r['peak_rss_mb']:>6.0f} MB "
              f"{r['peak_rss_mb'] - r['rss_before_mb']:>5.0f} MB  {ok}")
    print()


def profile(n: int, duration: str, top: int) -> None:
    import cProfile
    import pstats

    from medbft.scenario import parse_scenario
    from sim.run import run_scenario

    scenario = parse_scenario(scenario_dict(n, duration), "bench/sim_speed.py")
    t0 = time.perf_counter()
    run_scenario(scenario)  # warms imports and caches outside the profile; unprofiled wall
    plain = time.perf_counter() - t0
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    result = run_scenario(scenario)
    prof.disable()
    wall = time.perf_counter() - t0
    msgs = result.summary["messages"]["total"]
    print(f"profile: n = {n}, duration {duration}: {msgs} messages, "
          f"{result.summary['requests']['committed']} committed; {wall:.2f} s wall under "
          f"cProfile vs {plain:.2f} s without ({msgs / plain:,.0f} msgs/wall s). cProfile "
          f"inflates code making many small Python calls (the codec) more than C calls.")
    for key in ("cumulative", "tottime"):
        print(f"\n=== top {top} by {key} ===")
        stats = pstats.Stats(prof, stream=sys.stdout)
        stats.strip_dirs().sort_stats(key).print_stats(top)
    # Own time grouped by source file: which layer the time goes to.
    by_file: dict[str, float] = {}
    raw = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        if filename == "~":  # C functions: name them (hmac_digest, ECPublicKey.verify, ...)
            group = "C: " + func.strip("<>{}").replace("built-in method ", "").replace(
                "method ", "")
            group = group if tottime > 0.01 * wall else "C: (other builtins)"
        else:
            path = Path(filename)
            group = f"{path.parent.name}/{path.name}" if path.parent.name in (
                "node", "sim") else path.name
        by_file[group] = by_file.get(group, 0.0) + tottime
    total = sum(by_file.values())
    print(f"=== own time by file (top {top}) ===")
    for group, t in sorted(by_file.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{t:8.3f} s {t / total:6.1%}  {group}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter simulated durations")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per case; the median wall time is reported (default 1)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--profile", action="store_true",
                    help="only profile one case (n = --profile-n) under cProfile and print the "
                         "top functions by cumulative and by total time")
    ap.add_argument("--profile-n", type=int, default=4, choices=(4, 16, 64))
    ap.add_argument("--top", type=int, default=25, help="functions shown per profile table")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = ap.parse_args(argv)

    if args.case:
        print(json.dumps(run_case(json.loads(args.case), args.repeat)))
        return 0

    pick = 2 if args.quick else 1
    if args.profile:
        duration = next(c[pick] for c in SCALING if c[0] == args.profile_n)
        profile(args.profile_n, duration, args.top)
        return 0

    print(f"simulator speed on {platform.machine()} / Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
          f"{' (quick)' if args.quick else ''}; 10 ms links, cpu: none")
    print()
    t_start = time.perf_counter()
    scaling = [run_in_child(scenario_dict(c[0], c[pick]), args.repeat) for c in SCALING]
    print_table("scaling: batch_size 1, one closed-loop client, 1 outstanding", scaling)
    batched = [run_in_child(scenario_dict(c[0], c[pick], batch_size=10, clients=10,
                                          outstanding=2), args.repeat) for c in BATCHED]
    print_table("batching: batch_size 10, 10 clients x 2 outstanding", batched)

    n4 = next(r for r in scaling if r["n"] == 4)
    ratio = n4["msgs_per_wall_s"] / TARGET_MSGS_PER_S
    print(TARGET_TEXT)
    print(f"measured at n = 4: {n4['msgs_per_wall_s']:,.0f} msgs/wall s = {ratio:.2f}x the "
          f"target ({'met' if ratio >= 1 else 'not met'})")
    nb = batched[0]
    print(f"with batching (n = 4): {nb['msgs_per_wall_s']:,.0f} msgs/wall s = "
          f"{nb['msgs_per_wall_s'] / TARGET_MSGS_PER_S:.2f}x; "
          f"{nb['committed_per_wall_s'] / n4['committed_per_wall_s']:.1f}x the committed "
          f"requests per wall second of the unbatched run")
    for r in scaling[1:]:
        ratio = r["msgs_per_wall_s"] / n4["msgs_per_wall_s"]
        print(f"n = {r['n']} vs n = 4: msgs/wall s {ratio:.2f}x, "
              f"sim s/wall s {r['sim_s_per_wall_s'] / n4['sim_s_per_wall_s']:.4f}x, "
              f"messages per committed request {r['messages'] / max(1, r['committed']):,.0f} "
              f"vs {n4['messages'] / max(1, n4['committed']):,.0f}")
    print(f"\ndone in {time.perf_counter() - t_start:.1f} s wall")

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "machine": platform.machine(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "quick": args.quick, "repeat": args.repeat,
            "target_msgs_per_wall_s_at_n4": TARGET_MSGS_PER_S, "ratio_to_target": ratio,
            "scaling": scaling, "batching": batched,
        }, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
