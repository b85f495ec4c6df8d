"""`medbft fuzz`: swarm-test the protocol over many seeds (see medbft/fuzz.py)."""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from medbft.errors import UsageError
from medbft.fuzz import APPS, Coverage, FuzzOutcome, draw_scenario, run_fuzz, shrink
from medbft.progress import Reporter, count_detail


def register(sub: Any) -> None:
    p = sub.add_parser("fuzz", help="swarm testing: random fault schedules over many seeds")
    p.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    p.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seed", type=int, help="run this one seed only (reproduce a failure)")
    p.add_argument("--n", type=int, default=4, help="replicas (default 4)")
    p.add_argument("--faulty", type=int, help="faulty replicas at most (default f; more "
                                              "explores beyond the bound)")
    p.add_argument("--no-byzantine", action="store_true", help="crash and network faults only")
    p.add_argument("--app", choices=APPS,
                   help="force the application on every seed (default: the ledger on about "
                        "30%% of seeds); ledger: a client of each role, a drawn flow, and "
                        "ledger-aware Byzantine behaviours on half the Byzantine seeds")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--out", default="results/fuzz", help="where failing schedules are written")
    p.add_argument("--no-shrink", action="store_true", help="do not shrink failing schedules")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (seeds, passed, failed with repro commands) on "
                        "stdout and nothing else")
    p.set_defaults(handler=handle)


def _command(args: argparse.Namespace, seed: int) -> str:
    parts = ["medbft", "fuzz", "--n", str(args.n), "--seed", str(seed)]
    if args.faulty is not None:
        parts += ["--faulty", str(args.faulty)]
    if args.no_byzantine:
        parts.append("--no-byzantine")
    if args.app:
        parts += ["--app", args.app]
    return " ".join(parts)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    if args.json:  # everything but the one JSON object goes nowhere
        console = Console(file=io.StringIO())
    for flag, value in (("--seed", args.seed), ("--start", args.start)):
        if value is not None and value < 0:
            raise UsageError(f"{flag}: expected a whole number >= 0; got {value}")
    if args.seeds < 1:
        raise UsageError(f"--seeds: expected 1 or more; got {args.seeds}")
    if args.jobs < 1:
        raise UsageError(f"--jobs: expected 1 or more; got {args.jobs}")
    if args.n < 4:
        raise UsageError(f"--n: PBFT needs at least 4 replicas; got {args.n}")
    if args.faulty is not None and not 0 <= args.faulty <= args.n:
        raise UsageError(f"--faulty: expected 0..{args.n}; got {args.faulty}")
    seeds = range(args.seed, args.seed + 1) if args.seed is not None else range(
        args.start, args.start + args.seeds)
    f = (args.n - 1) // 3
    faulty = f if args.faulty is None else args.faulty
    console.print(f"medbft fuzz: n={args.n} (f={f}), at most {faulty} faulty, seeds "
                  f"{seeds.start}..{seeds.stop - 1}, {args.jobs} job(s)", markup=False)
    started = time.perf_counter()
    failures: list[FuzzOutcome] = []
    coverage = Coverage()
    # Seeds done / total and failures so far, on stderr (a bar on a terminal, else a line
    # every few seconds); failures themselves are results and go to stdout.
    with Reporter("fuzz", enabled=not (args.quiet or args.json)) as reporter:
        reporter.update(count_detail(reporter, 0, len(seeds), "seeds", 0), 0, len(seeds))
        for outcome in run_fuzz(seeds, args.n, args.faulty, not args.no_byzantine, args.jobs,
                                args.app):
            if not outcome.ok:
                failures.append(outcome)
                console.print(f"seed {outcome.seed}: {outcome.failure} FAILED "
                              f"({_describe(outcome)}); reproduce: "
                              f"{_command(args, outcome.seed)}", markup=False)
            coverage.add(outcome)
            reporter.update(count_detail(reporter, coverage.seeds, len(seeds), "seeds",
                                         len(failures)), coverage.seeds, len(seeds))
    elapsed = time.perf_counter() - started
    written = {outcome.seed: _write_failure(args, outcome, console)
               for outcome in sorted(failures, key=lambda o: o.seed)}
    if args.json:
        from medbft.cli.run import print_json

        print_json({"ok": not failures, "seeds": {"first": seeds.start, "last": seeds.stop - 1,
                                                  "count": len(seeds)},
                    "passed": len(seeds) - len(failures), "elapsed_s": round(elapsed, 3),
                    "failed": [{"seed": o.seed, "failure": o.failure,
                                "description": _describe(o),
                                "reproduce": _command(args, o.seed), **written[o.seed]}
                               for o in sorted(failures, key=lambda o: o.seed)]})
        return 1 if failures else 0
    console.print(f"{len(seeds) - len(failures)} passed, {len(failures)} failed "
                  f"({len(seeds)} seeds in {elapsed:.1f} s)", markup=False)
    if len(seeds) > 1:
        for line in coverage.lines():
            console.print(f"  {line}", markup=False)
    return 1 if failures else 0


def _describe(outcome: FuzzOutcome) -> str:
    if not outcome.safety_ok:
        v = outcome.violations[0] if outcome.violations else {}
        return f"{v.get('kind', 'violation')} at seq {v.get('seq', '?')}"
    if not outcome.liveness_ok:
        return f"{outcome.unsettled} requests never settled after healing"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(outcome.harm_kinds.items()))
    return f"{outcome.harm} harm events within f faults ({kinds})"


def _write_failure(args: argparse.Namespace, outcome: FuzzOutcome,
                   console: Console) -> dict[str, str]:
    """Write the failing schedule (and its shrunk form); returns their paths and commands."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = draw_scenario(outcome.seed, args.n, args.faulty, not args.no_byzantine, args.app)
    path = out / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    console.print(f"  schedule: {path} (medbft run {path})", markup=False)
    paths = {"schedule": str(path), "run": f"medbft run {path}"}
    if args.no_shrink:
        return paths
    small = shrink(raw, outcome.failure)
    small_path = out / f"{small['name']}.yaml"
    small_path.write_text(yaml.safe_dump(small, sort_keys=False))
    console.print(f"  shrunk to {len(small['faults'])} of {len(raw['faults'])} faults: "
                  f"{small_path} (medbft run {small_path})", markup=False)
    return {**paths, "shrunk": str(small_path), "run_shrunk": f"medbft run {small_path}"}
