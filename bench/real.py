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
"""

from __future__ import annotations

import argparse
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
from node.crypto import Identity, Keyring
from node.realtime import run, uvloop_available


def ecdsa_per_s(seconds: float = 1.0) -> dict[str, float]:
    """ECDSA P-256 signatures and verifications per second on one core, as the nodes do them
    (`Keyring.sign`, `Keyring._verify_uncached`)."""
    ident = Identity.generate("bench")
    keys = Keyring(ident, {"bench": ident.public_bytes})
    data = b"x" * 200
    sig = keys.sign(data)
    out = {}
    for name, fn in (("sign_per_s", lambda: keys.sign(data)),
                     ("verify_per_s", lambda: keys._verify_uncached("bench", ident.public_bytes,
                                                                    data, sig))):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(100):
                fn()
            count += 100
        out[name] = count / (time.perf_counter() - t0)
    return out


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


def bench(transport: str, args: argparse.Namespace, out: Path, broker: str) -> dict[str, Any]:
    load = LoadSpec(duration_ns=parse_duration_ns(args.duration), drain_ns=5_000_000_000,
                    clients=args.clients, outstanding=args.outstanding, transport=transport,
                    broker=broker, op_size_bytes=args.op_size, name=f"bench-{transport}")
    spec = ClusterSpec(nodes=[(f"node-{i + 1}", "hospital") for i in range(args.nodes)],
                       load=load, out=out / transport, broker=broker or None, sync=args.sync,
                       app=args.app, insecure_plaintext=args.insecure_plaintext,
                       protocol={"batch_size": args.batch_size,
                                 "max_in_flight": args.max_in_flight,
                                 "checkpoint_interval": 128, "watermark_window": 256,
                                 "client_timeout_ms": 5000, "view_change_timeout_ms": 5000})
    result = run(run_cluster(spec))
    s = result.summary
    return {"transport": transport, "committed": s["requests"]["committed"],
            "throughput_tps": s["throughput_tps"], "latency_ms": s["latency_ms"],
            "messages_per_request": s["messages"]["per_committed_request"],
            "cpu_utilisation": s["cpu"]["utilisation"], "safety": s["safety"]["ok"],
            "state_agreement": s["safety"]["state_agreement"]["ok"]}


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
    p.add_argument("--insecure-plaintext", action="store_true",
                   help="measure without TLS (to see what TLS costs)")
    args = p.parse_args()
    crypto = ecdsa_per_s()
    load_avg = os.getloadavg()
    print(f"{'PLAINTEXT (insecure)' if args.insecure_plaintext else 'TLS'}; "
          f"machine: {os.cpu_count()} cores, load average {load_avg[0]:.2f} before the runs; "
          f"event loop: {'uvloop' if uvloop_available() else 'asyncio'}")
    print(f"ECDSA P-256 on one core: {crypto['verify_per_s']:,.0f} verify/s, "
          f"{crypto['sign_per_s']:,.0f} sign/s  (4 replicas verifying every request on 2 "
          f"cores: at most ~{crypto['verify_per_s'] * 2 / args.nodes:,.0f} tx/s)")
    rows = []
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
          f"  node CPU (share of one core)  ok")
    for r in rows:
        lat = r["latency_ms"]
        cpu = " ".join(f"{v:.2f}" for v in r["cpu_utilisation"].values())
        ok = r["safety"] and r["state_agreement"]
        print(f"{r['transport']:<10}{r['throughput_tps']:>10,.0f}{lat['p50'] or 0:>10.1f}"
              f"{lat['p99'] or 0:>10.1f}{r['messages_per_request'] or 0:>9.2f}  {cpu:<28}  "
              f"{'yes' if ok else 'NO'}")
    print(f"\ntarget: 3,000 committed signed tx/s over HTTP; settings: {args.clients} clients x "
          f"{args.outstanding} outstanding, batch_size {args.batch_size}, max_in_flight "
          f"{args.max_in_flight}, {args.duration}, sync {args.sync}, app {args.app}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"crypto": crypto, "load_average": load_avg,
                                         "settings": vars(args) | {"json": str(args.json)},
                                         "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
