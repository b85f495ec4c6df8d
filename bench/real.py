"""Real-mode throughput and latency: 4 node processes on loopback, over HTTP and over MQTT.

Why this exists: issue #6 sets a goal of 3,000 committed signed transactions per second over
HTTP with 4 nodes on a 2-core machine, and asks to print the result beside this machine's
ECDSA verifications per second, the floor that signed requests impose (every replica
verifies every request's signature once, so 4 replicas sharing 2 cores can verify at most
about verify_per_s / 2 requests per second before doing anything else). It is a measuring
tool, never run by the tests.

    .venv/bin/python bench/real.py                     # both transports, 10 s each
    .venv/bin/python bench/real.py --transport http --duration 20s --outstanding 128
    .venv/bin/python bench/real.py --json results/bench-real.json

Setup: `medbft cluster` machinery (`medbft.real.cluster.run_cluster`): a fresh network, nodes as
`python -m node.server` on uvloop when installed, batching on (`--batch-size`, default 128,
with at most `--max-in-flight` batches open), closed-loop clients (`--clients` identities x
`--outstanding` requests each) in one load-generator process. Everything runs over TLS (the
default network: mutual TLS between parties, MQTT over TLS through a private Mosquitto the
cluster starts from the configuration `keys init` writes, which has `set_tcp_nodelay true`);
`--insecure-plaintext` measures the same without TLS, MQTT then against a private anonymous
Mosquitto with `set_tcp_nodelay true` on a free port when the `mosquitto` binary is installed
(the default broker config leaves Nagle's algorithm on, which adds ~40 ms per hop of
delayed-ACK waiting to small messages; see docs/real-network.md), else against
127.0.0.1:1883. The load average is printed too: other processes on the machine share the
same two cores, and the figures are only as good as the machine was quiet.

The matrix (`--matrix`, the issue's fixed shape): one client with one request in flight, 64
and 256 requests in flight (4 clients x 16 and x 64); the key-value and the ledger app; HTTP
and MQTT; TLS and broker authentication on. Each row prints committed tx/s, p50, p99 and the
CPU seconds each node process spent per committed transaction (its whole life, startup
included, divided by what committed), next to the reference figures below (BFT-SMaRt v1.2
measured side by side on the same 2-core machine, and medbft before this work) and the
targets; `--quick` runs each row for 5 s instead of 10 s.

    .venv/bin/python bench/real.py --matrix                 # 12 runs, about 4 minutes
    .venv/bin/python bench/real.py --matrix --quick --json results/bench-real-matrix.json
    .venv/bin/python bench/real.py --transport http --app ledger --outstanding 16 \
        --profile /tmp/prof                               # where the nodes' CPU goes
    .venv/bin/python bench/real.py --transport http --clients 1 --outstanding 1 \
        --profile /tmp/prof --profile-clock cpu           # CPU time only, not pre-emption
    .venv/bin/python bench/real.py --transport http --app ledger --outstanding 16 \
        --duration 20s --sample /tmp/spy                  # py-spy: shares of the real run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medbft.real.cluster import ClusterSpec, free_ports, run_cluster
from medbft.real.load import LoadSpec
from medbft.units import parse_duration_ns
from node.realtime import run, uvloop_available

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sampling  # bench/sampling.py, beside this file
from machine import ecdsa_per_s  # bench/machine.py

#: Figures measured side by side on the project's 2-core machine (4 replicas on loopback):
#: BFT-SMaRt v1.2's ThroughputLatency demo (MAC-authenticated requests) and medbft before the
#: real-network work, keyed by matrix row. tx/s, p50 ms, p99 ms; None where not measured.
REFERENCE: dict[str, dict[str, tuple[float | None, float | None, float | None]]] = {
    "BFT-SMaRt": {"1x1 kv http": (212, 4.2, None), "64 kv http": (2_247, None, 50.0)},
    "medbft before": {"1x1 kv http": (300, 3.0, None), "64 kv http": (1_891, None, 140.0),
                      "1x1 kv mqtt": (159, 6.0, None)},
}
#: Targets with TLS and authentication on (the issue's): ledger over HTTP >= 3,000 tx/s and
#: p99 < 100 ms at 64 in flight; MQTT within 80% of HTTP; one client's p50 < 3 ms over HTTP
#: and < 5 ms over MQTT.
TARGET_TPS_LEDGER_HTTP_64 = 3_000
TARGET_P99_MS_64 = 100.0
TARGET_MQTT_SHARE = 0.8
TARGET_P50_MS_1X1 = {"http": 3.0, "mqtt": 5.0}
#: (row label, clients, outstanding per client)
LOADS = (("1x1", 1, 1), ("64", 4, 16), ("256", 4, 64))


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes] | None, str]:
    """A private Mosquitto with TCP_NODELAY on a free port, or (None, the default broker)."""
    binary = shutil.which("mosquitto")
    if binary is None:
        return None, "mqtt://127.0.0.1:1883"
    port = free_ports(1)[0]
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    f"set_tcp_nodelay true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc, f"mqtt://127.0.0.1:{port}"


def bench(transport: str, args: argparse.Namespace, out: Path, broker: str, *,
          clients: int | None = None, outstanding: int | None = None,
          app: str | None = None, label: str = "") -> dict[str, Any]:
    clients = args.clients if clients is None else clients
    outstanding = args.outstanding if outstanding is None else outstanding
    app = args.app if app is None else app
    name = label.replace(" ", "-") or transport
    load = LoadSpec(duration_ns=parse_duration_ns(args.duration), drain_ns=5_000_000_000,
                    clients=clients, outstanding=outstanding, transport=transport,
                    broker=broker, op_size_bytes=args.op_size, name=f"bench-{name}")
    profile_dir = args.profile / name if args.profile else None
    spec = ClusterSpec(nodes=[(f"node-{i + 1}", "hospital") for i in range(args.nodes)],
                       node_args=(["--profile-dir", str(profile_dir),
                                   "--profile-clock", args.profile_clock]
                                  if profile_dir else []),
                       load=load, out=out / name, broker=broker or None, sync=args.sync,
                       app=app, insecure_plaintext=args.insecure_plaintext,
                       protocol={"batch_size": args.batch_size,
                                 "max_in_flight": args.max_in_flight,
                                 "checkpoint_interval": 128, "watermark_window": 256,
                                 "client_timeout_ms": 5000, "view_change_timeout_ms": 5000})
    box: list[Any] = []
    sample_dir = args.sample / name if args.sample else None
    problems: dict[str, str] = {}
    names: dict[int, str] = {}

    async def sample(_net: Any) -> None:
        """Once the load has warmed up (a third of the run), sample every node and this
        process (the load generator) for half the run."""
        assert sample_dir is not None
        seconds = parse_duration_ns(args.duration) / 1e9
        await asyncio.sleep(seconds / 3)
        pids = {node: proc.pid for node, proc in sorted(box[0].procs.items())}
        names.update({pid: node for node, pid in pids.items()})
        names[os.getpid()] = "load"
        sample_dir.mkdir(parents=True, exist_ok=True)
        spy = (sampling.record(args.spy, {**pids, "load": os.getpid()}, seconds / 2,
                               sample_dir) if args.spy else asyncio.sleep(0, {}))
        cpu = (sampling.record_cpu(args.perf, seconds / 2, sample_dir / "cpu.perf")
               if args.perf else asyncio.sleep(0, None))
        spied, perfed = await asyncio.gather(spy, cpu)
        problems.update({f"py-spy on {who}": why for who, why in spied.items()})
        if perfed is not None:
            problems["perf"] = perfed

    before = os.times()
    result = run(run_cluster(spec, cluster_box=box,
                             during_load=sample if sample_dir is not None else None))
    after = os.times()
    # The load generator is this process: it shares the machine's cores with the nodes.
    load_cpu_s = (after.user - before.user) + (after.system - before.system)
    if profile_dir is not None:
        print_profile(profile_dir, label or transport)
    if sample_dir is not None:
        for what, why in sorted(problems.items()):
            print(f"  sampling failed ({what}): {why}")
        if args.spy:
            sampling.report(f"nodes of {label or transport} (py-spy)",
                            sorted(p for p in sample_dir.glob("*.txt") if p.stem != "load"))
            sampling.report(f"load generator of {label or transport} (py-spy)",
                            sorted(sample_dir.glob("load.txt")), top=12)
        if args.perf and (sample_dir / "cpu.perf").exists():
            sampling.report_cpu(f"CPU of {label or transport}", args.perf,
                                sample_dir / "cpu.perf", names)
    s = result.summary
    committed = s["requests"]["committed"]
    cpu_seconds = s["cpu"]["cpu_seconds"]
    return {"label": label or transport, "transport": transport, "app": app,
            "clients": clients, "outstanding": outstanding, "committed": committed,
            "throughput_tps": s["throughput_tps"], "latency_ms": s["latency_ms"],
            "messages_per_request": s["messages"]["per_committed_request"],
            "cpu_utilisation": s["cpu"]["utilisation"], "cpu_seconds": cpu_seconds,
            "load_generator_cpu_seconds": round(load_cpu_s, 3),
            "load_generator_cpu_ms_per_tx": (1000 * load_cpu_s / committed if committed
                                             else None),
            "cpu_ms_per_tx": {k: (1000 * v / committed if committed else None)
                              for k, v in cpu_seconds.items()},
            "safety": s["safety"]["ok"],
            "state_agreement": s["safety"]["state_agreement"]["ok"]}


def print_profile(profile_dir: Path, label: str, top: int = 25) -> None:
    """Where the nodes' CPU went (cProfile of every node process, summed): own time by file,
    then the top functions. cProfile slows Python calls more than C calls, so read shares,
    not absolute times."""
    import pstats

    files = sorted(profile_dir.glob("*.pstats"))
    if not files:
        print(f"  (no profile written in {profile_dir}: did the nodes stop cleanly?)")
        return
    stats = pstats.Stats(*map(str, files))
    by_file: dict[str, float] = {}
    total = 0.0
    for (path, _, func), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = (f"C: {func}" if path == "~" else
                 "/".join(Path(path).parts[-2:]) if "site-packages" not in path
                 else Path(path).parts[Path(path).parts.index("site-packages") + 1])
        by_file[where] = by_file.get(where, 0.0) + tottime
        total += tottime
    print(f"\nprofile of {label} ({len(files)} nodes, {total:.1f} s own time in all): "
          f"own time by file or package")
    for where, t in sorted(by_file.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {t:8.2f} s {100 * t / total:5.1f}%  {where}")
    print(f"top {top} functions by own time:")
    stats.sort_stats("tottime").print_stats(top)


def _ratio(value: float | None, ref: float | None) -> str:
    return f"{value / ref:.2f}x" if value and ref else "-"


def print_matrix(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'row':<16}{'tx/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU ms/tx per node':>22}"
          f"{'load gen':>9}  {'vs BFT-SMaRt tx/s p50 p99':<27}{'vs medbft before':<20}ok")
    by_label = {r["label"]: r for r in rows}
    for r in rows:
        lat = r["latency_ms"]
        cpu = " ".join(f"{v:.2f}" if v is not None else "-" for v in r["cpu_ms_per_tx"].values())
        tps, p50, p99 = r["throughput_tps"], lat["p50"], lat["p99"]
        refs = []
        for who in ("BFT-SMaRt", "medbft before"):
            ref = REFERENCE[who].get(r["label"])
            if ref is None:
                refs.append("-")
                continue
            # throughput: higher is better; latency ratios are reference / ours (>1 = faster)
            refs.append(" ".join((_ratio(tps, ref[0]), _ratio(ref[1], p50), _ratio(ref[2], p99))))
        ok = "yes" if r["safety"] and r["state_agreement"] else "NO"
        print(f"{r['label']:<16}{tps:>8,.0f}{p50 or 0:>8.1f}{p99 or 0:>8.1f}{cpu:>22}"
              f"{r['load_generator_cpu_ms_per_tx'] or 0:>9.2f}  {refs[0]:<27}{refs[1]:<20}{ok}")
    print("\nratios: throughput ours/theirs, latency theirs/ours (above 1 is better for medbft); "
          "load gen: the load generator's CPU ms per committed tx (it shares the cores)")
    print("targets (TLS and authentication on):")
    ledger64 = by_label.get("64 ledger http")
    if ledger64:
        p99 = ledger64["latency_ms"]["p99"] or float("inf")
        print(f"  ledger over HTTP at 64 in flight: {ledger64['throughput_tps']:,.0f} tx/s "
              f"(target {TARGET_TPS_LEDGER_HTTP_64:,}: "
              f"{'met' if ledger64['throughput_tps'] >= TARGET_TPS_LEDGER_HTTP_64 else 'not met'}"
              f"), p99 {p99:.0f} ms (target < {TARGET_P99_MS_64:.0f}: "
              f"{'met' if p99 < TARGET_P99_MS_64 else 'not met'})")
    for label, r in by_label.items():
        if r["transport"] != "mqtt":
            continue
        http = by_label.get(label.replace("mqtt", "http"))
        if http and http["throughput_tps"]:
            share = r["throughput_tps"] / http["throughput_tps"]
            print(f"  {label}: {share:.2f} of HTTP's throughput (target >= "
                  f"{TARGET_MQTT_SHARE}: {'met' if share >= TARGET_MQTT_SHARE else 'not met'})")
    for label, r in by_label.items():
        if label.startswith("1x1"):
            p50 = r["latency_ms"]["p50"] or float("inf")
            target = TARGET_P50_MS_1X1[r["transport"]]
            print(f"  {label}: one client's p50 {p50:.1f} ms (target < {target:.0f} ms: "
                  f"{'met' if p50 < target else 'not met'})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transport", choices=("http", "mqtt", "both"), default="both")
    p.add_argument("--duration", default="10s")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--outstanding", type=int, default=128, help="per client")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-in-flight", type=int, default=4)
    p.add_argument("--op-size", type=int, default=64, help="payload bytes per request (kv)")
    p.add_argument("--app", choices=("kv", "ledger"), default="kv",
                   help="the nodes' state machine: kv (the default) measures the protocol, "
                        "ledger adds healthcare-ledger execution and its traffic")
    p.add_argument("--sync", default="normal", choices=("normal", "full", "off"))
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--matrix", action="store_true",
                   help="run the fixed matrix (1x1, 64 and 256 in flight; kv and ledger; HTTP "
                        "and MQTT) instead of one shape")
    p.add_argument("--quick", action="store_true", help="with --matrix: 5 s per row")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="run every node under cProfile, keep DIR/<row>/<node>.pstats and print "
                   "where the nodes' CPU went (slows the nodes: figures are not comparable)")
    p.add_argument("--profile-clock", choices=("wall", "cpu"), default="wall",
                   help="with --profile: wall time (default), or each node's CPU time, which "
                        "does not charge a function for the time its process sat pre-empted "
                        "(slows the nodes several times more)")
    p.add_argument("--sample", type=Path, metavar="DIR",
                   help="sample every node and the load generator for half of each run and "
                        "print where their CPU went: with py-spy (pip install py-spy), own "
                        "and inclusive time by function (DIR/<row>/<process>.txt); with "
                        "Linux perf, the machine's CPU by process and library (cpu-clock). "
                        "Either or both; neither is a dependency. Unlike --profile it does "
                        "not slow their code, but the samplers take some CPU of their own")
    p.add_argument("--insecure-plaintext", action="store_true",
                   help="measure without TLS (to see what TLS costs)")
    args = p.parse_args()
    if args.profile:
        # cProfile sees a compiled (`medbft native build`) function only as a whole: profiled
        # nodes run pure Python, which costs the same on a real node (docs/benchmarks.md).
        os.environ["MEDBFT_NATIVE"] = "0"
    try:
        parse_duration_ns(args.duration)
    except ValueError as exc:
        p.error(f"--duration: {exc}")
    args.spy = sampling.py_spy() if args.sample else None
    args.perf = sampling.perf() if args.sample else None
    if args.sample and args.spy is None and args.perf is None:
        p.error("--sample needs py-spy (pip install py-spy) or Linux perf (apt-get install "
                "linux-perf), or both: sampling profilers that are not dependencies of medbft")
    if args.sample and args.spy is None:
        print("--sample: py-spy not found (pip install py-spy): perf's CPU split only")
    elif args.sample and args.perf is None:
        print("--sample: Linux perf not found: py-spy's samples only")
    crypto = ecdsa_per_s()
    load_avg = os.getloadavg()
    print(f"{'PLAINTEXT (insecure)' if args.insecure_plaintext else 'TLS'}; "
          f"machine: {os.cpu_count()} cores, load average {load_avg[0]:.2f} before the runs; "
          f"event loop: {'uvloop' if uvloop_available() else 'asyncio'}")
    print(f"ECDSA P-256 on one core: {crypto['verify_per_s']:,.0f} verify/s, "
          f"{crypto['sign_per_s']:,.0f} sign/s  (4 replicas verifying every request on 2 "
          f"cores: at most ~{crypto['verify_per_s'] * 2 / args.nodes:,.0f} tx/s)")
    rows = []
    if args.matrix:
        if args.quick:
            args.duration = "5s"
        return run_matrix(args, crypto, load_avg)
    transports = ["http", "mqtt"] if args.transport == "both" else [args.transport]
    with tempfile.TemporaryDirectory(prefix="medbft-bench-") as tmp:
        broker_proc, broker = (start_broker(Path(tmp))
                               if "mqtt" in transports and args.insecure_plaintext
                               else (None, ""))
        try:
            for transport in transports:
                rows.append(bench(transport, args, Path(tmp), broker))
        finally:
            if broker_proc is not None:
                broker_proc.terminate()
                broker_proc.wait()
    print(f"\n{'transport':<10}{'tx/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'msgs/tx':>9}"
          f"  node CPU (share of one core)  load gen CPU ms/tx  ok")
    for r in rows:
        lat = r["latency_ms"]
        cpu = " ".join(f"{v:.2f}" for v in r["cpu_utilisation"].values())
        ok = r["safety"] and r["state_agreement"]
        print(f"{r['transport']:<10}{r['throughput_tps']:>10,.0f}{lat['p50'] or 0:>10.1f}"
              f"{lat['p99'] or 0:>10.1f}{r['messages_per_request'] or 0:>9.2f}  {cpu:<28}  "
              f"{r['load_generator_cpu_ms_per_tx'] or 0:>18.3f}  {'yes' if ok else 'NO'}")
    print(f"\ntarget: 3,000 committed signed tx/s over HTTP; settings: {args.clients} clients x "
          f"{args.outstanding} outstanding, batch_size {args.batch_size}, max_in_flight "
          f"{args.max_in_flight}, {args.duration}, sync {args.sync}, app {args.app}")
    write_json(args, crypto, load_avg, results=rows)
    return 0


def run_matrix(args: argparse.Namespace, crypto: dict[str, float],
               load_avg: tuple[float, float, float]) -> int:
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medbft-bench-") as tmp:
        broker_proc, broker = (start_broker(Path(tmp)) if args.insecure_plaintext
                               else (None, ""))
        try:
            for load, clients, outstanding in LOADS:
                for app in ("kv", "ledger"):
                    for transport in ("http", "mqtt"):
                        label = f"{load} {app} {transport}"
                        rows.append(bench(transport, args, Path(tmp), broker, clients=clients,
                                          outstanding=outstanding, app=app, label=label))
                        r = rows[-1]
                        print(f"  {label}: {r['throughput_tps']:,.0f} tx/s, p50 "
                              f"{r['latency_ms']['p50'] or 0:.1f} ms", flush=True)
        finally:
            if broker_proc is not None:
                broker_proc.terminate()
                broker_proc.wait()
    print_matrix(rows)
    print(f"\n{args.duration} per row, batch_size {args.batch_size}, max_in_flight "
          f"{args.max_in_flight}, sync {args.sync}; load average {os.getloadavg()[0]:.2f} "
          f"after the runs; {time.perf_counter() - t0:.0f} s in all")
    write_json(args, crypto, load_avg, reference=REFERENCE, matrix=rows)
    return 0


def write_json(args: argparse.Namespace, crypto: dict[str, float],
               load_avg: tuple[float, float, float], **figures: Any) -> None:
    """With --json, the figures and what they were measured with."""
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"crypto": crypto, "load_average": load_avg,
                                         "settings": vars(args) | {"json": str(args.json)},
                                         **figures}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
