"""`medbft load`: drive signed requests into a running real network and measure it.

Why this exists: the real-mode counterpart of a simulated run's workload, writing the same
summary.json and requests.csv (see `medbft.real.load`). OUT holds one run, as a `medbft run`
folder does: --out is checked before the load starts (exit 2 for a file, an unwritable path,
a non-empty folder no medbft run wrote unless --force, or a folder holding the --network
directory), an earlier run's files there are removed before writing, run.json (mode "real")
lists the files, and a run under results/ adds a row to results/index.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.errors import UsageError
from medbft.traffic import FLOWS
from node.netdir import NetworkDir, NetworkError

__all__ = ["add_load_arguments", "load_spec", "register"]


def register(sub: Any) -> None:
    p = sub.add_parser("load", help="drive signed requests into a running real network")
    p.add_argument("--network", required=True, type=Path, help="network directory")
    add_load_arguments(p)
    p.add_argument("--out", type=Path, default=Path("results/load"),
                   help="results directory (default results/load/); the files an earlier "
                        "run wrote there are removed first")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty --out folder that no medbft run wrote")
    p.set_defaults(handler=handle)


def add_load_arguments(p: argparse.ArgumentParser) -> None:
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--rate", help="open loop: requests per second (Poisson), e.g. 500/s")
    shape.add_argument("--outstanding", type=int, help="closed loop: requests in flight per "
                       "client (default 1)")
    p.add_argument("--duration", default="10s", help="how long to submit (default 10s)")
    p.add_argument("--drain", default="5s", help="extra time for stragglers (default 5s)")
    p.add_argument("--clients", type=int, help="client identities to use, the first N of the "
                   "network's (default: all of them on a ledger network, 1 on kv)")
    p.add_argument("--op-size", type=int, default=64, help="payload bytes per request (kv)")
    p.add_argument("--flow", choices=sorted(FLOWS), default="mixed",
                   help="ledger traffic: the kind mix, as a scenario's workload.flow "
                        "(default mixed)")
    p.add_argument("--invalid", type=float, default=0.0, metavar="FRACTION",
                   help="ledger traffic: share of deliberately bad transactions (default 0)")
    p.add_argument("--transport", choices=("http", "mqtt"), default="http")
    p.add_argument("--broker", metavar="URL", help="MQTT broker (default: network.json)")
    p.add_argument("--seed", type=int, default=1, help="seed of the request mix and arrivals")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def load_spec(args: argparse.Namespace, name: str = "load") -> Any:
    """A `medbft.real.load.LoadSpec` from parsed arguments. Raises UsageError."""
    from medbft.real.load import LoadSpec
    from medbft.units import parse_duration_ns, parse_rate_per_s

    try:
        duration_ns = parse_duration_ns(args.duration)
        drain_ns = parse_duration_ns(args.drain)
        rate = parse_rate_per_s(args.rate) if args.rate else None
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if duration_ns <= 0:
        raise UsageError(f"--duration must be positive; got {args.duration}")
    outstanding = None if rate else (args.outstanding or 1)
    if outstanding is not None and outstanding < 1:
        raise UsageError(f"--outstanding: at least 1; got {outstanding}")
    if args.clients is not None and args.clients < 1:
        raise UsageError(f"--clients: at least 1; got {args.clients}")
    if not 0.0 <= args.invalid <= 1.0:
        raise UsageError(f"--invalid: a fraction between 0 and 1; got {args.invalid}")
    return LoadSpec(duration_ns=duration_ns, drain_ns=drain_ns, clients=args.clients,
                    outstanding=outstanding, rate_per_s=rate, op_size_bytes=args.op_size,
                    transport=args.transport, broker=args.broker, seed=args.seed, name=name,
                    flow=args.flow, invalid=args.invalid)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    from medbft.cli.tables import summary_table
    from medbft.progress import Reporter, sim_progress
    from medbft.real.load import client_ids, run_load
    from medbft.results import check_run_dir, clear_run_dir, finish_real_run, write_results
    from node.realtime import run

    check_run_dir(args.out, force=args.force)  # before the load: fail fast, not at the end
    out, network = args.out.resolve(), args.network.resolve()
    if network == out or out in network.parents:
        raise UsageError(f"--out {args.out}: holds the network directory {args.network}, whose "
                         f"files a later run would remove; give another folder")
    try:
        net = NetworkDir.load(args.network)
    except NetworkError as exc:
        raise UsageError(str(exc)) from exc
    spec = load_spec(args)
    try:
        clients = client_ids(net, spec)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    shape = (f"rate {spec.rate_per_s:g}/s" if spec.rate_per_s
             else f"{spec.outstanding} outstanding per client")
    console.print(f"medbft load: {net.membership.n} nodes over {spec.transport}, "
                  f"{net.state_machine}, {len(clients)} client(s), {shape}, {args.duration}",
                  markup=False)
    try:
        with Reporter("load", enabled=not args.quiet) as reporter:
            result = run(run_load(net, spec, log=lambda line: err.print(line, markup=False),
                                  progress=sim_progress(reporter, spec.drain_ns, real=True)))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    ok = bool(result.summary["safety"]["ok"] and result.summary["liveness"]["ok"])
    _, kept = clear_run_dir(args.out)
    write_results(args.out, result.summary, result.requests, None)
    finish_real_run(args.out, kept, result.summary, ok, getattr(args, "argv", None) or ["load"],
                    network=str(args.network))
    console.print(summary_table(result.summary))
    console.print(f"results in {args.out}/", markup=False)
    return 0 if ok else 1
