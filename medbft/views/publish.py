"""Publishing a run folder: its data files, its figures and report.html, in one call.

Why this exists: `medbft run` and `medbft plot DIR` must leave the same folder behind, so both
go through here. It sits above `medbft.results` (which only reads and writes files) and the
figure and report modules (which only read a `RunData`), so none of them imports another's
caller.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medbft.results import load_run, save_run_data
from medbft.scenario import Scenario

__all__ = ["publish_run", "redraw_run"]


def publish_run(out: Path, scenario: Scenario, result: Any, info: dict[str, Any],
                plots: bool = True, warn: Callable[[str], None] | None = None) -> list[Path]:
    """Save the data files, draw the figures (unless `plots` is false) and write report.html.

    Returns the figure files written. Everything after the run itself happens here, so
    `medbft run` and `medbft plot` produce the same directory.
    """
    save_run_data(out, scenario, result, info)
    return redraw_run(out, plots=plots, warn=warn)


def redraw_run(out: Path, plots: bool = True, formats: Sequence[str] | None = None,
               warn: Callable[[str], None] | None = None) -> list[Path]:
    """Redraw the figures of the run saved in `out` and rewrite its report.html. Raises
    RunFileError (a UsageError) for a missing or damaged file; `warn` (default: stderr) gets
    one line per figure that a missing optional file keeps from being drawn."""
    from medbft.views.report import write_report

    data = load_run(out)
    written: list[Path] = []
    if plots:
        from medbft.views.run_figures import draw_run  # matplotlib loads only when drawing

        written = draw_run(data, out / "plots", formats, warn or _warn)
    _write_replay(out, warn or _warn)
    write_report(data, out / "report.html", with_figures=plots)
    return written


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _write_replay(out: Path, warn: Callable[[str], None]) -> None:
    """replay.html beside a trace (the report links to it); a damaged trace costs the page
    only, with a warning, as it costs a figure."""
    from medbft.errors import UsageError
    from medbft.views.replay import REPLAY_FILE, write_replay
    from medbft.views.sequence import TraceError

    if not (out / "trace.jsonl").exists():
        return
    try:
        write_replay(out)
    except (TraceError, UsageError) as exc:
        (out / REPLAY_FILE).unlink(missing_ok=True)
        warn(f"{REPLAY_FILE} not written: {exc}")
