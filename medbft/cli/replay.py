"""`medbft replay DIR`: one self-contained HTML page that plays a traced run back.

Why this exists: to watch a run message by message, pause it, step through one request's
phases and see a fork appear, offline and without installing anything (the page carries its
script and the run's data inline; see `medbft.views.replay`). `medbft run --trace` already
writes the page into the run folder as replay.html; this command writes it again (for a run
folder from an older medbft, or to another place with --out).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.errors import UsageError

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("replay", help="write a self-contained HTML page that plays a traced "
                                      "run back (needs a run made with --trace)")
    p.add_argument("dir", metavar="DIR", help="a directory written by `medbft run --trace`")
    p.add_argument("--out", type=Path, help="the HTML file to write (default DIR/replay.html)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    from medbft.views.replay import write_replay
    from medbft.views.sequence import TraceError

    directory = Path(args.dir)
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory; expected one written by "
                         f"`medbft run --trace`")
    try:
        path = write_replay(directory, args.out)
    except TraceError as exc:
        raise UsageError(str(exc)) from exc
    console.print(f"replay: {path} (open it in a browser; it needs no network)", markup=False)
    return 0
