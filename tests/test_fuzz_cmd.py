"""`medbft fuzz`: passing seeds exit 0; a failing seed prints its reproduction and writes its
schedule and a shrunk one as scenario files that `medbft run` accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import medbft.cli.fuzz as fuzz_cmd
import medbft.fuzz as fuzz
from medbft.cli import main
from medbft.scenario import load_scenario


def test_fuzz_passes_a_few_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", "--seeds", "3", "--out", str(tmp_path)]) == 0
    assert "3 passed, 0 failed" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_coverage_counts_what_the_seeds_went_through() -> None:
    """The coverage lines are counted from the outcomes, so a swarm that never changed view
    (or never drew a forger) says so."""
    raw = {"faults": [{"at": "1ms", "crash": "r1"}, {"at": "2ms", "recover": "r1"},
                      {"at": "1ms", "byzantine": "r2", "behavior": {"censor": {"clients": []}}},
                      {"at": "3ms", "heal": "all"}]}
    assert fuzz.fault_labels(raw) == ["byzantine:censor", "crash"]
    cov = fuzz.Coverage()
    cov.add(fuzz.FuzzOutcome(1, True, True, scenario=raw, view_changes=3, committed=10))
    cov.add(fuzz.FuzzOutcome(2, True, True, scenario={"faults": []}, state_transfers=1,
                             committed=5))
    text = "\n".join(cov.lines())
    assert "view change: 1 (50%), most in one run: 3" in text
    assert "state transfer: 1 (50%)" in text
    assert "rejected (forged or invalid) messages: 0 (0%)" in text
    assert "committed in all: 15" in text
    assert "byzantine:censor 1, crash 1" in text


@pytest.mark.slow
def test_fuzz_prints_progress_lines_without_a_terminal(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("medbft.progress.INTERVAL_S", 0.0)  # a line per seed, not per 5 s
    assert main(["fuzz", "--seeds", "20", "--start", "900"]) == 0
    captured = capsys.readouterr()
    assert "fuzz: 10/20 seeds, 0 failed, ETA " in captured.err  # progress: stderr
    assert "seeds with a view change:" in captured.out
    assert "seeds, 0 failed" not in captured.out
    assert main(["fuzz", "--seeds", "2", "--start", "900", "--quiet"]) == 0
    assert "seeds," not in capsys.readouterr().err


def test_failing_seed_prints_reproduction_and_writes_shrunk_schedule(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A judge that calls any schedule with a byzantine fault a safety failure, so the test
    # exercises reporting and shrinking without needing a real protocol bug.
    def judge(raw: dict[str, Any]) -> fuzz.FuzzOutcome:
        bad = any("byzantine" in fault for fault in raw["faults"])
        return fuzz.FuzzOutcome(raw["seed"], not bad, True, [{"kind": "fake", "seq": 1}] * bad,
                                0, raw)

    seed = next(s for s in range(500)
                if sum("byzantine" in f for f in fuzz.draw_scenario(s, 4)["faults"]) == 1
                and len(fuzz.draw_scenario(s, 4)["faults"]) > 1)
    monkeypatch.setattr(fuzz, "check", judge)
    monkeypatch.setattr(fuzz_cmd, "shrink",
                        lambda raw, failure: fuzz.shrink(raw, failure, judge=judge))
    code = main(["fuzz", "--seed", str(seed), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"reproduce: medbft fuzz --n 4 --seed {seed}" in out
    full = load_scenario(tmp_path / f"fuzz-n4-seed{seed}.yaml")
    small = load_scenario(tmp_path / f"fuzz-n4-seed{seed}-shrunk.yaml")
    assert len(small.faults) == 1 < len(full.faults)
    assert type(small.faults[0]).__name__ == "ByzantineFault"
