"""`medbft cluster`: n real node processes on 127.0.0.1, a load, real crashes; one command.

Why this exists: to run a scenario against reality. With `--scenario FILE` the nodes,
protocol parameters, workload, duration and the `crash`/`recover` faults come from the
scenario file (crash = SIGKILL; recover = a fresh process restoring from its SQLite file);
other fault kinds exist only in the simulator and are skipped with a warning. With
`--emulate-latency` every party delays each frame it sends by the scenario's constant
`network.latency` (a WAN emulated on one machine; the kernel's netem is not available
here). Writes the summary.json (the same keys, with the same meanings, as a simulated run:
medbft/summary.py; `safety` adds the final `state_agreement`) and requests.csv of a simulated
run, and exits as `medbft run` does (1 when `expect:` fails); logs in OUT/logs/. Every
process it started is stopped at the end, also on Ctrl-C.

OUT holds one run, as a `medbft run` folder does: --out is checked before any process starts
(a file, an unwritable path or a non-empty folder no medbft run wrote: exit 2, unless
--force); an earlier run's files there (its run.json manifest, results, network directory,
node databases and logs) are removed before the new network is written; run.json (mode
"real") lists every file of the run, and a run under results/ adds a row to
results/index.csv.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from medbft.cli.keys import PROTOCOL_HELP, parse_nodes, parse_protocol
from medbft.cli.load import add_load_arguments, load_spec
from medbft.errors import EXIT_FAILED, EXIT_OK, UsageError
from medbft.summary import verdict

__all__ = ["register", "spec_from_scenario"]

T = TypeVar("T")


def register(sub: Any) -> None:
    p = sub.add_parser("cluster", help="run n real node processes on 127.0.0.1 under load")
    p.add_argument("--nodes", default="4", help="a count or role counts (as keys init)")
    p.add_argument("--scenario", help="take nodes, protocol, workload, duration and crash/"
                                      "recover faults from this scenario file")
    p.add_argument("--protocol", action="append", default=[], metavar="KEY=VALUE",
                   help=PROTOCOL_HELP + "; with --scenario, overrides its protocol: block")
    p.add_argument("--app", choices=("ledger", "kv"),
                   help="the state machine the nodes run (default: the scenario's "
                        "workload.app, else ledger)")
    p.add_argument("--sync", choices=("normal", "full", "off"), default="normal",
                   help="node storage durability (see medbft node --help)")
    p.add_argument("--emulate-latency", action="store_true",
                   help="with --scenario: every party delays what it sends by the scenario's "
                        "constant network.latency (a WAN on one machine)")
    p.add_argument("--out", type=Path, default=Path("results/cluster"),
                   help="results directory (default results/cluster/); what an earlier run "
                        "wrote there (results, network, node data, logs) is removed first")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty --out folder that no medbft run wrote (its "
                        "network/ and logs/*.log are replaced)")
    p.add_argument("--insecure-plaintext", action="store_true",
                   help="INSECURE, local experiments only: no TLS and the anonymous broker at "
                        "mqtt://127.0.0.1:1883 (default: TLS everywhere; over MQTT a private "
                        "Mosquitto started from the network's mosquitto.conf)")
    add_load_arguments(p)
    p.set_defaults(handler=handle)


def spec_from_scenario(path: str, args: argparse.Namespace,
                       overrides: Sequence[str] = ()) -> Any:
    """A `ClusterSpec` from a scenario file; warns (returns) the fault kinds it skips.
    `overrides` are `dotted.path=value` settings applied to the file as `medbft run --set`
    does (bench/compare.py and bench/calibrate.py run one scenario with another app and
    duration, and the simulated twin must see the same scenario)."""
    from medbft.real.cluster import ClusterSpec, FaultAction
    from medbft.real.load import LoadSpec
    from medbft.scenario import load_scenario, scenario_hash
    from node.netdir import protocol_block

    sc = load_scenario(path, overrides)
    protocol = protocol_block(sc.protocol.model_dump())
    w = sc.workload
    load = LoadSpec(duration_ns=sc.duration_ns, drain_ns=sc.drain_ns, clients=w.clients,
                    outstanding=w.outstanding, rate_per_s=w.rate_per_s,
                    op_size_bytes=w.op_size_bytes, transport=args.transport,
                    broker=args.broker, seed=sc.seed, name=sc.name, flow=w.flow, mix=w.mix,
                    invalid=w.invalid, scenario_hash=scenario_hash(sc), expect=sc.expect)
    app = getattr(args, "app", None) or w.app
    faults, skipped = [], []
    for fault in sc.faults:
        action = getattr(type(fault), "action", type(fault).__name__)
        if action not in ("crash", "recover"):
            skipped.append(action)
            continue
        target = str(fault.node)  # type: ignore[union-attr]  # crash/recover name a target
        faults.append(FaultAction(fault.at_ns, action, target))
        until = getattr(fault, "until_ns", None)
        if action == "crash" and until is not None:
            faults.append(FaultAction(until, "recover", target))
    spec = ClusterSpec(nodes=[(nd.id, nd.role) for nd in sc.nodes], load=load, out=args.out,
                       protocol=protocol, faults=faults, sync=args.sync, app=app,
                       client_roles=sc.client_roles if app == "ledger" else None,
                       link_delay_ms=_emulated_latency_ms(sc) if getattr(
                           args, "emulate_latency", False) else 0.0)
    return spec, skipped


def _emulated_latency_ms(sc: Any) -> float:
    latency = sc.network.latency
    if latency.dist != "constant" or sc.network.links:
        raise UsageError("--emulate-latency needs a constant network.latency (e.g. 5ms) and no "
                         "per-link overrides")
    return float(latency.value_ns or 0) / 1e6


def _spec_from_args(args: argparse.Namespace) -> Any:
    from medbft.real.cluster import ClusterSpec

    nodes = parse_nodes(args.nodes)
    return ClusterSpec(nodes=nodes, load=load_spec(args, name="cluster"), out=args.out,
                       protocol=parse_protocol(args.protocol), sync=args.sync,
                       app=args.app or "ledger")


async def _interruptible(main: Coroutine[Any, Any, T]) -> T:
    """Run `main`, cancelling it on SIGINT or SIGTERM (whatever the inherited disposition:
    a background job's SIGINT is ignored by default), so the caller's `finally` stops the
    node processes instead of leaving them orphaned."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    from medbft.cli.tables import summary_table
    from medbft.progress import Reporter, sim_progress
    from medbft.real.cluster import LocalCluster, clear_cluster_state, run_cluster
    from medbft.results import check_run_dir, clear_run_dir, finish_real_run, write_results
    from node.realtime import run

    check_run_dir(args.out, force=args.force)  # before any process starts
    if args.scenario:
        spec, skipped = spec_from_scenario(args.scenario, args)
        for action in sorted(set(skipped)):
            err.print(f"warning: {action} faults exist only in the simulator; skipped",
                      markup=False)
        if args.protocol:
            spec.protocol.update(parse_protocol(args.protocol))
    else:
        if args.emulate_latency:
            raise UsageError("--emulate-latency needs --scenario (it takes the scenario's "
                             "latency)")
        spec = _spec_from_args(args)
    if args.broker:
        spec.broker = args.broker
    spec.insecure_plaintext = bool(getattr(args, "insecure_plaintext", False))
    console.print(f"medbft cluster: {len(spec.nodes)} nodes over {spec.load.transport}, "
                  f"{spec.load.duration_ns / 1e9:g} s, {len(spec.faults)} fault action(s); "
                  f"out {args.out}/", markup=False)
    # The new network is written into --out during the run: clear the earlier run first.
    previous, kept = clear_run_dir(args.out)
    clear_cluster_state(args.out)
    if previous is not None:
        err.print(f"note: {args.out}/ held an earlier run ({previous.get('scenario')}); its "
                  f"files were removed", markup=False)
    box: list[LocalCluster] = []
    reporter = Reporter("cluster", enabled=not args.quiet)
    try:
        result = run(_interruptible(run_cluster(
            spec, box, log=lambda line: console.print(line, markup=False),
            progress=sim_progress(reporter, spec.load.drain_ns, real=True))))
    except RuntimeError as exc:
        raise UsageError(f"cluster failed: {exc}") from exc
    except (KeyboardInterrupt, asyncio.CancelledError):
        err.print("interrupted: stopping the nodes", markup=False)
        return 130
    finally:
        reporter.close()
        for cluster in box:
            cluster.stop_all()
    summary = result.summary
    write_results(args.out, summary, result.requests, None)
    ok = _ok(summary, spec.load.expect)
    finish_real_run(args.out, kept, summary, ok, getattr(args, "argv", None) or ["cluster"],
                    scenario_file=args.scenario)
    console.print(summary_table(summary))
    for w in summary["faults"]:
        end = "" if w["end_s"] is None else f", restarted at {w['end_s']:.3f} s"
        console.print(f"  {w['start_s']:>7.3f} s  {w['label']}{end}", markup=False)
    agree = summary["safety"]["state_agreement"]
    console.print(f"state agreement: {'yes' if agree['ok'] else 'NO'} "
                  f"({len(agree['nodes'])} live nodes); results in {args.out}/", markup=False)
    return _exit_code(summary, spec.load.expect, console)


def _exit_code(summary: dict[str, Any], expect: Any, console: Console) -> int:
    """As `medbft run`: 1 when the scenario's `expect:` fails or safety is violated (a
    scenario asserting `safety: false` expects the violation). The nodes' final states must
    also agree. Without a scenario, a lost request fails the run too."""
    ok = _ok(summary, expect)
    for failure in summary["expect"]["failed"]:
        console.print(f"  expectation {failure['name']} failed: expected "
                      f"{failure['expected']}, measured {failure['measured']}", markup=False)
    console.print(f"{'PASS' if ok else 'FAIL'}", markup=False)
    return EXIT_OK if ok else EXIT_FAILED


def _ok(summary: dict[str, Any], expect: Any) -> bool:
    ok = verdict(summary, None if expect is None else expect.safety)
    ok = ok and summary["safety"]["state_agreement"]["ok"]
    if expect is None:
        ok = ok and summary["liveness"]["ok"]
    return bool(ok)
