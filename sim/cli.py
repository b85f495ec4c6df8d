"""The `medbft` command.

Why this exists: researchers and teachers drive everything from here. It parses arguments,
loads scenarios (bad input -> a clear message and exit code 2, never a traceback), runs them,
prints a summary table, writes results, and sets the exit code:
0 the run completed and its `expect:` holds; 1 an expectation failed or safety was violated;
2 bad input.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import json
import pkgutil
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import sim.commands
from sim.commands import UsageError
from sim.scenario import ScenarioError, load_scenario

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medbft",
        description="PBFT for a healthcare permissioned blockchain: simulate and measure.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario in the deterministic simulator")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--out", help="results directory (default results/<name>/)")
    run.add_argument("--trace", action="store_true", help="also write trace.jsonl")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field by dotted path, e.g. protocol.batch_size=10")
    run.add_argument("--quiet", action="store_true", help="print only the verdict line")
    run.add_argument("--no-plots", action="store_true",
                     help="skip the figures (DIR/plots/); report.html is still written")
    val = sub.add_parser("validate", help="check scenario files without running them")
    val.add_argument("scenarios", nargs="+")
    for info in sorted(pkgutil.iter_modules(sim.commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"sim.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        if args.command == "validate":
            return _validate(args.scenarios, console, err)
        if args.command == "run":
            return _run(args, console, err)
        return int(args.handler(args, console, err))
    except (ScenarioError, UsageError) as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
        return EXIT_BAD_INPUT
    except OSError as exc:
        err.print(f"error: {exc}", markup=False)
        return EXIT_BAD_INPUT


def _validate(paths: list[str], console: Console, err: Console) -> int:
    status = EXIT_OK
    for path in paths:
        try:
            sc = load_scenario(path)
        except ScenarioError as exc:
            err.print(f"error: {exc}", markup=False, soft_wrap=True)
            status = EXIT_BAD_INPUT
            continue
        console.print(f"ok: {path} ({sc.name}: n={sc.n}, f={sc.f}, "
                      f"{len(sc.faults)} faults)", markup=False)
    return status


def _run(args: argparse.Namespace, console: Console, err: Console) -> int:
    from sim.ledgerrun import write_ledger_results
    from sim.run import run_scenario  # imported here so `validate` and errors stay fast

    scenario = load_scenario(args.scenario, overrides=args.set)
    seed = scenario.seed if args.seed is None else args.seed
    out = Path(args.out) if args.out else Path("results") / scenario.name
    console.print(f"medbft run {args.scenario}: scenario {scenario.name!r}, seed {seed}, "
                  f"n={scenario.n}, f={scenario.f}", markup=False)
    result = run_scenario(scenario, seed=seed, trace=args.trace)
    summary = result.summary
    write_results(out, summary, result.requests, result.trace if args.trace else None)
    write_ledger_results(out, result)  # ledger.json, ledger_digests.json, offchain.json
    _publish(args, out, scenario, seed, result)
    if not args.quiet:
        console.print(summary_table(summary))
    ok = _verdict(summary, scenario.expect.safety)
    safety = "held" if summary["safety"]["ok"] else "VIOLATED"
    line = (f"{'PASS' if ok else 'FAIL'}: safety {safety}"
            f", liveness {'held' if summary['liveness']['ok'] else 'lost'}; results in {out}/")
    console.print(line, markup=False)
    for text in describe_violations(summary["safety"]["violations"]):
        console.print(f"  {text}", markup=False)
    for failure in summary["expect"]["failed"]:
        console.print(f"  expectation {failure['name']} failed: expected "
                      f"{failure['expected']}, measured {failure['measured']}", markup=False)
    if not ok:
        cmd = ["medbft", "run", args.scenario, "--seed", str(seed)]
        for item in args.set:
            cmd += ["--set", item]
        console.print(f"reproduce with: {shlex.join(cmd)}", markup=False)
    return EXIT_OK if ok else EXIT_FAILED


def describe_violations(violations: list[dict[str, Any]], limit: int = 3) -> list[str]:
    """One line per safety violation (the first `limit`), naming the sequence number, the
    replicas and what each executed there: what a reader needs to see the fork."""
    lines = []
    for v in violations[:limit]:
        if "digests" in v:
            who = ", ".join(f"{node} {digest[:12]}" for node, digest in v["digests"].items())
            lines.append(f"{v['kind']}: seq {v['seq']}: {who}")
        else:
            where = ", ".join(f"{k} {v[k]}" for k in ("node", "seq", "request") if k in v)
            lines.append(f"{v['kind']}: {where}")
    if len(violations) > limit:
        lines.append(f"... and {len(violations) - limit} more (summary.json, safety.violations)")
    return lines


def _publish(args: argparse.Namespace, out: Path, scenario: Any, seed: int, result: Any) -> None:
    """Save what figures and the report need, draw the figures, write report.html."""
    from sim.rundir import publish_run, reproduce_command

    info = {"command": reproduce_command(args.scenario, seed, args.set),
            "scenario_file": args.scenario, "overrides": list(args.set)}
    publish_run(out, scenario, result, info, plots=not args.no_plots)


def _verdict(summary: dict[str, Any], expected_safety: bool | None) -> bool:
    if not summary["expect"]["ok"]:
        return False
    return expected_safety is not None or summary["safety"]["ok"]


def write_results(out: Path, summary: dict[str, Any], requests: list[Any],
                  trace: list[dict[str, Any]] | None) -> None:
    """Write summary.json, requests.csv and (when given) trace.jsonl into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    with (out / "requests.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["client", "session", "timestamp", "submit_s", "commit_s",
                         "latency_ms", "view", "seq"])
        for r in requests:
            writer.writerow([
                r.client, r.session, r.timestamp, f"{r.submit_ns / 1e9:.9f}",
                "" if r.commit_ns is None else f"{r.commit_ns / 1e9:.9f}",
                "" if r.latency_ns is None else f"{r.latency_ns / 1e6:.6f}",
                "" if r.view is None else r.view, "" if r.seq is None else r.seq,
            ])
    if trace is not None:
        with (out / "trace.jsonl").open("w") as fh:
            for row in trace:
                fh.write(json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n")


def trace_digest(trace: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for row in trace:
        h.update(json.dumps(row, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    return h.hexdigest()


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"{summary['scenario']} (seed {summary['seed']}, n={summary['n']}, "
                        f"f={summary['f']})", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value")
    lat = summary["latency_ms"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    rows = [
        ("requests committed / submitted",
         f"{summary['requests']['committed']} / {summary['requests']['submitted']}"),
        ("throughput", f"{summary['throughput_tps']:.2f} req/s"),
        ("latency p50 / p95 / p99 (ms)", f"{ms(lat['p50'])} / {ms(lat['p95'])} / "
                                         f"{ms(lat['p99'])}"),
        ("latency mean / max (ms)", f"{ms(lat['mean'])} / {ms(lat['max'])}"),
        ("messages (bytes)", f"{summary['messages']['total']} ({summary['messages']['bytes']})"),
        ("messages per committed request", str(summary["messages"]["per_committed_request"])),
        ("view changes (final view)", f"{summary['view_changes']} ({summary['final_view']})"),
        ("state transfers", str(summary["state_transfers"])),
        ("rejected messages", str(summary["rejected_messages"]["total"])),
        ("safety", "held" if summary["safety"]["ok"] else
         f"VIOLATED ({len(summary['safety']['violations'])})"),
        ("liveness", "held" if summary["liveness"]["ok"] else
         f"lost ({summary['liveness']['unsettled']} unsettled)"),
        ("simulated / wall time", f"{summary['sim_time_s']:.3f} s / {summary['wall_time_s']} s"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    return table


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
