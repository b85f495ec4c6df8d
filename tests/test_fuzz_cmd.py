"""`medbft fuzz`: passing seeds exit 0; a failing seed prints its reproduction and writes its
schedule and a shrunk one as scenario files that `medbft run` accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import sim.commands.fuzz as fuzz_cmd
import sim.fuzz as fuzz
from sim.cli import main
from sim.scenario import load_scenario


def test_fuzz_passes_a_few_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", "--seeds", "3", "--out", str(tmp_path)]) == 0
    assert "3 passed, 0 failed" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


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
