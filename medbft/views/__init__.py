"""Figures: one style (`style`), the figures of one run (`run_figures`), of a sweep
(`sweep_figures`) and of runs side by side (`compare`).

Why this exists: publication-ready figures from saved results, one command away. Everything
here reads results files (never a live run), draws with matplotlib's object API on the Agg
canvas (no pyplot, so no global figure state and no display needed) and is imported only when
figures are drawn, so runs with `--no-plots` and `medbft validate` never load matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medbft.timeline import FaultRow, fault_rows

if TYPE_CHECKING:
    from medbft.results import RunData

__all__ = ["DEFAULT_FORMATS", "FORMATS", "fault_windows", "may_fork"]

#: PNG for screens and the report, SVG (vector) for papers and editing. PDF is one option
#: away (`medbft plot DIR --formats png,pdf`); it is not the default because it takes about
#: twice as long as SVG to write (it embeds fonts), and every run draws its figures.
DEFAULT_FORMATS: tuple[str, ...] = ("png", "svg")
FORMATS: tuple[str, ...] = ("png", "svg", "pdf")


def fault_windows(data: RunData) -> list[FaultRow] | None:
    """The run's fault windows: faults.csv, or for a folder without it (a real cluster's has
    only summary.json and requests.csv) the windows summary.json's `faults` records; None
    when neither says."""
    if data.faults is not None:
        return data.faults
    windows = data.summary.get("faults")
    if not isinstance(windows, list):
        return None
    return fault_rows({"faults": windows}, ())


def may_fork() -> bool:
    """Whether figures may be drawn in forked processes: the platform can fork, and no other
    thread runs (a fork copies the locks a thread may hold, and the child could wait on one
    forever). Otherwise they are drawn in the calling process."""
    import multiprocessing
    import threading

    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
