"""One seed reproduces a whole run: same summary, same trace, whatever the hash seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medbft.results import trace_digest
from medbft.scenario import load_scenario
from sim.run import digest_summary, run_scenario

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("name", [pytest.param("seven-nodes", marks=pytest.mark.slow),
                                  "primary-crash"])
def test_same_seed_twice_gives_identical_summary_and_trace(name: str) -> None:
    sc = load_scenario(ROOT / "scenarios" / f"{name}.yaml", overrides=["duration=3s"])
    a = run_scenario(sc, trace=True)
    b = run_scenario(sc, trace=True)
    assert digest_summary(a.summary) == digest_summary(b.summary)
    assert trace_digest(a.trace) == trace_digest(b.trace)
    assert len(a.trace) > 1000


def test_another_seed_gives_another_run() -> None:
    sc = load_scenario(ROOT / "scenarios" / "seven-nodes.yaml", overrides=["duration=2s"])
    a = run_scenario(sc, seed=1)
    b = run_scenario(sc, seed=2)
    assert digest_summary(a.summary) != digest_summary(b.summary)


def _run_cli(tmp: Path, hashseed: str) -> tuple[dict, bytes]:  # type: ignore[type-arg]
    out = tmp / f"h{hashseed}"
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    subprocess.run(
        [sys.executable, "-m", "medbft.cli", "run", str(ROOT / "scenarios" / "seven-nodes.yaml"),
         "--set", "duration=2s", "--set", "network.loss=0.02", "--trace", "--quiet",
         "--out", str(out)],
        check=True, env=env, cwd=ROOT, capture_output=True,
    )
    summary = json.loads((out / "summary.json").read_text())
    return summary, (out / "trace.jsonl").read_bytes()


@pytest.mark.slow
def test_identical_under_two_pythonhashseeds(tmp_path: Path) -> None:
    s1, t1 = _run_cli(tmp_path, "1")
    s2, t2 = _run_cli(tmp_path, "4242")
    assert digest_summary(s1) == digest_summary(s2)
    assert t1 == t2
    assert s1["messages"]["lost"] > 0, "the lossy network drew random numbers"
