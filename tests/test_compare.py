"""`medbft compare`: a primary crash with a 1 s and a 4 s view-change timeout, side by side.

Why this exists: the issue's acceptance test for the comparison. The longer timeout must
show a longer stall, in compare.csv and on a page that needs nothing beside itself; several
seeds of one setting must form one group with a confidence interval.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from medbft.cli import main
from medbft.results import load_run
from medbft.views.compare import COLUMNS, HEADLINE, group_runs

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = str(ROOT / "scenarios" / "primary-crash.yaml")


def _run(out: Path, timeout: str, seed: int = 7) -> Path:
    code = main(["run", SCENARIO, "--set", f"protocol.view_change_timeout={timeout}",
                 "--set", "duration=8s", "--seed", str(seed), "--quiet", "--no-plots",
                 "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("compare")
    return _run(base / "vct-1s", "1s"), _run(base / "vct-4s", "4s")


def test_compare_shows_the_longer_stall_of_the_longer_timeout(
        runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fast, slow = runs
    out = tmp_path / "cmp"
    assert main(["compare", str(fast), str(slow), "--out", str(out), "--formats", "png"]) == 0
    printed = capsys.readouterr().out
    assert "vct-1s" in printed and "vct-4s" in printed

    with (out / "compare.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == ["vct-1s", "vct-4s"]
    assert set(COLUMNS) <= set(rows[0])
    for column, *_ in HEADLINE:
        assert all(r[column] != "" for r in rows), column
    stall = {r["label"]: float(r["stall_ms"]) for r in rows}
    assert stall["vct-4s"] > stall["vct-1s"] + 500

    page = (out / "compare.html").read_text()
    assert "vct-1s" in page and "vct-4s" in page
    for value in stall.values():
        assert f"{value:.1f}" in page
    # self-contained: every src and href is a data URI or an anchor
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), refs
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert page.count("<figure") == 3
    assert (out / "plots" / "compare_stall.png").exists()


def test_seeds_of_one_setting_form_a_group_with_a_confidence_interval(
        runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fast, _ = runs
    other = _run(tmp_path / "vct-1s-seed8", "1s", seed=8)
    groups = group_runs([(load_run(fast), None), (load_run(other), None)])
    assert len(groups) == 1 and len(groups[0].runs) == 2
    assert groups[0].label == "vct-1s"
    out = tmp_path / "cmp"
    assert main(["compare", f"one={fast}", f"two={other}", "--out", str(out)]) == 0
    with (out / "compare.csv").open(newline="") as fh:
        assert [r["label"] for r in csv.DictReader(fh)] == ["one", "two"]
    assert main(["compare", f"same={fast}", f"same={other}", "--out", str(out)]) == 0
    page = (out / "compare.html").read_text()
    assert "±" in page and "95% confidence interval" in page


def test_compare_refuses_bad_input(runs: tuple[Path, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    fast, _ = runs
    assert main(["compare", str(fast), "--out", str(tmp_path / "c")]) == 2
    assert main(["compare", str(fast), str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "c")]) == 2
    assert main(["compare", str(fast), str(fast), "--out", str(fast)]) == 2
    err = capsys.readouterr().err
    assert "at least two" in err and "not a directory" in err and "run folder" in err
