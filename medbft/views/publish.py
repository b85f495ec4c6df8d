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

__all__ = ["Drawer", "publish_run", "redraw_run"]


def publish_run(out: Path, scenario: Scenario, result: Any, info: dict[str, Any],
                plots: bool = True, warn: Callable[[str], None] | None = None,
                drawer: Drawer | None = None) -> list[Path]:
    """Save the data files, draw the figures (unless `plots` is false) and write report.html.

    Returns the figure files written. Everything after the run itself happens here, so
    `medbft run` and `medbft plot` produce the same directory. With a `drawer` (started
    before the run), its process draws them and writes the report.
    """
    save_run_data(out, scenario, result, info)
    if drawer is not None:
        return drawer.redraw(out, plots=plots, warn=warn)
    return redraw_run(out, plots=plots, warn=warn)


class Drawer:
    """A process, started before a simulation, that loads the figure code (matplotlib: about
    0.8 s) on another core while the simulation runs, and later redraws the saved run
    (`redraw_run`, figures and report.html) from its folder. Without it `medbft run` loaded
    matplotlib only after simulating. The figures are the same files: the process runs the
    same `redraw_run` on the same saved files, and its warnings come back in order.

    Where this process may not fork (`medbft.views.may_fork`), or if the drawing process
    dies, the figures are drawn here as before. Use it as a context manager: the process is
    stopped on the way out, also on an error or Ctrl-C."""

    def __init__(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from medbft.views import may_fork

        self._pool: ProcessPoolExecutor | None = None
        if not may_fork():
            return
        try:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                                             initializer=_load_figure_code)
            self._pool.submit(int)  # start the process now: it loads the figure code first
        except OSError:
            self._pool = None

    def __enter__(self) -> Drawer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def redraw(self, out: Path, plots: bool = True, formats: Sequence[str] | None = None,
               warn: Callable[[str], None] | None = None) -> list[Path]:
        """`redraw_run(out, plots, formats, warn)`, in the drawing process when it runs."""
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is not None:
            try:
                written, warnings = self._pool.submit(_redraw_collecting, out, plots,
                                                      formats).result()
            except BrokenProcessPool:
                self.close()
            else:
                for message in warnings:
                    (warn or _warn)(message)
                return written
        return redraw_run(out, plots=plots, formats=formats, warn=warn)


def _load_figure_code() -> None:
    import medbft.views.report
    import medbft.views.run_figures  # noqa: F401  (matplotlib)


def _redraw_collecting(out: Path, plots: bool,
                       formats: Sequence[str] | None) -> tuple[list[Path], list[str]]:
    warnings: list[str] = []
    written = redraw_run(out, plots=plots, formats=formats, warn=warnings.append)
    return written, warnings


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
