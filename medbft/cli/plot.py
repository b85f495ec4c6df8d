"""`medbft plot DIR`: redraw the figures (and report.html) of a saved run or sweep from its
results files, without running anything again.

Why this exists: figures change more often than runs do (a new style, a new figure, another
format for a paper), and a run can take long. A missing or damaged file in the folder is
named in one line with exit 2 (`medbft.results` checks every file it reads); a figure that an
optional file's absence keeps from being drawn gets a warning."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.cli.sweep import parse_formats
from medbft.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("plot", help="redraw the figures of a run or sweep directory")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="a directory written by `medbft run` or `medbft sweep`")
    p.add_argument("--formats", default="png,svg",
                   help="figure formats, from png,svg,pdf (default png,svg)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    formats = parse_formats(args.formats)
    for text in args.dirs:
        out = Path(text)
        if not out.is_dir():
            raise UsageError(f"{out}: not a directory; expected one written by `medbft run` "
                             "or `medbft sweep`")
        if (out / "results.csv").exists() and (out / "sweep.json").exists():
            from medbft.views.sweep_figures import draw_sweep

            written = draw_sweep(out, formats)
            what = "sweep"
        else:
            from medbft.views.publish import redraw_run

            written = redraw_run(out, formats=formats, warn=lambda message: err.print(
                f"warning: {message}", markup=False, highlight=False))
            what = "run"
        console.print(f"{out}: {what}, {len({p.stem for p in written})} figure(s) in "
                      f"{out / 'plots'}/" + ("; report.html rewritten" if what == "run" else ""),
                      markup=False)
    return 0
