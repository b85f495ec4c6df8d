"""Progress of long commands on stderr: a live line on a terminal, a short line now and then
otherwise.

Why this exists: a 16-node `medbft run`, a sweep, a fuzz campaign or a real-network load takes
seconds to minutes, and a silent command looks hung. This is the one place that reads the wall
clock for progress (elapsed time, ETA) and renders it: with `rich` (a bar and a line, removed
when done) when stderr is a terminal, otherwise as one plain line at most every `INTERVAL_S`
seconds, e.g. `run baseline: 3.2/10.0 s simulated, 812 committed, 254 tx/s, ETA 12 s`, so
logs and CI output stay short. It writes to stderr so stdout (tables, verdicts) stays clean for
pipes; every command's `--quiet` turns it off.

What it must not know: how runs work. Commands hand it numbers. The simulator reports through
the `progress` callback of `sim.run.run_scenario`, called between slices of virtual time; sim/
never imports this module, so no simulation logic reads the wall clock and results do not
depend on whether progress is shown.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any

__all__ = ["INTERVAL_S", "Reporter", "count_detail", "format_eta", "run_detail", "sim_progress"]

#: Without a terminal, at most one line per this many seconds of wall time.
INTERVAL_S = 5.0


def format_eta(seconds: float | None) -> str:
    """`ETA 12 s`, `ETA 3 m 05 s`, `ETA 1 h 02 m`; `ETA ?` when unknown."""
    if seconds is None:
        return "ETA ?"
    s = max(0, int(seconds + 0.5))
    if s < 60:
        return f"ETA {s} s"
    if s < 3600:
        return f"ETA {s // 60} m {s % 60:02d} s"
    return f"ETA {s // 3600} h {s % 3600 // 60:02d} m"


class Reporter:
    """One command's progress on `stream` (default stderr).

    `update(detail, done, total)` shows `label: detail`; on a terminal as a rich bar (`done`
    of `total`), else as a plain line when `interval_s` has passed since the last line (or
    since the start). `clock` is injectable for tests. Disabled (`enabled=False`, e.g. by
    `--quiet`), it prints nothing at all.
    """

    def __init__(self, label: str, *, enabled: bool = True, stream: IO[str] | None = None,
                 terminal: bool | None = None, interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.enabled = enabled
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        if terminal is None:
            isatty = getattr(self.stream, "isatty", None)
            terminal = bool(isatty()) if isatty is not None else False
        self.terminal = terminal
        self.interval_s = INTERVAL_S if interval_s is None else interval_s
        self.clock = clock
        self.started = clock()
        self._last_line = self.started
        self._bar: Any = None  # rich.progress.Progress, started on the first update
        self._task: Any = None

    # -- numbers ----------------------------------------------------------------------------

    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def eta_s(self, done: float, total: float | None) -> float | None:
        """Time left at the mean rate since the start (not the last few updates: several
        sweep workers finishing together would read as a huge rate)."""
        if total is None or done <= 0:
            return None
        return self.elapsed_s() / done * max(0.0, total - done)

    # -- output -----------------------------------------------------------------------------

    def update(self, detail: str, done: float | None = None, total: float | None = None) -> None:
        if not self.enabled:
            return
        if self.terminal:
            if self._bar is None:
                self._start_bar(total)
            self._bar.update(self._task, completed=done or 0, total=total, detail=detail)
            return
        now = self.clock()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            print(f"{self.label}: {detail}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A message on the same stream that stays (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _start_bar(self, total: float | None) -> None:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            console = Console(file=self.stream, force_terminal=True, highlight=False)
            # What a command prints to stdout meanwhile goes above the bar when stdout is the
            # same terminal; never when stdout is a pipe (rich would divert it to our stream).
            isatty = getattr(sys.stdout, "isatty", None)
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[detail]}"), console=console,
                                 transient=True,
                                 redirect_stdout=bool(isatty and isatty()))
            self._task = self._bar.add_task(self.label, total=total, detail="")
            self._bar.start()


def run_detail(reporter: Reporter, now_ns: int, duration_ns: int, drain_ns: int,
               committed: int, real: bool = False) -> str:
    """`3.2/10.0 s simulated, 812 committed, 254 tx/s, ETA 12 s` (throughput over the time
    so far; past the duration the run drains: `+1.3/5.0 s drain`, no ETA). `real`: the time
    is wall time (`elapsed`, a real network's load), so the ETA is simply what is left."""
    now_s, duration_s = now_ns / 1e9, duration_ns / 1e9
    rate = committed / now_s if now_s > 0 else 0.0
    what = "elapsed" if real else "simulated"
    if now_ns <= duration_ns:
        when = f"{now_s:.1f}/{duration_s:.1f} s {what}"
        eta = format_eta(duration_s - now_s if real else reporter.eta_s(now_s, duration_s))
    else:
        when = f"{duration_s:.1f} s {what} +{now_s - duration_s:.1f}/{drain_ns / 1e9:.1f} s drain"
        eta = "draining"
    return f"{when}, {committed} committed, {rate:.0f} tx/s, {eta}"


def count_detail(reporter: Reporter, done: int, total: int, unit: str, failed: int) -> str:
    """`12/40 runs, 1 failed, ETA 1 m 20 s`."""
    return f"{done}/{total} {unit}, {failed} failed, {format_eta(reporter.eta_s(done, total))}"


def sim_progress(reporter: Reporter, drain_ns: int,
                 real: bool = False) -> Callable[[int, int, int, int], None]:
    """A `progress(now_ns, duration_ns, committed, submitted)` callback for
    `sim.run.run_scenario` (or, `real`, `medbft.real.load.run_load`) reporting to `reporter`."""

    def progress(now_ns: int, duration_ns: int, committed: int, submitted: int) -> None:
        reporter.update(run_detail(reporter, now_ns, duration_ns, drain_ns, committed, real),
                        done=min(now_ns, duration_ns) / 1e9, total=duration_ns / 1e9)

    return progress
