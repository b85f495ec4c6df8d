"""`medbft run` and `medbft validate`: a scenario in the deterministic simulator.

Why this exists: the main job of the tool. `run` loads a scenario (with `--set` overrides),
runs it on virtual time, writes the run folder (summary, requests, trace, figures, report),
prints the summary table and the verdict, and says how to reproduce a failing run.
`validate` checks scenario files without running them.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.cli.tables import describe_violations, summary_table
from medbft.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UsageError
from medbft.scenario import ScenarioError, load_scenario
from medbft.scenario.model import simulation_problems
from medbft.summary import verdict

__all__ = ["register"]


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run a scenario in the deterministic simulator")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--out", help="results directory (default results/<name>/)")
    run.add_argument("--trace", action="store_true", help="also write trace.jsonl")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field by dotted path, e.g. protocol.batch_size=10")
    run.add_argument("--quiet", action="store_true",
                     help="print only the verdict line (and no progress on stderr)")
    run.add_argument("--no-plots", action="store_true",
                     help="skip the figures (DIR/plots/); report.html is still written")
    run.set_defaults(handler=_run)
    val = sub.add_parser("validate", help="check scenario files without running them")
    val.add_argument("scenarios", nargs="+")
    val.set_defaults(handler=lambda args, console, err: _validate(args.scenarios, console, err))


def _validate(paths: list[str], console: Console, err: Console) -> int:
    status = EXIT_OK
    for path in paths:
        try:
            sc = load_scenario(path)
        except ScenarioError as exc:
            err.print(f"error: {exc}", markup=False, soft_wrap=True)
            status = EXIT_BAD_INPUT
            continue
        if problems := simulation_problems(sc):
            err.print(f"error: {ScenarioError.from_problems(path, problems)}", markup=False,
                      soft_wrap=True)
            status = EXIT_BAD_INPUT
            continue
        console.print(f"ok: {path} ({sc.name}: n={sc.n}, f={sc.f}, "
                      f"{len(sc.faults)} faults)", markup=False)
    return status


def _run(args: argparse.Namespace, console: Console, err: Console) -> int:
    from medbft.apps import write_ledger_results
    from medbft.progress import Reporter, sim_progress
    from medbft.results import write_results
    from sim.loop import LivelockError
    from sim.run import run_scenario  # imported here so `validate` and errors stay fast

    scenario = load_scenario(args.scenario, overrides=args.set)
    if problems := simulation_problems(scenario):
        raise ScenarioError.from_problems(args.scenario, problems)
    seed = scenario.seed if args.seed is None else args.seed
    out = Path(args.out) if args.out else Path("results") / scenario.name
    console.print(f"medbft run {args.scenario}: scenario {scenario.name!r}, seed {seed}, "
                  f"n={scenario.n}, f={scenario.f}", markup=False)
    try:
        with Reporter(f"run {scenario.name}", enabled=not args.quiet) as reporter:
            result = run_scenario(scenario, seed=seed, trace=args.trace,
                                  progress=None if args.quiet
                                  else sim_progress(reporter, scenario.drain_ns))
    except LivelockError as exc:
        raise UsageError(f"{args.scenario}: {exc}; give the links a latency (network.latency) "
                         "or the replicas a CPU model (cpu:)") from None
    summary = result.summary
    write_results(out, summary, result.requests, result.trace if args.trace else None)
    write_ledger_results(out, result)  # ledger.json, ledger_digests.json, offchain.json
    _publish(args, out, scenario, seed, result)
    if not args.quiet:
        console.print(summary_table(summary))
    ok = verdict(summary, scenario.expect.safety)
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


def _publish(args: argparse.Namespace, out: Path, scenario: Any, seed: int, result: Any) -> None:
    """Save what figures and the report need, draw the figures, write report.html."""
    from medbft.results import reproduce_command
    from medbft.views.publish import publish_run

    info = {"command": reproduce_command(args.scenario, seed, args.set),
            "scenario_file": args.scenario, "overrides": list(args.set)}
    publish_run(out, scenario, result, info, plots=not args.no_plots)
