"""`medbft replay DIR` and the replay.html that `medbft run --trace` writes
(medbft/views/replay.py): one self-contained page with the run's trace inline; and the
stepwise driver (sim/stepper.py) that the studio runs, which must record exactly what
`run_scenario` records. The page's behaviour in a browser: tests/test_studio_browser.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medbft.cli import main
from medbft.scenario import load_scenario
from medbft.views.replay import replay_data
from sim.run import digest_summary, run_scenario
from sim.stepper import Stepper

ROOT = Path(__file__).parent.parent
BASELINE = str(ROOT / "scenarios" / "baseline.yaml")
EQUIVOCATORS = str(ROOT / "scenarios" / "f-plus-one-equivocators.yaml")


def _run(tmp_path: Path, scenario: str, *sets: str, trace: bool = True) -> Path:
    out = tmp_path / "run"
    args = ["run", scenario, "--out", str(out), "--no-plots", "--quiet"]
    args += ["--trace"] if trace else []
    for item in sets:
        args += ["--set", item]
    assert main(args) in (0, 1)
    return out


def _embedded(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert found, "the data element is missing"
    return dict(json.loads(found.group(1)))


def test_a_traced_run_gets_a_self_contained_replay_that_the_report_links(
        tmp_path: Path) -> None:
    out = _run(tmp_path, BASELINE, "duration=300ms")
    page = (out / "replay.html").read_text()
    data = _embedded(page)
    assert data["mode"] == "replay"
    rows = (out / "trace.jsonl").read_text().splitlines()
    assert len(data["rows"]) == len(rows), "every trace row is embedded"
    assert data["meta"]["nodes"][0] == {"id": "hospital-1", "role": "hospital"}
    assert data["meta"]["clients"] == ["client-1"]
    assert (data["meta"]["n"], data["meta"]["f"], data["meta"]["q"]) == (4, 1, 3)
    assert data["narration"][0][1] == "client-1 -> hospital-1: REQUEST (arrives at 10 ms)"
    assert "PRE-PREPARE" in data["notes"]
    # nothing is fetched: no external script, style, image or link
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page
    assert not re.search(r"""url\(\s*["']?(https?:|//|data:)""", page)
    assert page.count("<script") == 2  # the data and the script, both inline
    assert 'href="replay.html"' in (out / "report.html").read_text()
    assert "replay.html" in json.loads((out / "run.json").read_text())["files"]


def test_a_run_without_trace_has_no_replay_and_replay_says_why(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(tmp_path, BASELINE, "duration=200ms", trace=False)
    assert not (out / "replay.html").exists()
    assert 'href="replay.html"' not in (out / "report.html").read_text()
    capsys.readouterr()
    assert main(["replay", str(out)]) == 2
    err = capsys.readouterr().err
    assert "trace.jsonl: no trace" in err and "--trace" in err and "Traceback" not in err
    assert main(["replay", str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_replay_writes_where_asked(tmp_path: Path) -> None:
    out = _run(tmp_path, BASELINE, "duration=200ms")
    (out / "replay.html").unlink()
    target = tmp_path / "page.html"
    assert main(["replay", str(out), "--out", str(target)]) == 0
    assert _embedded(target.read_text())["meta"]["name"] == "baseline"
    assert not (out / "replay.html").exists()


def test_a_damaged_trace_costs_the_replay_only(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(tmp_path, BASELINE, "duration=200ms")
    (out / "trace.jsonl").write_text('{"t": 0, "event": "send"\n')
    capsys.readouterr()
    assert main(["plot", str(out), "--formats", "png"]) == 0
    err = capsys.readouterr().err
    assert "replay.html not written" in err and "trace.jsonl" in err
    assert not (out / "replay.html").exists()
    assert main(["replay", str(out)]) == 2


def test_a_trace_without_arrival_times_is_refused(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(tmp_path, BASELINE, "duration=200ms")
    rows = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("arrive", None)
        row.pop("lost", None)
    (out / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert main(["replay", str(out)]) == 2
    assert "older medbft" in capsys.readouterr().err


def test_the_fork_is_in_the_replay_data(tmp_path: Path) -> None:
    """f-plus-one-equivocators: the two Byzantine replicas are named, and the trace shows two
    honest replicas executing different digests at one sequence number (the page finds the
    fork the same way; test_studio_browser.py checks it shows)."""
    out = _run(tmp_path, EQUIVOCATORS, "duration=2200ms")
    data = replay_data(out)
    assert data["meta"]["byzantine"] == ["hospital-1", "pharmacy-1"]
    assert data["meta"]["safety_ok"] is False
    honest = {"hospital-2", "regulator-1"}
    executed: dict[int, dict[str, str]] = {}
    for row in data["rows"]:
        if row["event"] == "execute" and row["node"] in honest:
            executed.setdefault(row["seq"], {})[row["node"]] = row["digest"]
    assert any(len(set(d.values())) == 2 for d in executed.values())


@pytest.mark.parametrize("name", ["baseline", "primary-crash"])
def test_a_stepped_run_records_exactly_what_one_run_records(name: str) -> None:
    """The studio's driver: advancing in slices, by message, by protocol event, gives the
    trace, the requests and the summary digest of run_scenario."""
    scenario = load_scenario(ROOT / "scenarios" / f"{name}.yaml",
                             ["duration=4s"] if name == "primary-crash" else ["duration=1s"])
    reference = run_scenario(scenario, trace=True)
    stepper = Stepper(scenario)
    turn = 0
    while not stepper.done:
        turn += 1
        if turn % 3 == 0:
            stepper.advance_to(stepper.now_ns + 7_000_000)
        elif turn % 3 == 1:
            stepper.step(lambda row: row["event"] == "send")
        else:
            stepper.step(lambda row: row["event"] in ("prepared", "view-change"))
    result = stepper.finish()
    assert turn > 10
    assert result.trace == reference.trace
    assert [(r.key, r.commit_ns, r.seq) for r in result.requests] == [
        (r.key, r.commit_ns, r.seq) for r in reference.requests]
    assert digest_summary(result.summary) == digest_summary(
        {**reference.summary, "wall_time_s": 0.0})
