"""Measure, on this machine, the per-operation costs the simulator's CPU model charges.

Why this exists: `sim/cpu.py` charges every replica step by the operations the core counted
(`node.crypto.Costs`: messages, bytes, sign, verify, mac, digest) at a per-operation cost in
nanoseconds (`DEFAULT_COSTS_NS`, measured once on the project's reference machine). Results
only transfer to another machine if those costs do, so this script re-measures them here and
prints a `cpu:` mapping to paste into a scenario. It is a measuring tool, never used in tests.

How to run (from the project root):

    .venv/bin/python bench/calibrate.py            # full: ~20 s on a 2-core VM
    .venv/bin/python bench/calibrate.py --quick    # fewer repetitions: ~3 s
    .venv/bin/python bench/calibrate.py --json results/calibration.json

What is measured (medians over several repetitions, `time.perf_counter_ns`):

* sign    ECDSA P-256 through `Keyring.sign` (deterministic RFC 6979, r||s encoding).
* verify  ECDSA P-256 through `Keyring._verify_uncached` (the real check, no VerifyCache).
* mac     keyed BLAKE2b through `Keyring.mac` on a ~200-byte input, session key already derived.
* digest  `hashlib.sha256(data).digest()` of 200 bytes.
* message and byte: the replica core's own Python cost, crypto excluded. An in-memory
  cluster (`sim.memnet.InMemoryCluster`, n = 4, one closed-loop client) is driven through many
  requests; the wall time of every `Replica.step` call is summed (each replica's `step` is
  wrapped on the instance; the wrapper's own overhead is measured and removed), the crypto the
  replicas counted in `costs` is priced at the per-op figures above and subtracted, and what
  remains is divided by the messages handled. The cluster's shared VerifyCache is switched off
  (each keyring's `_verify_cache` set to None) so every counted verification is a real one and
  the subtraction is honest. Runs at two request sizes give two equations
  residual = message * messages + byte * bytes, solved for `message` (per message at zero
  payload) and `byte` (marginal cost per received byte: decoding, hashing, MACs and the state
  machine over larger payloads). MAC session keys and public keys are warmed up before timing.
  Requests write one of four keys, so the replicated state (and with it the cost of the
  checkpoint snapshot taken every 128 requests) stays small and constant during the run:
  state-machine cost that grows with the state is not a per-message cost.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.config import Config
from node.crypto import SIGNATURE_BYTES, Keyring
from sim.cpu import DEFAULT_COSTS_NS
from sim.memnet import InMemoryCluster

KEYS = ("message", "byte", "sign", "verify", "mac", "digest")
CRYPTO = ("sign", "verify", "mac", "digest")
PAYLOAD = bytes(range(200))  # the ~200-byte input for digest and MAC

perf_ns = time.perf_counter_ns


# ---------------------------------------------------------------------------------------------
# Micro-benchmarks


def per_op_ns(fn: Any, inner: int, reps: int) -> list[float]:
    """Time `inner` back-to-back calls of `fn()` `reps` times; nanoseconds per call each time."""
    fn()  # warm up (lazy key loading, caches)
    out = []
    for _ in range(reps):
        t0 = perf_ns()
        for _ in range(inner):
            fn()
        out.append((perf_ns() - t0) / inner)
    return out


def crypto_costs(reps: int) -> dict[str, list[float]]:
    cluster = InMemoryCluster(n=4)
    a, b = cluster.replicas["r0"].keys, cluster.replicas["r1"].keys
    keys_a = Keyring(a.identity, dict(a._public_bytes))  # fresh: no verify cache, own counters
    sig = keys_a.sign(PAYLOAD)
    assert len(sig) == SIGNATURE_BYTES
    pub = keys_a._public_bytes[a.id]
    keys_b = Keyring(b.identity, dict(b._public_bytes))
    assert keys_b._verify_uncached(a.id, pub, PAYLOAD, sig)

    sha256 = hashlib.sha256
    return {
        "sign": per_op_ns(lambda: keys_a.sign(PAYLOAD), 400, reps),
        "verify": per_op_ns(lambda: keys_b._verify_uncached(a.id, pub, PAYLOAD, sig), 200, reps),
        "mac": per_op_ns(lambda: keys_a.mac(b.id, PAYLOAD), 20_000, reps),
        "digest": per_op_ns(lambda: sha256(PAYLOAD).digest(), 100_000, reps),
    }


def wrapper_overhead_ns(reps: int) -> float:
    """What wrapping a call in two perf_counter_ns reads adds (subtracted per step)."""
    spent = [0]

    def noop(event: Any, now: int) -> None:
        return None

    def wrapped(event: Any, now: int) -> None:
        t0 = perf_ns()
        r = noop(event, now)
        spent[0] += perf_ns() - t0
        return r

    samples = []
    for _ in range(reps):
        spent[0] = 0
        for _ in range(50_000):
            wrapped(None, 0)
        samples.append(spent[0] / 50_000)
    # The time inside the wrapper that is not the call itself: the clock reads' share.
    plain = per_op_ns(lambda: noop(None, 0), 50_000, reps)
    return max(0.0, statistics.median(samples) - statistics.median(plain))


# ---------------------------------------------------------------------------------------------
# Replica core handling cost


def drive_cluster(requests: int, op_size: int, warmup: int, batch_size: int) -> dict[str, Any]:
    """Run `requests` requests through an n=4 in-memory cluster; time the replicas' steps."""
    cluster = InMemoryCluster(n=4, config=Config(batch_size=batch_size))
    for rep in cluster.replicas.values():
        rep.keys._verify_cache = None  # every counted verification is a real one
    value = (b"v" * op_size)[: max(1, op_size - 12)]
    counter = 0

    def run(count: int) -> None:
        nonlocal counter
        for _ in range(count):
            counter += 1
            before = len(cluster.accepted)
            cluster.submit(b"put k%d " % (counter % 4) + value)
            cluster.deliver_all()
            if len(cluster.accepted) != before + 1:
                raise RuntimeError("request did not commit in the in-memory cluster")
            if len(cluster.sent) > 10_000:  # keep memory flat; nothing reads these here
                cluster.sent.clear()
                cluster.traces.clear()
                cluster.accepted.clear()

    run(warmup)  # derives MAC session keys, loads public keys, fills caches

    spent = [0]
    calls = [0]
    for rep in cluster.replicas.values():
        inner = rep.step

        def timed(event: Any, now_ns: int, inner: Any = inner) -> Any:
            t0 = perf_ns()
            out = inner(event, now_ns)
            spent[0] += perf_ns() - t0
            calls[0] += 1
            return out

        rep.step = timed  # type: ignore[method-assign]
    before = {rid: r.costs.snapshot() for rid, r in cluster.replicas.items()}
    gc.collect()
    run(requests)
    ops = dict.fromkeys(("messages", "bytes", *CRYPTO), 0)
    for rid, r in cluster.replicas.items():
        for name, b, a in zip(ops, before[rid], r.costs.snapshot(), strict=True):
            ops[name] += a - b
    return {"step_ns": spent[0], "steps": calls[0], "ops": ops, "requests": requests,
            "op_size": op_size}


def handling_costs(runs: list[dict[str, Any]], crypto: dict[str, float],
                   overhead_ns: float) -> dict[str, float]:
    """Residual (step time minus priced crypto minus timer overhead) for each run."""
    out = {}
    for run in runs:
        ops = run["ops"]
        crypto_ns = sum(crypto[k] * ops[k] for k in CRYPTO)
        residual = run["step_ns"] - overhead_ns * run["steps"] - crypto_ns
        out[run["op_size"]] = {
            "residual_ns": residual, "messages": ops["messages"], "bytes": ops["bytes"],
            "crypto_share": crypto_ns / run["step_ns"],
        }
    return out


def solve_message_byte(small: dict[str, float], large: dict[str, float]) -> tuple[float, float]:
    """residual = message * messages + byte * bytes, two runs -> (message, byte)."""
    m1, b1, r1 = small["messages"], small["bytes"], small["residual_ns"]
    m2, b2, r2 = large["messages"], large["bytes"], large["residual_ns"]
    det = m1 * b2 - m2 * b1
    message = (r1 * b2 - r2 * b1) / det
    byte = (m1 * r2 - m2 * r1) / det
    return message, byte


# ---------------------------------------------------------------------------------------------
# Output


def fmt_cost(ns: float) -> str:
    """A duration string the scenario parser accepts: 17.5us, 320ns, 0.52ns (never negative)."""
    ns = max(0.0, ns)

    def num(x: float, places: int) -> str:
        text = f"{x:.{places}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text

    if ns >= 1000:
        return num(ns / 1000, 2) + "us"
    if ns >= 10:
        return num(ns, 0) + "ns"
    return num(ns, 3) + "ns"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and requests")
    ap.add_argument("--reps", type=int, help="repetitions (default 7, quick 3)")
    ap.add_argument("--requests", type=int, help="requests per cluster run (default 1500, "
                    "quick 300)")
    ap.add_argument("--large-op", type=int, default=16_384,
                    help="request size in bytes of the second run, for the per-byte slope")
    ap.add_argument("--batch-size", type=int, default=1, help="protocol batch_size (default 1)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    reps = args.reps or (3 if args.quick else 7)
    requests = args.requests or (300 if args.quick else 1500)
    small_op = 64

    print(f"calibrating on {platform.machine()} / Python {platform.python_version()} "
          f"({platform.python_implementation()}), {reps} repetitions; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other work skews the figures)")
    t_start = time.perf_counter()
    samples = crypto_costs(max(reps, 5))
    crypto = {k: statistics.median(v) for k, v in samples.items()}
    overhead = wrapper_overhead_ns(reps)

    # Interleave the two request sizes so slow drift on a shared machine hits both alike; per
    # size take the median residual per request (messages and bytes per request are fixed by
    # the protocol), then solve residual = message * messages + byte * bytes once.
    runs: dict[int, list[dict[str, float]]] = {small_op: [], args.large_op: []}
    for _ in range(reps):
        for size in runs:
            run = drive_cluster(requests, size, warmup=20, batch_size=args.batch_size)
            runs[size].append(handling_costs([run], crypto, overhead)[size])

    def per_request(size: int) -> dict[str, float]:
        rs = runs[size]
        return {"residual_ns": statistics.median(r["residual_ns"] for r in rs) / requests,
                "messages": rs[0]["messages"] / requests, "bytes": rs[0]["bytes"] / requests,
                "crypto_share": statistics.median(r["crypto_share"] for r in rs)}

    small, large = per_request(small_op), per_request(args.large_op)
    message, byte = solve_message_byte(small, large)
    # Spread: the same solve on each repetition's pair.
    pairs = [solve_message_byte(a, b)
             for a, b in zip(runs[small_op], runs[args.large_op], strict=True)]
    measured = {"message": message, "byte": byte, **crypto}
    spread = {k: (min(v), max(v)) for k, v in samples.items()}
    spread["message"] = (min(p[0] for p in pairs), max(p[0] for p in pairs))
    spread["byte"] = (min(p[1] for p in pairs), max(p[1] for p in pairs))

    print()
    print(f"{'operation':<10}{'measured':>13}{'min..max':>24}{'default':>13}{'measured/default':>18}")
    for k in KEYS:
        lo, hi = spread[k]
        ratio = measured[k] / DEFAULT_COSTS_NS[k] if DEFAULT_COSTS_NS[k] else float("nan")
        print(f"{k:<10}{measured[k]:>10.1f} ns{f'{lo:.1f}..{hi:.1f}':>24}"
              f"{DEFAULT_COSTS_NS[k]:>10.1f} ns{ratio:>17.2f}x")
    print()
    print(f"cluster runs: n=4, one closed-loop client, batch_size {args.batch_size}, "
          f"{requests} requests x {reps} repetitions at {small_op} B and {args.large_op} B "
          f"per request")
    for size, pr in ((small_op, small), (args.large_op, large)):
        print(f"  {size:>6} B: {pr['messages']:.1f} messages and {pr['bytes']:.0f} bytes "
              f"received per request (all replicas); non-crypto time "
              f"{pr['residual_ns'] / pr['messages']:.0f} ns per message; crypto "
              f"{pr['crypto_share']:.0%} of step time")
    print(f"  timer wrapper overhead removed: {overhead:.0f} ns per step")
    print()
    print("# paste into a scenario:")
    print("cpu:")
    for k in KEYS:
        print(f"  {k}: {fmt_cost(measured[k])}")
    print()
    print(f"done in {time.perf_counter() - t_start:.1f} s wall")

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "machine": platform.machine(), "python": platform.python_version(),
            "repetitions": reps, "requests": requests, "batch_size": args.batch_size,
            "measured_ns": measured, "default_ns": DEFAULT_COSTS_NS,
            "min_max_ns": spread, "crypto_samples_ns": samples,
            "wrapper_overhead_ns": overhead,
            "per_request": {str(small_op): small, str(args.large_op): large},
            "cpu_yaml": {k: fmt_cost(measured[k]) for k in KEYS},
        }, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
