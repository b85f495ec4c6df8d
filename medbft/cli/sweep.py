"""`medbft sweep SWEEP.yaml`: run a parameter grid over seeds in parallel, resumably, and draw
metric-against-parameter figures with 95% confidence intervals (see medbft/sweep/__init__.py)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.errors import UsageError
from medbft.progress import Reporter, count_detail
from medbft.views import FORMATS


def register(sub: Any) -> None:
    p = sub.add_parser("sweep", help="run a parameter sweep (grid x seeds) and plot it")
    p.add_argument("sweep", help="sweep YAML file (base scenario, grid, seeds)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="parallel worker processes (default: one per CPU)")
    p.add_argument("--out", help="results directory (default results/sweeps/<name>/)")
    p.add_argument("--scheduler", metavar="tcp://HOST:8786",
                   help="run on this Dask distributed scheduler instead of local processes "
                        "(needs medbft[dask]; workers need the same medbft installed)")
    p.add_argument("--no-plots", action="store_true", help="write results.csv only")
    p.add_argument("--formats", default="png,svg", help=f"figure formats, from "
                                                        f"{','.join(FORMATS)} (default png,svg)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=handle)


def parse_formats(text: str) -> tuple[str, ...]:
    """'png,pdf' -> ('png', 'pdf'); raise UsageError for an unknown format."""
    formats = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UsageError(f"--formats: unknown format {', '.join(bad) or '(none)'}; "
                         f"expected some of {', '.join(FORMATS)}")
    return formats


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    from medbft.sweep import load_sweep, run_sweep

    if args.jobs < 1:
        raise UsageError(f"--jobs: expected 1 or more; got {args.jobs}")
    formats = parse_formats(args.formats)
    _refuse_scenario(args.sweep)
    sweep = load_sweep(args.sweep)
    out = Path(args.out) if args.out else Path("results") / "sweeps" / sweep.name
    runs = len(sweep.seeds) * _grid_size(sweep.grid)
    where = f"Dask scheduler {args.scheduler}" if args.scheduler else f"{args.jobs} job(s)"
    console.print(f"medbft sweep {args.sweep}: {sweep.name!r}, {runs} runs "
                  f"({_grid_size(sweep.grid)} points x {len(sweep.seeds)} seeds) on {where}",
                  markup=False)
    started = time.perf_counter()
    # Points done / to do and the time left (at the mean rate: see Reporter.eta_s) on stderr.
    with Reporter(f"sweep {sweep.name}", enabled=not args.quiet) as reporter:
        count = {"todo": 0, "done": 0}

        def begin(todo: int, reused: int) -> None:
            if reused:
                console.print(f"{reused} run(s) already done in {out}/runs/: skipped",
                              markup=False)
            count["todo"] = todo
            reporter.update(count_detail(reporter, 0, todo, "runs", 0), 0, todo)

        def advance(failed: int) -> None:
            count["done"] += 1
            done, todo = count["done"], count["todo"]
            reporter.update(count_detail(reporter, done, todo, "runs", failed), done, todo)

        try:
            outcome = run_sweep(sweep, out, jobs=args.jobs, scheduler=args.scheduler,
                                progress=begin, on_advance=advance)
        except KeyboardInterrupt:
            err.print(f"interrupted: finished runs are kept in {out}/runs/ and "
                      f"{out}/results.csv; run the same command again to resume", markup=False)
            return 130
    return _report(args, console, err, out, outcome, formats, time.perf_counter() - started)


def _refuse_scenario(path: str) -> None:
    """A scenario file given to `sweep` gets a pointer to `run`, not 'cpu: unknown field'."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return  # load_sweep words these
    if isinstance(raw, dict) and "nodes" in raw and not {"base", "grid"} & set(raw):
        raise UsageError(f"{path}: this is a scenario, not a sweep (it has nodes: and no base:"
                         f" or grid:); run it with `medbft run {path}`, or write a sweep file "
                         f"with base: {Path(path).name}, grid: and seeds: (see "
                         f"scenarios/sweeps/)")


def _grid_size(grid: dict[str, list[Any]]) -> int:
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


def _report(args: argparse.Namespace, console: Console, err: Console, out: Path, outcome: Any,
            formats: tuple[str, ...], elapsed: float) -> int:
    for params, seed, problem in outcome.failed:
        err.print(f"run {params} seed {seed} FAILED:\n{problem}", markup=False)
    figures = []
    if not args.no_plots:
        from medbft.views.sweep_figures import draw_sweep

        figures = draw_sweep(out, formats)
    drawn = ("" if args.no_plots
             else f"; {len({p.stem for p in figures})} figure(s) in {out / 'plots'}/")
    console.print(f"{outcome.ran} run(s) done, {outcome.reused} reused, "
                  f"{len(outcome.failed)} failed in {elapsed:.1f} s; "
                  f"{len(outcome.rows)} rows in {out / 'results.csv'}{drawn}", markup=False)
    return 1 if outcome.failed else 0
