"""`medbft run` and `medbft validate`: a scenario in the deterministic simulator.

Why this exists: the main job of the tool. `run` loads a scenario (with `--set` overrides),
runs it on virtual time, writes the run folder (summary, requests, trace, figures, report),
prints the summary table and the verdict, and says how to reproduce a failing run.
`validate` checks scenario files without running them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from medbft.cli.tables import describe_violations, summary_table
from medbft.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UsageError
from medbft.scenario import ScenarioError, load_scenario
from medbft.scenario.model import simulation_problems
from medbft.summary import verdict

if TYPE_CHECKING:
    from medbft.views.publish import Drawer

__all__ = ["register"]


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run a scenario in the deterministic simulator")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--seed", type=int, help="override the scenario's seed (>= 0)")
    run.add_argument("--out", help="results folder (default results/<name>/); the files an "
                                   "earlier run wrote there are removed first")
    run.add_argument("--force", action="store_true",
                     help="write into a non-empty --out folder that no `medbft run` wrote")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object (verdict, headline figures, summary path) "
                          "on stdout and nothing else")
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
    val.add_argument("--json", action="store_true",
                     help="print one JSON object: per file ok and its problems (field, message)")
    val.set_defaults(handler=lambda args, console, err: _validate(args.scenarios, console, err,
                                                                  as_json=args.json))


def _validate(paths: list[str], console: Console, err: Console, as_json: bool = False) -> int:
    status = EXIT_OK
    files: list[dict[str, Any]] = []
    for path in paths:
        try:
            sc = load_scenario(path)
            if problems := simulation_problems(sc):
                raise ScenarioError.from_problems(path, problems)
        except ScenarioError as exc:
            status = EXIT_BAD_INPUT
            files.append({"path": path, "ok": False, "problems": [
                {"field": p.field, "message": p.message} for p in exc.problems]})
            if not as_json:
                err.print(f"error: {exc}", markup=False, soft_wrap=True)
            continue
        files.append({"path": path, "ok": True, "name": sc.name, "n": sc.n, "f": sc.f,
                      "faults": len(sc.faults), "problems": []})
        if not as_json:
            console.print(f"ok: {path} ({sc.name}: n={sc.n}, f={sc.f}, "
                          f"{len(sc.faults)} faults)", markup=False)
    if as_json:
        print_json({"ok": status == EXIT_OK, "files": files})
    return status


def print_json(obj: dict[str, Any]) -> None:
    """The one JSON object a --json command prints on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def verdict_line(summary: dict[str, Any], expect: Any, ok: bool) -> str:
    """`PASS: safety held, liveness held` -- and for a planned fork or stall, `safety violated
    as expected (expect: safety: false)` rather than a PASS next to `VIOLATED`."""
    def part(what: str, held: bool, lost: str, expected: bool | None) -> str:
        if held:
            return f"{what} held"
        if expected is False:
            return f"{what} {lost.lower()} as expected (expect: {what}: false)"
        return f"{what} {lost}"

    return (f"{'PASS' if ok else 'FAIL'}: "
            f"{part('safety', summary['safety']['ok'], 'VIOLATED', expect.safety)}, "
            f"{part('liveness', summary['liveness']['ok'], 'lost', expect.liveness)}")


def _run(args: argparse.Namespace, console: Console, err: Console) -> int:
    from medbft.results import check_run_dir
    from medbft.views.publish import Drawer

    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed: expected a whole number >= 0, as a scenario's seed: is; "
                         f"got {args.seed}")
    scenario = load_scenario(args.scenario, overrides=args.set)
    if problems := simulation_problems(scenario):
        raise ScenarioError.from_problems(args.scenario, problems)
    seed = scenario.seed if args.seed is None else args.seed
    out = Path(args.out) if args.out else Path("results") / scenario.name
    check_run_dir(out, force=args.force)  # before simulating: fail fast, not at the end
    quiet = args.quiet or args.json
    if not args.json:
        console.print(f"medbft run {args.scenario}: scenario {scenario.name!r}, seed {seed}, "
                      f"n={scenario.n}, f={scenario.f}", markup=False)
    # The figures' process loads matplotlib on the other core while the simulation runs.
    with Drawer() if not args.no_plots else contextlib.nullcontext() as drawer:
        return _simulate_and_publish(args, console, err, scenario, seed, out, quiet, drawer)


def _simulate_and_publish(args: argparse.Namespace, console: Console, err: Console,
                          scenario: Any, seed: int, out: Path, quiet: bool,
                          drawer: Drawer | None) -> int:
    from medbft.apps import write_ledger_results
    from medbft.progress import Reporter, sim_progress
    from medbft.results import (
        append_index,
        clear_run_dir,
        code_commit,
        headline,
        index_path,
        package_version,
        reproduce_command,
        write_manifest,
        write_results,
    )
    from sim.loop import LivelockError
    from sim.run import run_scenario  # imported here so `validate` and errors stay fast

    try:
        with Reporter(f"run {scenario.name}", enabled=not quiet) as reporter:
            result = run_scenario(scenario, seed=seed, trace=args.trace,
                                  progress=None if quiet
                                  else sim_progress(reporter, scenario.drain_ns))
    except LivelockError as exc:
        raise UsageError(f"{args.scenario}: {exc}; give the links a latency (network.latency) "
                         "or the replicas a CPU model (cpu:)") from None
    summary = result.summary
    previous, kept = clear_run_dir(out)
    if previous is not None and not args.json and (
            previous.get("scenario_hash") != summary.get("scenario_hash")
            or previous.get("seed") != seed):
        listed = index_path(out)
        err.print(f"note: {out}/ held another run ({previous.get('scenario')}, seed "
                  f"{previous.get('seed')}); its files were replaced"
                  + (f" (every run is listed in {listed})" if listed else "")
                  + "; use --out to keep runs side by side", markup=False)
    write_results(out, summary, result.requests, result.trace if args.trace else None)
    write_ledger_results(out, result)  # ledger.json, ledger_digests.json, offchain.json
    _publish(args, out, scenario, seed, result, drawer)
    write_manifest(out, kept, version=package_version(), commit=code_commit())
    ok = verdict(summary, scenario.expect.safety)
    command = reproduce_command(args.scenario, seed, args.set)
    index = append_index(out, summary, ok, command)
    if args.json:
        print_json({"ok": ok, "verdict": "pass" if ok else "fail", "scenario": scenario.name,
                    "seed": seed, "dir": str(out), "summary": str(out / "summary.json"),
                    **headline(summary), "expect_failed": summary["expect"]["failed"],
                    "index": None if index is None else str(index),
                    "reproduce": None if ok else command})
        return EXIT_OK if ok else EXIT_FAILED
    if not args.quiet:
        console.print(summary_table(summary))
    console.print(f"{verdict_line(summary, scenario.expect, ok)}; results in {out}/",
                  markup=False)
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


def _publish(args: argparse.Namespace, out: Path, scenario: Any, seed: int, result: Any,
             drawer: Drawer | None = None) -> None:
    """Save what figures and the report need, draw the figures, write report.html."""
    from medbft.results import reproduce_command
    from medbft.views.publish import publish_run

    info = {"command": reproduce_command(args.scenario, seed, args.set),
            "scenario_file": args.scenario, "overrides": list(args.set)}
    publish_run(out, scenario, result, info, plots=not args.no_plots, drawer=drawer)
