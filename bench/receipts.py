"""What receipts cost: ledger write throughput of a 4-node HTTP cluster with and without one
auditor reading with receipts at the same time.

Why this exists: docs/security.md gives the measured cost of TLS and of receipts. This runs
the bench/real.py write load (ledger app, HTTP, TLS unless `--insecure-plaintext`) twice on a
fresh cluster: once alone, once beside one reader task (in the load generator's process)
that calls `medbft.real.reads.query()` in a loop as an `auditor` identity, the same call
`medbft query --as auditor-1 trace EPC` makes (each call asks f+1 = 2 replicas over a new
mutual-TLS session and keeps their receipt). The reader first takes an EPC the load
commissioned from block 1 (`blocks 1 1`), then asks `trace EPC` (or `--query blocks`: block
1 again and again). It prints the write tx/s of both runs and their ratio, the receipts served
per second, their p50/p99 latency, a receipt's size in bytes (as `medbft query` writes it)
and the time `verify_receipt` takes offline. A measuring tool, never run by the tests.

    .venv/bin/python bench/receipts.py                     # 2 x (20 s alone, 20 s reading)
    .venv/bin/python bench/receipts.py --duration 15s --query blocks
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medbft.real.cluster import ClusterSpec, run_cluster
from medbft.real.load import LoadSpec
from medbft.real.reads import ReadFailed, check_receipt, query
from medbft.units import parse_duration_ns
from node.ledger.receipts import dump
from node.ledger.roles import rotating_client_roles
from node.netdir import NetworkDir
from node.realtime import run

READER = "auditor-1"


def _epcs_in(receipt: dict[str, Any]) -> list[str]:
    """The EPCs the EPCIS_COMMISSION transactions of a `blocks` receipt name."""
    out = []
    for block in receipt["answer"]:
        for tx in block["transactions"]:
            try:
                op = json.loads(tx["op"])
            except ValueError:
                continue
            if op.get("kind") == "EPCIS_COMMISSION" and isinstance(op.get("epcs"), list):
                out += [str(e) for e in op["epcs"]]
    return out


class Reader:
    """The reader loop: latencies, the last receipt, failures."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.last: dict[str, Any] | None = None
        self.net: NetworkDir | None = None
        self.t0 = self.started = self.ended = 0.0
        self.what = ""

    async def _find_epc(self, net: NetworkDir) -> str | None:
        """A unit the load commissioned and the ledger knows (trace answers not null), from
        the blocks in order; None in `blocks` mode."""
        height, top = 1, 1
        while self.kind == "trace":
            try:
                blocks = await query(net, READER, "blocks", {"from": str(height),
                                                             "to": str(top)})
            except ReadFailed as exc:
                found = re.search(r"\(404\): the ledger has (\d+) blocks", str(exc))
                if found is None:
                    raise
                top = min(int(found.group(1)), height + 9)
                if top < height:  # not yet that many blocks
                    top = height
                    await asyncio.sleep(0.1)
                continue
            height = top + 1
            top = height
            for epc in _epcs_in(blocks)[:3]:
                if (await query(net, READER, "trace", {"arg": epc}))["answer"] is not None:
                    return epc
        return None

    async def loop(self, net: NetworkDir) -> None:
        self.net = net
        self.t0 = time.monotonic()
        try:
            epc = await self._find_epc(net)
            self.started = time.monotonic()
            while True:
                if self.kind == "trace":
                    args = {"arg": str(epc)}
                    self.what = f"trace {epc}"
                else:
                    args = {"from": "1", "to": "1"}
                    self.what = "blocks 1 1"
                t0 = time.perf_counter()
                try:
                    self.last = await query(net, READER, self.kind, args)
                    self.latencies.append(time.perf_counter() - t0)
                except ReadFailed as exc:
                    self.failures.append(str(exc))
                self.ended = time.monotonic()
        except ReadFailed as exc:
            self.failures.append(str(exc))


def bench(args: argparse.Namespace, out: Path, reader: Reader | None) -> dict[str, Any]:
    load = LoadSpec(duration_ns=parse_duration_ns(args.duration), drain_ns=5_000_000_000,
                    clients=args.clients, outstanding=args.outstanding, transport="http",
                    name="bench-receipts")
    roles = rotating_client_roles(args.clients) | {READER: "auditor"}
    spec = ClusterSpec(nodes=[(f"node-{i + 1}", "hospital") for i in range(args.nodes)],
                       load=load, out=out, app="ledger", client_roles=roles,
                       insecure_plaintext=args.insecure_plaintext,
                       protocol={"batch_size": args.batch_size,
                                 "max_in_flight": args.max_in_flight,
                                 "checkpoint_interval": 128, "watermark_window": 256,
                                 "client_timeout_ms": 5000, "view_change_timeout_ms": 5000})
    load_avg = os.getloadavg()[0]
    result = run(run_cluster(spec, during_load=reader.loop if reader else None))
    s = result.summary
    return {"tps": s["throughput_tps"], "p50_ms": s["latency_ms"]["p50"],
            "ok": s["safety"]["ok"] and s["safety"]["state_agreement"]["ok"],
            "load_average": load_avg}


def verify_time(data: bytes, net: NetworkDir, seconds: float = 1.0) -> float:
    """Seconds per `check_receipt` (verify_receipt against the network's keys), offline."""
    check_receipt(data, net)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        check_receipt(data, net)
        count += 1
    return (time.perf_counter() - t0) / count


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", default="20s")
    p.add_argument("--rounds", type=int, default=2, help="alone/with-reader pairs")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--outstanding", type=int, default=128, help="per client")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-in-flight", type=int, default=4)
    p.add_argument("--query", choices=("trace", "blocks"), default="trace")
    p.add_argument("--insecure-plaintext", action="store_true")
    args = p.parse_args()
    print(f"{'PLAINTEXT (insecure)' if args.insecure_plaintext else 'TLS'}; machine: "
          f"{os.cpu_count()} cores; ledger app over HTTP, {args.clients} clients x "
          f"{args.outstanding} outstanding, {args.duration} per run")
    alone_runs: list[dict[str, Any]] = []
    read_runs: list[dict[str, Any]] = []
    readers: list[Reader] = []
    with tempfile.TemporaryDirectory(prefix="medbft-receipts-") as tmp:
        for r in range(args.rounds):  # alternating, the machine's load drifts
            alone_runs.append(bench(args, Path(tmp) / f"alone-{r}", None))
            readers.append(Reader(args.query))
            read_runs.append(bench(args, Path(tmp) / f"reading-{r}", readers[-1]))
            print(f"round {r + 1}: alone {alone_runs[-1]['tps']:,.0f} tx/s (load average "
                  f"{alone_runs[-1]['load_average']:.2f}), with a reader "
                  f"{read_runs[-1]['tps']:,.0f} tx/s (load average "
                  f"{read_runs[-1]['load_average']:.2f}), {len(readers[-1].latencies)} "
                  f"receipts", flush=True)
        reader = readers[-1]
        if reader.last is None or reader.net is None:
            print(f"the reader got no receipt: {reader.failures[:3]}")
            return 1
        data = dump(reader.last)
        verify_s = verify_time(data, reader.net)
    alone = {"tps": statistics.median(x["tps"] for x in alone_runs),
             "p50_ms": statistics.median(x["p50_ms"] for x in alone_runs),
             "ok": all(x["ok"] for x in alone_runs)}
    read = {"tps": statistics.median(x["tps"] for x in read_runs),
            "p50_ms": statistics.median(x["p50_ms"] for x in read_runs),
            "ok": all(x["ok"] for x in read_runs)}
    lat = sorted(x for rd in readers for x in rd.latencies)
    span = sum(max(rd.ended - rd.started, 0.0) for rd in readers) or 1e-9
    starts = ", ".join(f"{rd.started - rd.t0:.1f}" for rd in readers)
    print(f"\nmedians of {args.rounds} rounds:")
    print(f"write tx/s alone          {alone['tps']:>9,.0f}   (p50 {alone['p50_ms']:.0f} ms)")
    print(f"write tx/s with a reader  {read['tps']:>9,.0f}   (p50 {read['p50_ms']:.0f} ms)")
    print(f"ratio with/alone          {read['tps'] / alone['tps']:>9.2f}")
    print(f"reader: {reader.what} as {READER}: {len(lat)} receipts in {span:.1f} s = "
          f"{len(lat) / span:.1f} receipts/s, {sum(len(rd.failures) for rd in readers)} failed; "
          f"reading from {starts} s into the load (a receipt needs a stable checkpoint: "
          f"the first comes after 128 batches)")
    print(f"receipt latency           p50 {statistics.median(lat) * 1000:.1f} ms, "
          f"p99 {lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000:.1f} ms")
    print(f"receipt size              {len(data):,} bytes "
          f"({len(reader.last['attestations'])} attestations)")
    print(f"verify_receipt offline    {verify_s * 1000:.2f} ms")
    print(f"agreement ok              {'yes' if alone['ok'] and read['ok'] else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
