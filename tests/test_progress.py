"""Progress output: lines on stderr without a terminal, none with --quiet, a throttle on a fake
clock, and results that do not depend on whether progress is shown (the simulator runs in
slices of virtual time when a progress callback is given)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

import medbft.progress
from medbft.cli import main
from medbft.progress import Reporter, format_eta, run_detail, sim_progress
from medbft.scenario import load_scenario
from sim.loop import VirtualTimeLoop
from sim.run import run_scenario

ROOT = Path(__file__).parent.parent
BASELINE = str(ROOT / "scenarios" / "baseline.yaml")
PRIMARY_CRASH = ROOT / "scenarios" / "primary-crash.yaml"
SHORT = ["--set", "duration=2s", "--set", "drain=1s"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _summary(path: Path) -> dict[str, Any]:
    summary = json.loads((path / "summary.json").read_text())
    summary.pop("wall_time_s")
    return summary


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same short baseline run with progress (a line per slice) and with --quiet."""
    base = tmp_path_factory.mktemp("progress")
    captured = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(medbft.progress, "INTERVAL_S", 0.0)  # a line on every update
        for name, extra in (("shown", []), ("quiet", ["--quiet"])):
            err = io.StringIO()
            mp.setattr("sys.stderr", err)
            code = main(["run", BASELINE, "--out", str(base / name), "--no-plots", *SHORT,
                         *extra])
            assert code == 0
            captured[name] = err.getvalue()
    return {"dir": base, **captured}


def test_a_run_prints_simulated_time_and_commits_on_stderr(runs: dict[str, Any]) -> None:
    lines = [line for line in runs["shown"].splitlines() if line.startswith("run baseline:")]
    assert len(lines) > 10
    pattern = re.compile(r"run baseline: (\d+\.\d)/2\.0 s simulated, (\d+) committed, "
                         r"\d+ tx/s, ETA ")
    seen = [(float(m[1]), int(m[2])) for m in map(pattern.match, lines) if m]
    assert seen, lines[:3]
    assert seen == sorted(seen) and seen[-1][1] > 0  # time and commits only grow
    committed = _summary(runs["dir"] / "shown")["requests"]["committed"]
    assert f", {committed} committed, " in lines[-1]  # the last line: the run's end


def test_quiet_prints_no_progress(runs: dict[str, Any]) -> None:
    assert "simulated" not in runs["quiet"]
    assert "run baseline:" not in runs["quiet"]


def test_results_are_identical_with_and_without_progress(runs: dict[str, Any]) -> None:
    shown, quiet = runs["dir"] / "shown", runs["dir"] / "quiet"
    assert _summary(shown) == _summary(quiet)
    assert (shown / "requests.csv").read_bytes() == (quiet / "requests.csv").read_bytes()


@pytest.mark.parametrize("cpu", ["none", "default"])
def test_sliced_run_records_exactly_what_one_run_records(cpu: str) -> None:
    # cpu: default puts a timer per message on the loop (the CPU model's handle-free
    # timers), and the primary's crash cancels the ones pending.
    scenario = load_scenario(PRIMARY_CRASH, overrides=["duration=7s", "drain=2s", f"cpu={cpu}"])
    calls: list[tuple[int, int, int, int]] = []
    plain = run_scenario(scenario, trace=True)
    sliced = run_scenario(scenario, trace=True, progress=lambda *a: calls.append(a))
    assert len(calls) > 100
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert calls[-1][0] / 1e9 == plain.summary["sim_time_s"]
    assert calls[-1][2] == plain.summary["requests"]["committed"]
    assert calls[-1][3] == plain.summary["requests"]["submitted"]
    for result in (plain, sliced):
        result.summary.pop("wall_time_s")
    assert sliced.summary == plain.summary
    assert sliced.trace == plain.trace
    assert sliced.events == plain.events
    assert sliced.requests == plain.requests  # dataclasses: field by field


def test_slices_resumed_without_the_first_check_are_one_run() -> None:
    """A timer exactly at a slice boundary runs in that slice, in scheduling order; and a
    predicate that already holds at the boundary is not checked there, as one call would not:
    one call runs on to the next timer and only then stops."""

    def drive(deadlines: list[int], check_first: bool) -> tuple[list[Any], int]:
        loop = VirtualTimeLoop()
        log: list[Any] = []

        def fire(name: str) -> None:  # logs itself now and its call_soon follower next
            log.append((name, loop.now_ns))
            loop.call_soon(log.append, name + "'")

        for t, name in ((5, "a"), (10, "b"), (10, "c"), (17, "d"), (30, "e")):
            loop.call_at_ns(t, fire, name)

        def done() -> bool:
            return loop.now_ns >= 12 and len(log) >= 6

        for i, deadline in enumerate(deadlines):
            if loop.run_until_ns(deadline, done, check_first=check_first or i == 0):
                break
        seen = (list(log), loop.now_ns)
        loop.close()
        return seen

    one = drive([40], True)
    assert one == ([("a", 5), "a'", ("b", 10), ("c", 10), "b'", "c'", ("d", 17)], 17)
    assert drive([10, 15, 20, 25, 40], False) == one
    assert drive([5, 10, 12, 40], False) == one
    # Checking the predicate first at a boundary would stop at 15, before "d" ran.
    assert drive([10, 15, 40], True) != one


def test_the_plain_line_throttle_respects_its_interval() -> None:
    clock, out = FakeClock(), io.StringIO()
    reporter = Reporter("run x", stream=out, terminal=False, interval_s=5.0, clock=clock)
    for dt, text in ((0.0, "a"), (1.0, "b"), (4.9, "c"), (5.0, "d"), (6.0, "e"), (9.9, "f"),
                     (10.1, "g"), (20.0, "h")):
        clock.now = 100.0 + dt
        reporter.update(text)
    reporter.close()
    assert out.getvalue().splitlines() == ["run x: d", "run x: g", "run x: h"]


def test_a_disabled_reporter_prints_nothing() -> None:
    out = io.StringIO()
    with Reporter("run x", enabled=False, stream=out, terminal=False, interval_s=0.0) as rep:
        sim_progress(rep, 0)(1_000_000_000, 2_000_000_000, 10, 12)
    assert out.getvalue() == ""


def test_on_a_terminal_it_draws_a_bar_and_clears_it() -> None:
    out = io.StringIO()
    with Reporter("run x", stream=out, terminal=True, interval_s=0.0) as rep:
        sim_progress(rep, 0)(1_000_000_000, 2_000_000_000, 10, 12)
        rep.note("a message")
    assert "a message" in out.getvalue()


def test_run_detail_and_eta() -> None:
    clock = FakeClock()
    rep = Reporter("run x", stream=io.StringIO(), terminal=False, clock=clock)
    clock.now += 4.0  # 4 s of wall time for 2 of 10 simulated seconds: 16 s left
    assert run_detail(rep, 2_000_000_000, 10_000_000_000, 5_000_000_000, 500) == (
        "2.0/10.0 s simulated, 500 committed, 250 tx/s, ETA 16 s")
    assert run_detail(rep, 11_500_000_000, 10_000_000_000, 5_000_000_000, 1150) == (
        "10.0 s simulated +1.5/5.0 s drain, 1150 committed, 100 tx/s, draining")
    assert run_detail(rep, 3_000_000_000, 10_000_000_000, 0, 30, real=True) == (
        "3.0/10.0 s elapsed, 30 committed, 10 tx/s, ETA 7 s")
    assert [format_eta(s) for s in (None, 0.2, 59.6, 185, 3725)] == [
        "ETA ?", "ETA 0 s", "ETA 1 m 00 s", "ETA 3 m 05 s", "ETA 1 h 02 m"]


def test_a_sweep_reports_runs_done_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(medbft.progress, "INTERVAL_S", 0.0)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(json.dumps({"name": "tiny", "base": BASELINE,
                                "set": {"duration": "200ms", "drain": "1s"},
                                "grid": {"protocol.batch_size": [1, 4]}, "seeds": 1}))
    args = ["sweep", str(spec), "--jobs", "1", "--no-plots"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "sweep tiny: 2/2 runs, 0 failed, ETA 0 s" in captured.err
    assert "runs, 0 failed" not in captured.out
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert "sweep tiny:" not in capsys.readouterr().err
