"""A simulated run driven step by step: advance to a virtual time, or to the next trace row
of some kind, look at the parts in between, and finish exactly as `run_scenario` would.

Why this exists: `medbft studio` lets a person watch a run, pause it, step one event at a time
and scrub backwards. `run_scenario` runs to the end in one go. This driver builds the same
parts (`sim.run._Run`, with the full trace on) and advances the same virtual-time loop in
slices. `VirtualTimeLoop.run_until_ns` guarantees that a run cut into consecutive slices
(every call after the first with `check_first=False`) executes the same callbacks in the same
order as one call, and the end-of-run test is evaluated at the same points, so a stepped run
records exactly what `run_scenario` records for the same scenario and seed: the same trace,
the same requests, the same summary (`finish` builds them with the same code).

What it must not know: pages, HTTP or what the studio shows. Going backwards is not its job:
the studio makes a new `Stepper` and advances it to the earlier time (one seed, one run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medbft.scenario import Scenario
from sim.run import RunResult, _assign_seqs, _Run, _summarise

__all__ = ["Stepper"]

#: A predicate on one trace row: does it end a step?
RowTest = Callable[[dict[str, Any]], bool]


class Stepper:
    """One run of `scenario` with `seed` (default: its own), started at virtual time 0."""

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.run = _Run(scenario, self.seed, trace=True)
        self.run.start()
        self._first = True  # run_until_ns's check_first: only the first slice checks first
        self.done = False
        self._result: RunResult | None = None

    @property
    def now_ns(self) -> int:
        return self.run.loop.now_ns

    @property
    def end_ns(self) -> int:
        """The latest the run can last: duration plus drain."""
        return self.scenario.end_ns

    @property
    def trace(self) -> list[dict[str, Any]]:
        """Every row recorded so far (sends, protocol events, faults), in time order."""
        return self.run.trace

    def advance_to(self, t_ns: int) -> None:
        """Run every callback due at or before `t_ns` (capped at the end), or until the run is
        over; the clock then rests at `t_ns` (or where the run ended)."""
        if self.done:
            return
        deadline = min(max(t_ns, self.now_ns), self.end_ns)
        self._slice(deadline, self.run.finished)

    def step(self, wanted: RowTest) -> bool:
        """Run until a row for which `wanted` is true has been recorded (after the batch of
        callbacks that recorded it), or the run is over. True if such a row came."""
        if self.done:
            return False
        trace = self.run.trace
        seen = len(trace)
        finished = self.run.finished

        def stop() -> bool:
            nonlocal seen
            hit = any(wanted(row) for row in trace[seen:])
            seen = len(trace)
            return hit or finished()

        before = len(trace)
        self._slice(self.end_ns, stop)
        return any(wanted(row) for row in trace[before:])

    def _slice(self, deadline: int, stop: Callable[[], bool]) -> None:
        loop = self.run.loop
        stopped = loop.run_until_ns(deadline, stop_when=stop, check_first=self._first)
        self._first = False
        if (stopped and self.run.finished()) or loop.now_ns >= self.end_ns:
            self.done = True

    def close(self) -> None:
        """Close the loop of a run left unfinished (the studio drops it for a rebuilt one)."""
        if self._result is None and not self.run.loop.is_closed():
            self.run.close()

    def finish(self) -> RunResult:
        """Run to the end and return what `run_scenario(scenario, seed=seed, trace=True)`
        returns (the loop is closed; the parts stay readable)."""
        if self._result is not None:
            return self._result
        self.advance_to(self.end_ns)
        run = self.run
        summary = _summarise(run, self.seed)
        run.close()
        summary["wall_time_s"] = 0.0  # not measured here; no digest covers it
        _assign_seqs(run)
        self._result = RunResult(
            summary, sorted(run.workload.records.values(),
                            key=lambda r: (r.submit_ns, r.client, r.session)),
            run.trace, run.events, run.app.artifacts(run))
        return self._result
