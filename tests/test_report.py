"""report.html is one self-contained page with what was run, the verdicts, the summary and
every figure; the results files round-trip (what is read back is what the run measured)."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from medbft.cli import main
from medbft.results import load_run, read_requests
from medbft.scenario import load_scenario, parse_scenario, scenario_hash
from medbft.summary import code_version
from medbft.timeline import phase_rows
from medbft.views.report import render_report
from sim.run import run_scenario

ROOT = Path(__file__).parent.parent
SCENARIO = str(ROOT / "scenarios" / "primary-crash.yaml")
OVERRIDES = ["duration=7s", "drain=1s"]


class _Refs(HTMLParser):
    """Collects every URL the page would load and the ids of its figures."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.figures: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("src", "href"):
            if values.get(key):
                self.urls.append(str(values[key]))
        if tag == "figure":
            self.figures.append(str(values.get("id")))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    args = ["run", SCENARIO, "--out", str(out), "--quiet"]
    for item in OVERRIDES:
        args += ["--set", item]
    assert main(args) == 0
    return out


def test_report_is_self_contained_with_every_figure(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()
    refs = _Refs()
    refs.feed(page)
    loads = [u for u in refs.urls if not u.startswith("#")]  # in-page links load nothing
    assert loads and all(u.startswith("data:image/png;base64,") for u in loads)
    pngs = sorted(p.stem for p in (run_dir / "plots").glob("*.png"))
    assert sorted(f.removeprefix("fig-") for f in refs.figures) == pngs
    first = loads[0].split(",", 1)[1]
    assert base64.b64decode(first).startswith(b"\x89PNG")
    assert "<link" not in page and "<script" not in page


def test_report_names_what_was_run_and_the_verdicts(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["scenario_hash"] in page
    assert f"medbft {code_version()}" in page
    assert "medbft run " in page and "--seed 7" in page and "--set duration=7s" in page
    assert "safety (agreement" in page and 'class="ok">held' in page
    assert "scenario expectations" in page and 'class="ok">met' in page
    for phase in ("request", "prepare", "commit", "reply"):
        assert f"<td>{phase}</td>" in page
    assert "<td>hospital-1 crashed</td>" in page and "<td>3.000</td>" in page  # fault window
    assert "<td>hospital-2</td>" in page  # primary of view 1
    assert "view_change_timeout: 500ms" in page  # the scenario text, as run


def test_saved_scenario_is_the_one_that_ran(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    saved = parse_scenario(yaml.safe_load((run_dir / "scenario.yaml").read_text()))
    assert scenario_hash(saved) == summary["scenario_hash"]
    assert saved == load_scenario(SCENARIO, overrides=OVERRIDES)


def test_failed_verdicts_are_shown(run_dir: Path) -> None:
    data = load_run(run_dir)
    data.summary = {**data.summary,
                    "safety": {"ok": False, "violations": [{"seq": 3, "kind": "agreement"}]},
                    "expect": {"ok": False, "failed": [{"name": "liveness", "expected": True,
                                                        "measured": False}]}}
    page = render_report(data, with_figures=False)
    assert 'class="bad">VIOLATED (1)' in page and 'class="bad">FAILED' in page
    assert "expected liveness = True, measured False" in page
    assert "&quot;agreement&quot;" in page  # escaped, not raw


def test_csv_and_json_round_trip(run_dir: Path) -> None:
    """What is read back from summary.json, requests.csv and phases.csv is what the run
    measured (same seed, same scenario: the run is deterministic)."""
    scenario = load_scenario(SCENARIO, overrides=OVERRIDES)
    result = run_scenario(scenario, seed=7)
    saved = json.loads((run_dir / "summary.json").read_text())
    assert {k: v for k, v in saved.items() if k != "wall_time_s"} == {
        k: v for k, v in json.loads(json.dumps(result.summary)).items() if k != "wall_time_s"}
    rows = read_requests(run_dir / "requests.csv")
    assert len(rows) == len(result.requests)
    for row, rec in zip(rows, result.requests, strict=True):
        assert (row.client, row.session, row.timestamp) == (rec.client, rec.session,
                                                            rec.timestamp)
        assert row.submit_s == pytest.approx(rec.submit_ns / 1e9, abs=1e-9)
        assert rec.commit_ns is not None
        assert row.commit_s == pytest.approx(rec.commit_ns / 1e9, abs=1e-9)
    loaded = load_run(run_dir).phases
    assert loaded is not None
    expected = phase_rows(result.requests, result.events, scenario.n)
    assert [(p.request, p.view, p.seq) for p in loaded] == [
        (p.request, p.view, p.seq) for p in expected]
    for a, b in zip(loaded, expected, strict=True):
        assert a.durations_ms() == pytest.approx(b.durations_ms(), abs=1e-6)
