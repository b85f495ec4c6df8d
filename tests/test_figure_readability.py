"""The figures stay readable where they used to fail (issue part 5): overlapping fault windows
each get their own colour and a label that cannot leave the axes, a constant latency still
shows on the CDF, recoveries and state transfers are marked, a real cluster's folder (fault
windows only in summary.json) is shaded, and report.html is laid out for wide screens with
figures that open full size, no "None s" and rounded messages per request."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from medbft.cli import main
from medbft.cli.tables import per_request
from medbft.results import RunData, load_run
from medbft.timeline import FaultRow
from medbft.views import run_figures as rf
from medbft.views.report import render_report
from medbft.views.style import style

ROOT = Path(__file__).parent.parent
PRIMARY_CRASH = str(ROOT / "scenarios" / "primary-crash.yaml")
BASELINE = str(ROOT / "scenarios" / "baseline.yaml")


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """primary-crash, shortened: hospital-1 crashes at 3 s, recovers at 6 s, fetches state."""
    out = tmp_path_factory.mktemp("crash")
    assert main(["run", PRIMARY_CRASH, "--out", str(out), "--quiet",
                 "--set", "duration=7s", "--set", "drain=1s"]) == 0
    return out


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("baseline")
    assert main(["run", BASELINE, "--out", str(out), "--quiet", "--set", "duration=2s"]) == 0
    return out


def _draw(fn: Any, data: RunData) -> Figure:
    with style():
        fig = fn(data)
        assert fig is not None
        fig.canvas.draw()  # lay the figure out: text extents are final
    return fig


def _gid(fig: Figure, gid: str) -> list[Any]:
    return fig.findobj(lambda a: a.get_gid() == gid)


def _legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


# -- fault windows ------------------------------------------------------------------------------


OVERLAPPING = [
    FaultRow("crash", "hospital-1", 1.0, 5.0, "hospital-1 crashed"),
    FaultRow("crash", "pharmacy-1", 2.0, 6.0, "pharmacy-1 crashed (SIGKILL)"),
    FaultRow("crash", "regulator-1", 2.5, None, "regulator-1 crashed and never came back"),
    FaultRow("partition", "hospital-2", 7.6, 7.9,
             "hospital-2 cut off from every other replica, a long label near the end"),
]


@pytest.mark.parametrize("name", ["throughput", "latency_over_time"])
def test_overlapping_windows_get_own_colours_and_labels_inside(crash_dir: Path,
                                                               name: str) -> None:
    data = dataclasses.replace(load_run(crash_dir), faults=OVERLAPPING)
    fig = _draw(rf.FIGURES[name], data)
    ax = fig.axes[0]
    spans = [_gid(fig, f"fault-{i}")[0] for i in range(len(OVERLAPPING))]
    colours = [to_rgb(s.get_facecolor()) for s in spans]
    assert len(set(colours)) == len(OVERLAPPING), colours  # three crash windows: 3 colours
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box = ax.get_window_extent(renderer)
    for text in ax.texts:
        if not text.get_text().strip() or text.get_text().startswith(" v"):
            continue  # the view labels sit above the axes on purpose
        extent = text.get_window_extent(renderer)
        assert box.x0 - 0.5 <= extent.x0 and extent.x1 <= box.x1 + 0.5, text.get_text()
        assert box.y0 - 0.5 <= extent.y0 and extent.y1 <= box.y1 + 0.5, text.get_text()
    page = fig.bbox
    for legend in fig.legends:  # the legend, long labels and all, stays on the figure
        extent = legend.get_window_extent(renderer)
        assert page.x0 - 0.5 <= extent.x0 and extent.x1 <= page.x1 + 0.5
        assert page.y0 - 0.5 <= extent.y0 and extent.y1 <= page.y1 + 0.5
    labels = [t.replace("\n   ", " ") for t in _legend_texts(fig)]  # wrapped lines
    for w in OVERLAPPING:  # every window is named, in the legend, with its interval
        assert any(w.label in t for t in labels), w.label
    assert any("pharmacy-1 crashed (SIGKILL), 2\u20136 s" in t for t in labels)
    assert any("from 2.5 s" in t for t in labels)


# -- latency CDF -------------------------------------------------------------------------------


def _assert_jump_visible(fig: Figure, value: float, share_text: str) -> None:
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    assert low < value < high  # the jump is inside the axes, not along an edge
    atom = _gid(fig, f"atom-{value:g}")
    assert atom, "the value holding the requests is labelled"
    assert f"{value:g} ms" in atom[0].get_text() and share_text in atom[0].get_text()
    xs, ys = _gid(fig, "cdf")[0].get_data()
    jump = [y for x, y in zip(xs, ys, strict=True) if x == pytest.approx(value)]
    assert min(jump) < 0.05 and max(jump) == pytest.approx(1.0)  # a step from ~0 to 1
    assert _gid(fig, "support"), "the support of the distribution is shaded"
    assert any("p50 = p95 = p99 = 50 ms" in t for t in _legend_texts(fig))


def test_cdf_of_constant_links_shows_the_jump(baseline_dir: Path) -> None:
    """baseline: constant 10 ms links, every request (but a first read) takes 50 ms."""
    fig = _draw(rf.latency_cdf, load_run(baseline_dir))
    _assert_jump_visible(fig, 50.0, "%")


def test_cdf_of_one_value_only(baseline_dir: Path) -> None:
    data = load_run(baseline_dir)
    same = [dataclasses.replace(r, latency_ms=50.0) for r in data.requests
            if r.latency_ms is not None]
    fig = _draw(rf.latency_cdf, dataclasses.replace(data, requests=same))
    _assert_jump_visible(fig, 50.0, "(100 %)")
    assert any("support: 50 ms only" in t for t in _legend_texts(fig))


# -- recovery and state transfer ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["throughput", "latency_over_time"])
def test_recovery_and_state_transfer_are_marked(crash_dir: Path, name: str) -> None:
    data = load_run(crash_dir)
    assert data.events is not None
    transfers = [t for t, node, ev in data.events if ev == "state-transfer"]
    assert [node for _, node, ev in data.events if ev == "state-transfer"] == ["hospital-1"]
    fig = _draw(rf.FIGURES[name], data)
    assert list(_gid(fig, "recover")[0].get_xdata()) == pytest.approx([6.0])
    assert list(_gid(fig, "state-transfer")[0].get_xdata()) == pytest.approx(transfers)
    assert 6.0 <= transfers[0] < 6.5
    labels = _legend_texts(fig)
    assert "replica recovered (1)" in labels and "state transfer installed (1)" in labels


# -- a real cluster's folder -------------------------------------------------------------------


@pytest.fixture()
def real_dir(crash_dir: Path, tmp_path: Path) -> Path:
    """What `medbft cluster --scenario` leaves: summary.json (mode real, no virtual time,
    the crash windows in `faults`) and requests.csv, nothing else."""
    out = tmp_path / "real"
    out.mkdir()
    for name in ("summary.json", "requests.csv"):
        shutil.copy(crash_dir / name, out / name)
    summary = json.loads((out / "summary.json").read_text())
    summary.update(mode="real", sim_time_s=None, wall_time_s=8.1234)
    summary["faults"] = [{"kind": "crash", "target": "hospital-1", "start_s": 3.0021,
                          "end_s": 6.0113, "label": "hospital-1 crashed (SIGKILL)"}]
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def test_real_run_figures_shade_the_fault_windows(real_dir: Path) -> None:
    data = load_run(real_dir)
    assert data.faults is None and "faults.csv" in data.missing
    for name in ("throughput", "latency_over_time"):
        fig = _draw(rf.FIGURES[name], data)
        span = _gid(fig, "fault-0")[0]
        assert span.get_x() == pytest.approx(3.0021)
        assert span.get_x() + span.get_width() == pytest.approx(6.0113)
        assert any("hospital-1 crashed (SIGKILL)" in t for t in _legend_texts(fig))
        assert list(_gid(fig, "recover")[0].get_xdata()) == pytest.approx([6.0113])
    warnings: list[str] = []
    rf.draw_run(data, real_dir / "plots", ("png",), warn=warnings.append)
    assert (real_dir / "plots" / "throughput.png").exists()
    assert not [w for w in warnings if "faults.csv" in w or "events.csv" in w], warnings


def test_real_run_report_has_wall_time_only(real_dir: Path) -> None:
    page = render_report(load_run(real_dir), with_figures=False)
    assert "None s" not in page and "None" not in re.sub(r"<pre>.*?</pre>", "", page, flags=re.S)
    assert "<td>wall time</td>" in page and "8.1234 s" in page
    assert "simulated / wall time" not in page
    assert "<td>3.002</td>" in page and "<td>6.011</td>" in page  # from summary.json


# -- report.html -------------------------------------------------------------------------------


def test_report_figures_open_full_size_in_a_wide_grid(crash_dir: Path) -> None:
    page = (crash_dir / "report.html").read_text()
    figures = re.findall(r'<figure id="fig-([\w-]+)"><a href="#fig-\1"[^>]*><img ', page)
    assert sorted(figures) == sorted(p.stem for p in (crash_dir / "plots").glob("*.png"))
    css = page.split("<style>", 1)[1].split("</style>", 1)[0]
    assert re.search(r"\.figs\{display:grid;grid-template-columns:repeat\(auto-fill", css)
    assert "figure:target img{position:fixed" in css  # opened: over the page, full size
    assert re.search(r"body\{[^}]*max-width:(\d+)rem", css)
    assert int(re.search(r"body\{[^}]*max-width:(\d+)rem", css).group(1)) >= 90  # type: ignore[union-attr]
    assert '<div class="figs">' in page and '<div class="cols">' in page


def test_report_rounds_messages_per_request(crash_dir: Path) -> None:
    summary = json.loads((crash_dir / "summary.json").read_text())
    value = summary["messages"]["per_committed_request"]
    assert value != round(value, 1)  # six decimals in summary.json
    page = (crash_dir / "report.html").read_text()
    cell = re.search(r"messages per committed request</td><td><span class=\"num\">([^<]*)<",
                     page)
    assert cell and cell.group(1) == per_request(value)
    assert "None s" not in page and "simulated / wall time" in page


def test_compare_reads_a_real_runs_windows_and_lays_figures_out_alike(
        crash_dir: Path, real_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(crash_dir), str(real_dir), "--out", str(out),
                 "--formats", "png"]) == 0
    err = capsys.readouterr().err
    assert "faults.csv" not in err, err  # the real run's windows are in its summary.json
    page = (out / "compare.html").read_text()
    assert "faults.csv missing" not in page and "crash hospital-1 3.002" in page
    assert '<div class="figs">' in page
    assert '<a href="#fig-compare_throughput" title="open full size"><img ' in page
