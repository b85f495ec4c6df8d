"""Ledger cost: execution per transaction (signatures excluded: the replica verifies them
before `execute`) and the cost of each query on a ledger of 100,000 transactions.

Why this exists: issue #4 sets a target of 50 us per transaction; the ledger runs on every
replica for every committed request, so its cost adds to each replica's CPU budget.

The transactions come from the simulator's own generator (medbft/traffic/ledger.py, the `mixed`
flow with 2% invalid ones), fed back with their results as a closed loop would, executed in
blocks of `--batch` without PBFT. Only `Ledger.execute` is timed for the headline figure;
per-kind figures time each transaction alone.

    .venv/bin/python bench/ledger.py            # 100,000 transactions
    .venv/bin/python bench/ledger.py --txs 20000 --batch 1
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medbft.traffic import LedgerTraffic
from node.ledger import (
    Ledger,
    LedgerGenesis,
    access_log,
    active_consents,
    recall_exposure,
    trace,
    verify_chain,
    verify_record,
)
from node.membership import Member, Membership
from node.messages import Request
from node.statemachine import BlockInfo

TARGET_US = 50.0
POPULATION = {"manufacturer": 2, "distributor": 2, "pharmacist": 3, "clinician": 4,
              "patient": 20, "inspector": 1, "auditor": 1}
NODES = (("hospital-1", "hospital"), ("hospital-2", "hospital"), ("pharmacy-1", "pharmacy"),
         ("pharmacy-2", "pharmacy"), ("regulator-1", "regulator"))


def build(txs: int, batch: int, seed: int) -> tuple[Ledger, LedgerTraffic, float]:
    clients = tuple(Member(f"{role}-{k}", role, b"k") for role, count in POPULATION.items()
                    for k in range(1, count + 1))
    genesis = LedgerGenesis.from_membership(
        Membership(tuple(Member(i, r, b"k") for i, r in NODES), clients))
    traffic = LedgerTraffic(genesis, random.Random(seed), flow="mixed", invalid=0.02,
                            duration_ns=10**15)
    ledger = Ledger(genesis)
    ids = [c.id for c in clients]
    executed, seq, now_ns, spent = 0, 0, 0, 0.0
    turn = 0
    while executed < txs:
        block: list[tuple[str, Request]] = []
        idle = 0
        while len(block) < batch and idle < len(ids):
            cid = ids[turn % len(ids)]
            turn += 1
            op = traffic.next_op(cid, 0, now_ns)
            if op is None:
                idle += 1
                continue
            block.append((cid, Request(op, turn, cid, 0, b"")))
        now_ns += 10_000_000
        seq += 1
        requests = [r for _, r in block]
        start = time.perf_counter()
        results = ledger.execute(requests, BlockInfo(seq, 0, now_ns))
        spent += time.perf_counter() - start
        for (cid, _req), result in zip(block, results, strict=True):
            traffic.on_result(cid, 0, result)
        executed += len(block)
    return ledger, traffic, spent / executed


def _kind(op: bytes) -> str:
    try:
        return str(json.loads(op)["kind"])
    except (ValueError, KeyError, TypeError):
        return "(malformed)"


def per_kind_costs(ledger: Ledger, traffic: LedgerTraffic, samples: int) -> dict[str, float]:
    """Median cost of each kind, executing fresh transactions one per block on the big ledger."""
    costs: dict[str, list[float]] = {}
    ids = sorted(traffic.g.parties)
    seq = len(ledger.state.block_hashes) + 10
    now = ledger.state.blocks.entries[-1][2]
    for i in range(samples):
        cid = ids[i % len(ids)]
        op = traffic.next_op(cid, 0, now)
        if op is None:
            continue
        req = Request(op, 10**9 + i, cid, 0, b"")
        seq += 1
        now += 10_000_000
        start = time.perf_counter()
        result = ledger.execute([req], BlockInfo(seq, 0, now))
        costs.setdefault(_kind(op), []).append(time.perf_counter() - start)
        traffic.on_result(cid, 0, result[0])
    return {k: statistics.median(v) * 1e6 for k, v in sorted(costs.items())}


def time_query(label: str, fn, repeat: int = 200) -> tuple[str, float]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return label, (time.perf_counter() - start) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--txs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10, help="transactions per block")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gc", choices=("default", "tuned", "off"), default="default",
                        help="Python's cyclic GC: as is; thresholds as sim/run.py sets them; "
                             "disabled (the ledger's objects are acyclic, so 'off' shows the "
                             "ledger's own cost and 'default' what a long-lived heap adds)")
    args = parser.parse_args()
    if args.gc == "tuned":
        gc.set_threshold(50_000, 20, 100)
    elif args.gc == "off":
        gc.disable()
    t0 = time.perf_counter()
    ledger, traffic, per_tx_s = build(args.txs, args.batch, args.seed)
    st = ledger.state
    print(f"ledger: {args.txs} transactions in {len(st.block_hashes)} blocks "
          f"(batch {args.batch}), {len(st.tables['units'])} units, {len(st.audit.entries)} "
          f"audit entries; built in {time.perf_counter() - t0:.1f} s; gc {args.gc}")
    us = per_tx_s * 1e6
    print(f"execute: {us:.1f} us per transaction (incl. block header and Merkle root), "
          f"{us / TARGET_US:.2f} x the {TARGET_US:.0f} us target "
          f"({'within' if us <= TARGET_US else 'OVER'} target)")
    print("per kind (median, one transaction per block, on the full ledger):")
    for kind, cost in per_kind_costs(ledger, traffic, 3000).items():
        print(f"  {kind:<26} {cost:7.1f} us  ({cost / TARGET_US:.2f} x target)")
    rng = random.Random(2)
    serials = rng.sample(sorted(st.tables["units"]), 100)
    lots = sorted(st.lot_units, key=lambda lot: -len(st.lot_patients.get(lot, ())))
    record_id = next(iter(traffic.offchain["records"]))
    doc = traffic.offchain["records"][record_id]
    queries = [
        time_query("trace(serial)", lambda: trace(ledger, rng.choice(serials))),
        time_query(f"recall_exposure(lot, {len(st.lot_units[lots[0]])} units)",
                   lambda: recall_exposure(ledger, lots[0])),
        time_query(f"access_log(patient-1, {len(access_log(ledger, 'patient-1'))} entries)",
                   lambda: access_log(ledger, "patient-1")),
        time_query("active_consents(patient-1)", lambda: active_consents(ledger, "patient-1")),
        time_query("verify_record(record)", lambda: verify_record(
            ledger, record_id, doc["resource"], bytes.fromhex(doc["salt"]))),
        time_query("digest()", ledger.digest),
    ]
    print("queries on this ledger:")
    for label, cost in queries:
        print(f"  {label:<44} {cost:10.1f} us")
    for label, fn in (("verify_chain (chain integrity, rehash all)", lambda: verify_chain(ledger)),
                      ("snapshot()", ledger.snapshot)):
        start = time.perf_counter()
        out = fn()
        cost = time.perf_counter() - start
        extra = f", {len(out) / 2**20:.1f} MiB" if isinstance(out, bytes) else ""
        print(f"  {label:<44} {cost * 1e3:10.1f} ms{extra}")
    snap = ledger.snapshot()
    start = time.perf_counter()
    Ledger(ledger.genesis).restore(snap)
    print(f"  {'restore(snapshot)':<44} {(time.perf_counter() - start) * 1e3:10.1f} ms")


if __name__ == "__main__":
    main()
