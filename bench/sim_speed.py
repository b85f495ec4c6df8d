"""How fast does the simulator run, next to the fastest BFT simulator we know?

Why this exists: the simulator is the engine of every scenario, sweep, swarm and test here,
so its speed is measured, not guessed. This script runs one fixed shape for n = 4 ... 512 and
prints simulated protocol messages per wall second, simulated seconds per wall second and
peak memory, with the ratio to the JavaScript BFT-Simulator (DSN 2022; PBFT, no signatures,
no checker) measured side by side on a 2-core machine (PEER below). medbft keeps what the
peer lacks: request signatures, per-message MACs, the ledger app and the safety checker are
all on. It is a measuring tool, never used in tests.

The shape (docs/benchmarks.md#simulator-speed): constant 10 ms links, `cpu: none`,
batch_size 1, no faults, the ledger app, 16 closed-loop clients with 4 requests outstanding
each (64 in flight: the primary's window of 16 stays full). For n >= 256 one request costs
2n^2 = 131k-524k messages, so those runs start 16 clients with one request each (11 of
them have a ledger transaction to send at time 0): 11 committed batches.

With n >= 64 in range it also runs scenarios/sixty-four-nodes.yaml whole (64 replicas, 8
clients at 200/s, batches of 16, `cpu: default`, 2 simulated seconds) and says whether it ran
faster than real time: the simulation (`run_scenario`), and the whole `medbft run` command a
user types, with its figures and with `--no-plots`.

    .venv/bin/python bench/sim_speed.py                 # n = 4 ... 512 (~6 min on 2 cores)
    .venv/bin/python bench/sim_speed.py --max-n 128     # the sizes the peer was measured at
    .venv/bin/python bench/sim_speed.py --quick         # shorter runs
    .venv/bin/python bench/sim_speed.py --json results/sim_speed.json
    .venv/bin/python bench/sim_speed.py --profile --profile-n 16   # cProfile of one case
    .venv/bin/python bench/sim_speed.py --modules both  # compiled and pure Python, speed-up
    .venv/bin/python bench/sim_speed.py --max-n 128 --peer ~/BFT-Simulator   # side by side
    .venv/bin/python bench/sim_speed.py --max-n 16 --app kv   # the key-value app instead

The peer, side by side (`--peer DIR`): PEER holds the peer's figures from the day the issue
was filed, and this machine's speed drifts by 2x between days, so a ratio to them says as much
about the day as about the simulator. With `--peer` pointing at a checkout of the peer
(`git clone https://github.com/csienslab/BFT-Simulator DIR && cd DIR && npm install`, outside
this project), every case up to n = 128 is followed by the peer in the same shape
(bench/peer_sim.js: constant 10 ms links, no faults, for `--peer-seconds` of wall time), and
the table gives the ratio to the peer measured now beside the ratio to PEER.

Runs use the compiled modules when `medbft native build` made them and they match the
sources (the header says which); `--modules pure` runs pure Python.

With n = 4 in range it also prints that size's floor on this machine: at n = 4 a request
costs more than its 29 messages (a client signs it, four replicas and the harm judge's replay
execute it on a ledger), and those costs, measured here (ECDSA signing on one core; the
ledger's execution timed in a 1 s run of the shape), bound the messages per second however
cheap the messages became. Its verification is not in the floor: in a simulation the
signer records its own signatures in the verify cache all parties share (node/crypto.py,
`Keyring.sign`), so no party of the process computes that check again.

Each case runs in a fresh child process so that its peak memory (ru_maxrss) is its own; wall
time covers the whole `run_scenario` call (identities and replicas built, key agreement
included), median over `--repeat` runs, and the child checks that every repeat gives the
same summary digest (determinism) and that safety and liveness held. The table also gives
messages per CPU second of the child (`time.process_time`): the same figure on a quiet
machine, and the fairer one on a shared machine, where wall time includes waiting for a core.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # bench/machine.py, beside this file

#: Simulated messages per wall second of the JavaScript BFT-Simulator (PBFT), measured side
#: by side with medbft on a 2-core machine (same n, constant links, no faults; medians of
#: three rounds). It was not measured beyond n = 128.
PEER = {4: 246_000, 16: 192_000, 32: 130_000, 64: 75_000, 128: 26_300}
#: Targets: at least 1.0x the peer for n = 4 ... 128, at least 2x for n >= 64.
TARGET_RATIO = {n: (2.0 if n >= 64 else 1.0) for n in PEER}

#: Whole shipped scenarios the issue sets a bar for: simulated faster than real time.
REAL_TIME_SCENARIOS = ("scenarios/sixty-four-nodes.yaml",)

# (n, full duration, quick duration, clients, outstanding)
SCALING = (
    (4, "10s", "3s", 16, 4), (16, "2s", "600ms", 16, 4), (32, "1s", "300ms", 16, 4),
    (64, "300ms", "100ms", 16, 4), (128, "100ms", "40ms", 16, 4),
    (256, "1ms", "1ms", 16, 1), (512, "1ms", "1ms", 16, 1),
)


def scenario_dict(n: int, duration: str, *, batch_size: int = 1, clients: int = 1,
                  outstanding: int = 1, app: str = "ledger") -> dict[str, Any]:
    workload: dict[str, Any] = {"clients": clients, "outstanding": outstanding}
    if app != "ledger":  # the default app: the ledger's spec stays as it always was
        workload["app"] = app
    return {
        "name": f"sim-speed-n{n}-b{batch_size}-c{clients}x{outstanding}"
                + ("" if app == "ledger" else f"-{app}"),
        "seed": 1,
        "duration": duration,
        "drain": "10s",
        "nodes": n,
        "network": {"latency": "10ms"},
        "protocol": {"batch_size": batch_size},
        "cpu": "none",
        "workload": workload,
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
    walls, cpus, gcs, digests = [], [], [], set()
    summary: dict[str, Any] = {}
    for _ in range(repeat):
        gc.collect()
        gc_spent[0] = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_scenario(scenario)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        gcs.append(gc_spent[0])
        summary = result.summary
        digests.add(digest_summary(summary))
        del result
    gc.callbacks.remove(on_gc)
    wall = statistics.median(walls)
    cpu = statistics.median(cpus)
    messages = summary["messages"]["total"]
    return {
        "n": summary["n"],
        "name": spec["name"],
        "batch_size": spec.get("protocol", {}).get("batch_size", 1),
        "clients": spec["workload"].get("clients", 1),
        "outstanding": spec["workload"].get("outstanding"),
        "duration": spec["duration"],
        "sim_s": summary["sim_time_s"],
        "wall_s": wall,
        "wall_s_all": walls,
        "gc_s": statistics.median(gcs),
        "committed": summary["requests"]["committed"],
        "submitted": summary["requests"]["submitted"],
        "messages": messages,
        "msgs_per_wall_s": messages / wall,
        "cpu_s": cpu,
        "msgs_per_cpu_s": messages / cpu,
        "sim_s_per_wall_s": summary["sim_time_s"] / wall,
        "committed_per_wall_s": summary["requests"]["committed"] / wall,
        "rss_before_mb": rss_before,
        "peak_rss_mb": maxrss_mb(),
        "safety_ok": summary["safety"]["ok"],
        "liveness_ok": summary["liveness"]["ok"],
        "deterministic": len(digests) == 1,
        "digest": min(digests),
        "compiled": native_state() == "on",
    }


def native_state() -> str:
    from node import _native

    return _native.state()


def check_peer(peer_dir: str) -> Path:
    """The peer checkout `--peer` names, or a usage error saying what is missing."""
    how = ("get it with: git clone https://github.com/csienslab/BFT-Simulator DIR && "
           "cd DIR && npm install")
    if shutil.which("node") is None:
        raise SystemExit("--peer: Node.js (`node`) is not on PATH; the peer is a JavaScript "
                         "program")
    path = Path(peer_dir).expanduser().resolve()
    if not (path / "simulator.js").is_file() or not (path / "ba-algo" / "pbft.js").is_file():
        raise SystemExit(f"--peer {peer_dir}: no BFT-Simulator checkout there "
                         f"(simulator.js, ba-algo/pbft.js); {how}")
    if not (path / "node_modules").is_dir():
        raise SystemExit(f"--peer {peer_dir}: its packages are not installed (no node_modules); "
                         f"run npm install in it")
    return path


def run_peer(peer_dir: Path, n: int, seconds: float) -> dict[str, Any]:
    """One run of the peer in this script's shape (bench/peer_sim.js), from a scratch working
    directory (the peer's logger recreates ./log)."""
    with tempfile.TemporaryDirectory(prefix="medbft-peer-") as scratch:
        proc = subprocess.run(
            ["node", str(ROOT / "bench" / "peer_sim.js"), str(peer_dir), str(n), str(seconds)],
            cwd=scratch, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the peer failed at n = {n}:\n{proc.stderr.strip()}")
    row: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return row


def peer_now(peer_dir: Path, n: int, seconds: float, repeat: int) -> dict[str, Any]:
    """The peer at n, `repeat` times: the last run's figures, with the median messages per
    wall second (as medbft's rows take the median wall time) and every run's figure."""
    runs = [run_peer(peer_dir, n, seconds) for _ in range(repeat)]
    rates = [r["msgs_per_wall_s"] for r in runs]
    return {**runs[-1], "msgs_per_wall_s": statistics.median(rates), "msgs_per_wall_s_all": rates}


def run_in_child(spec: dict[str, Any], repeat: int, pure: bool = False) -> dict[str, Any]:
    env = {**os.environ, "MEDBFT_NATIVE": "0"} if pure else None
    proc = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(spec), "--repeat", str(repeat)],
        cwd=ROOT, capture_output=True, text=True, check=False, env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"case {spec['name']} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Output


def floor_msgs_per_s(msgs_per_request: float, sign_s: float, verify_s: float,
                     execute_s: float) -> float:
    """The most messages per second a shape can simulate when each request also costs a
    signature, one verification and `execute_s` of ledger execution, and nothing else costs
    anything."""
    return msgs_per_request / (sign_s + verify_s + execute_s)


def execution_per_request(duration: str = "1s", app: str = "ledger") -> float:
    """Seconds of the app's `execute` (`Ledger`, or `KeyValueStore` for kv) per committed
    request in a run of the n = 4 shape (every replica's execution and, for the ledger, the
    harm judge's replay), timed call by call."""
    from medbft.scenario import parse_scenario
    from node.ledger.ledger import Ledger
    from node.statemachine import KeyValueStore
    from sim.run import run_scenario

    spent = [0.0]
    cls: Any = Ledger if app == "ledger" else KeyValueStore
    execute = cls.execute

    def timed(self: Any, *args: Any, **kwargs: Any) -> list[bytes]:
        t0 = time.perf_counter()
        try:
            return execute(self, *args, **kwargs)  # type: ignore[no-any-return]
        finally:
            spent[0] += time.perf_counter() - t0

    spec = scenario_dict(4, duration, clients=16, outstanding=4, app=app)
    cls.execute = timed
    try:
        result = run_scenario(parse_scenario(spec, "bench/sim_speed.py"))
    finally:
        cls.execute = execute
    return spent[0] / result.summary["requests"]["committed"]


def now_ratio(msgs_per_s: float, row: dict[str, Any]) -> str:
    """", 0.57x the peer now" when the row has the peer measured side by side, else ""."""
    now = row.get("peer_now")
    return "" if now is None else f", {msgs_per_s / now['msgs_per_wall_s']:.2f}x the peer now"


def print_floor(row: dict[str, Any], app: str = "ledger") -> dict[str, float]:
    """Measure and print the n = 4 floor (see the module docstring) for the table's n = 4 row."""
    from machine import ecdsa_per_s

    crypto = ecdsa_per_s(0.5)
    sign_s = 1 / crypto["sign_per_s"]
    verify_s = 0.0  # answered by the signer's entry in the shared verify cache (docstring)
    execute_s = execution_per_request(app=app)
    per_request = row["messages"] / row["committed"]
    cap = floor_msgs_per_s(per_request, sign_s, verify_s, execute_s)
    sim_s_per_wall_s = cap / (row["messages"] / row["sim_s"])
    print(f"the floor at n = 4 on this machine: signing a request "
          f"{sign_s * 1e6:.0f} us (its verification is answered by the signer's cache "
          f"entry), executing it (four replicas"
          f"{' and the harm judge' if app == 'ledger' else ', key-value app'}) "
          f"{execute_s * 1e6:.0f} us; at {per_request:.1f} messages per request, at "
          f"most {cap:,.0f} msgs/s ({cap / PEER[4]:.2f}x the peer{now_ratio(cap, row)}) and "
          f"{sim_s_per_wall_s:.1f} simulated s per wall s, if nothing else cost anything")
    print()
    return {"sign_s": sign_s, "verify_s": verify_s,
            "verify_measured_s": 1 / crypto["verify_per_s"], "execute_s": execute_s,
            "msgs_per_request": per_request, "floor_msgs_per_s": cap,
            "floor_sim_s_per_wall_s": sim_s_per_wall_s}


def print_table(rows: list[dict[str, Any]]) -> None:
    side = any("peer_now" in r for r in rows)
    head = (f"{'n':>4} {'load':>5} {'sim s':>7} {'wall s':>7} {'committed':>9} "
            f"{'messages':>10} {'msgs/wall s':>11} {'sim s/wall s':>12} {'peak RSS':>9} "
            f"{'peer':>8} {'ratio':>6} {'target':>6}  ok {'msgs/cpu s':>10} {'ratio':>6}"
            + (f" {'peer now':>9} {'ratio':>6}" if side else ""))
    print(head)
    print("-" * len(head))
    for r in rows:
        ok = "yes" if r["safety_ok"] and r["liveness_ok"] and r["deterministic"] else "NO"
        peer = PEER.get(r["n"])
        ratio = f"{r['msgs_per_wall_s'] / peer:>5.2f}x" if peer else f"{'-':>6}"
        cpu_ratio = f"{r['msgs_per_cpu_s'] / peer:>5.2f}x" if peer else f"{'-':>6}"
        target = f"{TARGET_RATIO[r['n']]:>5.1f}x" if peer else f"{'-':>6}"
        print(f"{r['n']:>4} {r['clients']:>2}x{r['outstanding']:<2} "
              f"{r['sim_s']:>7.2f} {r['wall_s']:>7.2f} {r['committed']:>9} "
              f"{r['messages']:>10,} {r['msgs_per_wall_s']:>11,.0f} "
              f"{r['sim_s_per_wall_s']:>12.3f} {r['peak_rss_mb']:>6.0f} MB "
              f"{peer or 0:>8,} {ratio} {target}  {ok:<3} {r['msgs_per_cpu_s']:>10,.0f} "
              f"{cpu_ratio}" + (now_columns(r) if side else ""))
    if side:
        print("peer: the figures from the day the issue was filed; peer now: the peer measured "
              "just after each\ncase on this machine (bench/peer_sim.js), and medbft's ratio "
              "to it (msgs/wall s over msgs/wall s).")
    print("msgs/cpu s counts the process's CPU time instead of wall time: on a quiet machine the "
          "two agree;\non a shared one, wall time includes time spent waiting for a core and "
          "CPU time does not.")
    print()


def now_columns(row: dict[str, Any]) -> str:
    now = row.get("peer_now")
    if now is None:
        return f" {'-':>9} {'-':>6}"
    ratio = row["msgs_per_wall_s"] / now["msgs_per_wall_s"]
    return f" {now['msgs_per_wall_s']:>9,.0f} {ratio:>5.2f}x"


def targets_met(rows: list[dict[str, Any]], side_by_side: bool) -> tuple[list[int], list[int]]:
    """The sizes that meet and miss their target ratio, against PEER or (side_by_side) against
    the peer measured in this run; sizes without that figure are in neither list."""
    met: list[int] = []
    missed: list[int] = []
    for r in rows:
        if r["n"] not in TARGET_RATIO:
            continue
        if side_by_side:
            if "peer_now" not in r:
                continue
            peer = r["peer_now"]["msgs_per_wall_s"]
        else:
            peer = PEER[r["n"]]
        (met if r["msgs_per_wall_s"] / peer >= TARGET_RATIO[r["n"]] else missed).append(r["n"])
    return met, missed


def scenario_spec(path: str) -> dict[str, Any]:
    """A shipped scenario file as the mapping `run_case` takes."""
    import yaml

    spec: dict[str, Any] = yaml.safe_load((ROOT / path).read_text())
    return spec


def print_real_time(rows: list[tuple[str, dict[str, Any]]]) -> None:
    """Whole scenarios against real time (target: more than one simulated second per wall
    second, the whole `run_scenario` call included)."""
    print(f"{'scenario':<34} {'modules':<9} {'sim s':>6} {'wall s':>7} {'cpu s':>6} "
          f"{'messages':>9} {'sim s/wall s':>12}  faster than real time")
    for path, r in rows:
        modules = "compiled" if r["compiled"] else "pure"
        ok = r["safety_ok"] and r["liveness_ok"] and r["deterministic"]
        verdict = "yes" if r["sim_s_per_wall_s"] > 1.0 else "no"
        if not ok:
            verdict += " (NOT safe, live and deterministic)"
        print(f"{path:<34} {modules:<9} {r['sim_s']:>6.2f} {r['wall_s']:>7.2f} "
              f"{r['cpu_s']:>6.2f} {r['messages']:>9,} {r['sim_s_per_wall_s']:>12.2f}  "
              f"{verdict}")
    print()


def cache_bytecode() -> None:
    """Write the project's compiled bytecode (`__pycache__`), as a user's Python does on a
    command's first run. Where PYTHONDONTWRITEBYTECODE is set (some CI images, this project's
    reference machine) nothing writes it, and every timed start would compile each of the
    project's modules again (about 0.1-0.3 s of a `medbft run`): not what a user's second run
    costs. (`compileall` writes it whatever that variable says.)"""
    import compileall

    for package in ("node", "sim", "medbft"):
        compileall.compile_dir(ROOT / package, quiet=1)


def time_command(path: str, plots: bool, pure: bool = False) -> float:
    """Wall seconds of the whole `medbft run` command on a shipped scenario, as a user types
    it: loading the modules (from their cached bytecode: `cache_bytecode`), the simulation,
    the results folder, report.html and (with `plots`) the figures."""
    cache_bytecode()
    env = {**os.environ, "MEDBFT_NATIVE": "0"} if pure else None
    with tempfile.TemporaryDirectory(prefix="medbft-sim-speed-") as tmp:
        argv = [sys.executable, "-m", "medbft", "run", path, "--out", f"{tmp}/run", "--quiet"]
        t0 = time.perf_counter()
        done = subprocess.run(argv + ([] if plots else ["--no-plots"]), cwd=ROOT, env=env,
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}")
    return wall


def print_commands(rows: list[tuple[str, dict[str, Any]]]) -> None:
    """The whole command against the scenario's simulated time."""
    print(f"{'whole `medbft run`':<34} {'modules':<9} {'sim s':>6} {'figures':>8} "
          f"{'--no-plots':>10}  faster than real time")
    for path, r in rows:
        if "command_s" not in r:
            continue
        modules = "compiled" if r["compiled"] else "pure"
        verdict = ("yes" if r["command_s"] < r["sim_s"] else
                   "without figures" if r["command_no_plots_s"] < r["sim_s"] else "no")
        print(f"{path:<34} {modules:<9} {r['sim_s']:>6.2f} {r['command_s']:>7.2f}s "
              f"{r['command_no_plots_s']:>9.2f}s  {verdict}")
    print()


def print_speedup(pure: list[dict[str, Any]], compiled: list[dict[str, Any]]) -> None:
    """Pure Python against the compiled modules, case by case (CPU time: fairer when the
    machine is shared); every pair must give one summary digest."""
    print(f"{'n':>4} {'pure msgs/cpu s':>16} {'compiled':>10} {'speed-up':>9}  same result")
    for p, c in zip(pure, compiled, strict=True):
        same = "yes" if p["digest"] == c["digest"] else "NO"
        print(f"{p['n']:>4} {p['msgs_per_cpu_s']:>16,.0f} {c['msgs_per_cpu_s']:>10,.0f} "
              f"{c['msgs_per_cpu_s'] / p['msgs_per_cpu_s']:>8.2f}x  {same}")
    print()


def profile(case: tuple[int, str, str, int, int], quick: bool, top: int) -> None:
    import cProfile
    import pstats

    from medbft.scenario import parse_scenario
    from sim.run import run_scenario

    n, full, short, clients, outstanding = case
    duration = short if quick else full
    scenario = parse_scenario(scenario_dict(n, duration, clients=clients,
                                            outstanding=outstanding), "bench/sim_speed.py")
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


def positive_seconds(text: str) -> float:
    """argparse type for --peer-seconds: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds, such as 5 or 2.5; got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0 and finite; got {text}")
    return value


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
    ap.add_argument("--profile-n", type=int, default=4, choices=[c[0] for c in SCALING])
    ap.add_argument("--max-n", type=int, default=512, help="largest n to run (default 512)")
    ap.add_argument("--top", type=int, default=25, help="functions shown per profile table")
    ap.add_argument("--modules", choices=("as-installed", "pure", "both"), default="as-installed",
                    help="as-installed: the compiled modules if `medbft native build` made "
                         "them (default); pure: pure Python; both: every case both ways, "
                         "alternately, with the speed-up")
    ap.add_argument("--peer", metavar="DIR",
                    help="a checkout of the JavaScript BFT-Simulator with its packages "
                         "installed: run it side by side after each case up to n = 128")
    ap.add_argument("--peer-seconds", type=positive_seconds, default=None,
                    help="wall seconds per peer run (default 5, 2 with --quick)")
    ap.add_argument("--app", choices=("ledger", "kv"), default="ledger",
                    help="the replicated app: ledger (the default, the shape's) or kv, the "
                         "key-value store (tiny `put` ops, no ledger and no harm judge)")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = ap.parse_args(argv)

    if args.case:
        print(json.dumps(run_case(json.loads(args.case), args.repeat)))
        return 0

    if args.profile:
        if native_state() == "on":
            print("note: cProfile sees compiled functions as one call each; for a profile by "
                  "function, run with MEDBFT_NATIVE=0")
        case = next(c for c in SCALING if c[0] == args.profile_n)
        profile(case, args.quick, args.top)
        return 0

    peer_dir = check_peer(args.peer) if args.peer else None
    peer_seconds = args.peer_seconds if args.peer_seconds is not None else (
        2.0 if args.quick else 5.0)
    print(f"simulator speed on {platform.machine()} / Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
          f"{' (quick)' if args.quick else ''}; 10 ms links, cpu: none, batch 1, "
          f"{'ledger app' if args.app == 'ledger' else 'key-value app'}")
    compiled = native_state() == "on"
    if args.modules == "both" and not compiled:
        raise SystemExit(f"--modules both needs the compiled modules (medbft native build); "
                         f"here they are {native_state()}")
    pure_only = args.modules == "pure" or not compiled
    print(f"modules: {'pure Python' if pure_only else 'compiled (medbft native build)'}"
          f"{', and pure Python for comparison' if args.modules == 'both' else ''}")
    print()
    t_start = time.perf_counter()
    scaling, pure_rows = [], []
    for n, full, quick, clients, outstanding in SCALING:
        if n > args.max_n:
            continue
        spec = scenario_dict(n, quick if args.quick else full, clients=clients,
                             outstanding=outstanding, app=args.app)
        if args.modules == "both":
            pure_rows.append(run_in_child(spec, args.repeat, pure=True))
        scaling.append(run_in_child(spec, args.repeat, pure=pure_only))
        line = f"  n = {n}: {scaling[-1]['msgs_per_wall_s']:,.0f} msgs/wall s"
        if peer_dir is not None and n in PEER:
            scaling[-1]["peer_now"] = peer_now(peer_dir, n, peer_seconds, args.repeat)
            line += f"; the peer now {scaling[-1]['peer_now']['msgs_per_wall_s']:,.0f}"
        print(line, flush=True)
    real_time: list[tuple[str, dict[str, Any]]] = []
    if args.max_n >= 64:  # the scenarios' sizes
        for path in REAL_TIME_SCENARIOS:
            spec = scenario_spec(path)
            if args.modules == "both":
                real_time.append((path, run_in_child(spec, args.repeat, pure=True)))
            row = run_in_child(spec, args.repeat, pure=pure_only)
            row["command_s"] = statistics.median(
                time_command(path, True, pure_only) for _ in range(args.repeat))
            row["command_no_plots_s"] = statistics.median(
                time_command(path, False, pure_only) for _ in range(args.repeat))
            real_time.append((path, row))
            print(f"  {path}: {row['sim_s_per_wall_s']:.2f} sim s/wall s; the whole command "
                  f"{row['command_s']:.2f} s ({row['command_no_plots_s']:.2f} s with "
                  "--no-plots)", flush=True)
    print()
    print_table(scaling)
    floor = None
    four = next((r for r in scaling if r["n"] == 4), None)
    if four is not None:
        floor = print_floor(four, args.app)
    if pure_rows:
        print_speedup(pure_rows, scaling)
    if real_time:
        print_real_time(real_time)
        print_commands(real_time)
    if args.app != "ledger":
        print("targets: set for the ledger app (the shape's); this run used the key-value app, "
              "so none is judged")
    else:
        print_targets(scaling, peer_dir is not None)
    print(f"done in {time.perf_counter() - t_start:.1f} s wall")
    _write_json(args, pure_only, pure_rows, peer_dir is not None, peer_seconds, scaling, floor,
                real_time)
    return 0


def print_targets(scaling: list[dict[str, Any]], side_by_side: bool) -> None:
    met, missed = targets_met(scaling, side_by_side=False)
    print("targets: >= 1.0x the peer for n = 4 ... 128, >= 2.0x for n >= 64; against the "
          f"issue's figures met at n = {met or 'none'}, not met at n = {missed or 'none'}")
    if side_by_side:
        met, missed = targets_met(scaling, side_by_side=True)
        print(f"         against the peer measured side by side: met at n = {met or 'none'}, "
              f"not met at n = {missed or 'none'}")


def _write_json(args: argparse.Namespace, pure_only: bool, pure_rows: list[dict[str, Any]],
                side_by_side: bool, peer_seconds: float, scaling: list[dict[str, Any]],
                floor: dict[str, float] | None,
                real_time: list[tuple[str, dict[str, Any]]]) -> None:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "machine": platform.machine(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "quick": args.quick, "repeat": args.repeat,
            "app": args.app,
            "modules": "pure" if pure_only else "compiled",
            "pure_scaling": pure_rows,
            "peer_msgs_per_wall_s": PEER, "target_ratio": TARGET_RATIO,
            "peer_side_by_side": side_by_side, "peer_seconds": peer_seconds,
            "scaling": scaling, "floor_n4": floor,
            "real_time": [{"scenario": path, **row} for path, row in real_time],
        }, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
