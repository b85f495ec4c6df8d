"""`medbft compare DIR DIR... [--out OUT]`: saved runs side by side in one self-contained
compare.html and a compare.csv (see `medbft.views.compare`).

Why this exists: "before/after" and "setting A vs setting B" are the questions people bring to
a simulator, e.g. a primary crash with a 1 s and a 4 s view-change timeout. Each DIR is a run
folder; `LABEL=DIR` names its group (runs with the same label, or else the same scenario but
for the seed, form one group with a mean and a 95% confidence interval). Every file is read
through `medbft.results`, so a missing or damaged one gives exit 2 naming it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.cli.sweep import parse_formats
from medbft.errors import UsageError

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare saved runs side by side (HTML report + CSV)")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="run folders written by `medbft run`; LABEL=DIR names the group")
    p.add_argument("--out", type=Path, default=Path("results/compare"),
                   help="where compare.html, compare.csv and plots/ go "
                        "(default results/compare)")
    p.add_argument("--formats", default="png,svg",
                   help="figure formats under OUT/plots, from png,svg,pdf (default png,svg)")
    p.set_defaults(handler=handle)


def _split(text: str) -> tuple[str | None, Path]:
    """'LABEL=DIR' -> (LABEL, DIR); a plain DIR (or one whose name holds '=') -> (None, DIR)."""
    label, sep, rest = text.partition("=")
    if sep and label and rest and not Path(text).exists():
        return label, Path(rest)
    return None, Path(text)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    from medbft.results import is_run_dir, load_run

    formats = parse_formats(args.formats)
    if len(args.dirs) < 2:
        raise UsageError("compare: give at least two run folders, e.g. "
                         "medbft compare results/a results/b")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    if is_run_dir(out):
        raise UsageError(f"--out {out}: is a run folder; pick another folder for the "
                         f"comparison")
    runs = []
    for text in args.dirs:
        label, path = _split(text)
        if not path.is_dir():
            raise UsageError(f"{path}: not a directory; expected a run folder written by "
                             f"`medbft run`")
        if (path / "sweep.json").exists() and not (path / "summary.json").exists():
            raise UsageError(f"{path}: a sweep folder; compare its runs (under {path}/runs/) "
                             f"or use `medbft plot {path}`")
        runs.append((load_run(path), label))

    from medbft.views.compare import compare_runs, group_runs, group_stat

    groups = group_runs(runs)
    compare_runs(groups, out, formats, warn=lambda message: err.print(
        f"warning: {message}", markup=False, highlight=False))
    for group in groups:
        stall = group_stat(group, "stall_ms")
        tps = group_stat(group, "throughput_tps")
        console.print(f"{group.label}: {len(group.runs)} run(s), longest stall "
                      f"{stall[0] if stall else float('nan'):.1f} ms, throughput "
                      f"{tps[0] if tps else float('nan'):.2f} req/s", markup=False)
    console.print(f"comparison: {out / 'compare.html'}, {out / 'compare.csv'}", markup=False)
    return 0
