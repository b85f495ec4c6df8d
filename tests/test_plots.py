"""Figures of a run: each is drawn, and what it plots is the data of the CSV or JSON file it
came from (the artists' data is inspected; no pixel-golden files)."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from medbft.cli import main
from medbft.metrics import percentile
from medbft.results import RunData, load_run
from medbft.timeline import PHASES, FaultRow, ViewRow
from medbft.views import run_figures as rf
from medbft.views.style import style

ROOT = Path(__file__).parent.parent
PRIMARY_CRASH = str(ROOT / "scenarios" / "primary-crash.yaml")
BASELINE = str(ROOT / "scenarios" / "baseline.yaml")


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """primary-crash, shortened: a crash window, one view change, a recovery."""
    out = tmp_path_factory.mktemp("crash")
    assert main(["run", PRIMARY_CRASH, "--out", str(out), "--quiet", "--trace",
                 "--set", "duration=7s", "--set", "drain=1s"]) == 0
    return out


@pytest.fixture(scope="module")
def crash(crash_dir: Path) -> RunData:
    return load_run(crash_dir)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _by_gid(fig: Figure, gid: str) -> Any:
    found = fig.findobj(lambda a: a.get_gid() == gid)
    assert found, f"no artist with gid {gid!r}"
    return found[0]


def _draw(fn: Any, data: RunData) -> Figure:
    with style():
        fig = fn(data)
    assert fig is not None
    return fig


def test_every_figure_is_written_as_png_and_svg(crash_dir: Path) -> None:
    plots = crash_dir / "plots"
    expected = set(rf.FIGURES) - {"cpu"}  # no CPU model in this scenario
    assert {p.stem for p in plots.glob("*.png")} == expected
    assert {p.stem for p in plots.glob("*.svg")} == expected
    assert all(p.stat().st_size > 1000 for p in plots.iterdir())


def test_every_axis_is_labelled(crash: RunData) -> None:
    for name, fn in rf.FIGURES.items():
        if name in ("network", "cpu"):
            continue
        fig = _draw(fn, crash)
        axes = [ax for ax in fig.axes if isinstance(ax, Axes)]
        assert axes[0].get_xlabel(), name
        assert any(ax.get_ylabel() for ax in axes) or name.startswith("messages"), name
        for ax in axes:
            assert ax.get_xlabel(), f"{name}: an x axis has no label"


def test_throughput_is_commits_per_window_from_requests_csv(crash: RunData,
                                                            crash_dir: Path) -> None:
    fig = _draw(rf.throughput, crash)
    stairs = _by_gid(fig, "throughput").get_data()
    values, edges = stairs.values, stairs.edges
    step = edges[1] - edges[0]
    commits = [float(r["commit_s"]) for r in _csv(crash_dir / "requests.csv") if r["commit_s"]]
    for i, rate in enumerate(values):
        last = i == len(values) - 1
        count = sum(1 for t in commits if edges[i] <= t and (t < edges[i + 1] or last))
        assert rate == pytest.approx(count / step)
    assert sum(values) * step == pytest.approx(len(commits))


def test_fault_window_is_shaded_and_view_change_marked(crash: RunData, crash_dir: Path) -> None:
    fault = _csv(crash_dir / "faults.csv")
    view = _csv(crash_dir / "views.csv")
    assert [(f["kind"], f["target"]) for f in fault] == [("crash", "hospital-1")]
    assert [v["view"] for v in view] == ["1"]
    fig = _draw(rf.throughput, crash)
    span = _by_gid(fig, "fault-0")
    assert span.get_x() == pytest.approx(float(fault[0]["start_s"]))
    assert span.get_x() + span.get_width() == pytest.approx(float(fault[0]["end_s"]))
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("hospital-1" in t and "3\u20136 s" in t for t in texts)  # crash 3 s, recover 6 s
    assert _by_gid(fig, "fault-tag-0").get_text() == "1"
    line = _by_gid(fig, "view-1")
    assert line.get_xdata()[0] == pytest.approx(float(view[0]["entered_s"]))
    started = _by_gid(fig, "view-change")
    assert list(started.get_xdata()) == pytest.approx([float(view[0]["view_change_s"])])


def test_latency_over_time_plots_each_committed_request(crash: RunData,
                                                        crash_dir: Path) -> None:
    fig = _draw(rf.latency_over_time, crash)
    offsets = _by_gid(fig, "latency").get_offsets()
    rows = [r for r in _csv(crash_dir / "requests.csv") if r["latency_ms"]]
    assert len(offsets) == len(rows)
    for (x, y), r in zip(offsets, rows, strict=True):
        assert x == pytest.approx(float(r["submit_s"]))
        assert y == pytest.approx(float(r["latency_ms"]))
    assert fig.axes[0].get_yscale() == "log"  # a 1.5 s stall next to 50 ms requests


def test_requests_never_committed_are_marked(crash: RunData) -> None:
    lost = [dataclasses.replace(r, commit_s=None, latency_ms=None) for r in crash.requests[-3:]]
    data = dataclasses.replace(crash, requests=crash.requests[:-3] + lost)
    fig = _draw(rf.latency_over_time, data)
    assert list(_by_gid(fig, "unsettled").get_xdata()) == [r.submit_s for r in lost]
    assert len(_by_gid(fig, "latency").get_offsets()) == len(crash.requests) - 3


def test_latency_cdf_and_percentiles_match_summary(crash: RunData, crash_dir: Path) -> None:
    fig = _draw(rf.latency_cdf, crash)
    xs, ys = _by_gid(fig, "cdf").get_data()
    lat = sorted(float(r["latency_ms"]) for r in _csv(crash_dir / "requests.csv")
                 if r["latency_ms"])
    assert list(xs[1:]) == pytest.approx(lat)
    assert ys[-1] == 1.0 and all(a <= b for a, b in itertools.pairwise(ys))
    summary = json.loads((crash_dir / "summary.json").read_text())
    for p in (50, 95, 99):
        x = _by_gid(fig, f"p{p}").get_xdata()[0]
        assert x == pytest.approx(summary["latency_ms"][f"p{p}"], abs=1e-5)
        assert x == pytest.approx(percentile(lat, p))


def test_phases_are_per_window_means_from_phases_csv(crash: RunData, crash_dir: Path) -> None:
    rows = _csv(crash_dir / "phases.csv")
    bounds = ("submit_s", "pre_prepare_s", "prepared_s", "committed_s", "reply_s")
    fig = _draw(rf.phases, crash)
    ax = fig.axes[0]
    containers: dict[str, Any] = {str(c.get_label()).split(" ")[0]: c
                                  for c in ax.containers}
    assert list(containers) == list(PHASES)
    step = containers["request"].patches[0].get_width() / 0.85
    for j, patch in enumerate(containers["request"].patches):
        start = patch.get_x() + patch.get_width() / 2 - step / 2
        in_bin = [r for r in rows if start - 1e-9 <= float(r["submit_s"]) < start + step - 1e-9]
        assert in_bin
        for k, name in enumerate(PHASES):
            mean = sum((float(r[bounds[k + 1]]) - float(r[bounds[k]])) * 1e3
                       for r in in_bin) / len(in_bin)
            assert containers[name].patches[j].get_height() == pytest.approx(mean)
        total = sum(containers[n].patches[j].get_height() for n in PHASES)
        assert total == pytest.approx(sum((float(r["reply_s"]) - float(r["submit_s"])) * 1e3
                                          for r in in_bin) / len(in_bin))


def test_phase_boundaries_of_the_normal_case(crash_dir: Path) -> None:
    """Constant 10 ms links: request 1 delay, prepare 2 (PRE-PREPARE, PREPARE), commit 1,
    reply 1 (docs/design.md#normal-case-latency)."""
    first = _csv(crash_dir / "phases.csv")[0]  # the first ordered request (a refused one
    start = float(first["submit_s"])           # is answered without phases)
    assert [round((float(first[c]) - start) * 1e3, 6) for c in
            ("submit_s", "pre_prepare_s", "prepared_s", "committed_s", "reply_s")] == [
        0, 10, 30, 40, 50]


def _bars(fig: Figure, gid: str) -> tuple[list[str], list[float]]:
    bars = [p for p in fig.findobj(lambda a: a.get_gid() == gid)
            if hasattr(p, "get_width") and not hasattr(p, "patches")]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]  # panels share y
    return labels, [p.get_width() for p in bars]


def test_messages_by_type_and_node_match_summary(crash: RunData, crash_dir: Path) -> None:
    msgs = json.loads((crash_dir / "summary.json").read_text())["messages"]
    fig = _draw(rf.messages_by_type, crash)
    labels, counts = _bars(fig, "type-messages")
    assert set(labels) == set(msgs["by_type"])
    assert counts == [msgs["by_type"][t] for t in labels]
    labels, kb = _bars(fig, "type-bytes")
    assert kb == pytest.approx([msgs["bytes_by_type"][t] / 1e3 for t in labels])
    fig = _draw(rf.messages_by_node, crash)
    labels, counts = _bars(fig, "node-messages")
    assert labels[:4] == ["hospital-1", "hospital-2", "pharmacy-1", "regulator-1"]
    assert counts == [msgs["by_node"][n] for n in labels]


def test_cpu_figure_only_with_the_cpu_model(tmp_path: Path, crash: RunData) -> None:
    assert rf.cpu(crash) is None
    assert main(["run", BASELINE, "--out", str(tmp_path), "--quiet", "--set", "cpu=default",
                 "--set", "duration=300ms", "--set", "drain=1s", "--no-plots"]) == 0
    util = json.loads((tmp_path / "summary.json").read_text())["cpu"]["utilisation"]
    fig = _draw(rf.cpu, load_run(tmp_path))
    labels, pct = _bars(fig, "cpu")
    assert labels == ["hospital-1", "hospital-2", "pharmacy-1", "regulator-1"]
    assert pct == pytest.approx([100 * util[n] for n in labels])


def test_network_marks_roles_crashed_and_byzantine(crash: RunData) -> None:
    data = RunData(crash.path, {**crash.summary, "byzantine": ["pharmacy-1"]}, crash.requests,
                   scenario=crash.scenario, views=[ViewRow(1, "hospital-2", 1.0, 1.1)],
                   faults=[FaultRow("crash", "hospital-1", 1.0, None, "hospital-1 crashed")])
    fig = _draw(rf.network, data)
    honest = _by_gid(fig, "nodes-o")
    byz = _by_gid(fig, "nodes-byzantine")
    assert len(honest.get_offsets()) == 3 and len(byz.get_offsets()) == 1
    edges = honest.get_edgecolors()
    crashed = [math.isclose(e[0], 0xD5 / 255, abs_tol=0.01) for e in edges]
    assert crashed == [True, False, False]  # hospital-1 (replica 0) is ringed
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"hospital", "pharmacy", "regulator", "client", "crashed", "Byzantine"} <= set(labels)


def test_plot_command_redraws_from_saved_files(crash_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "copy"
    out.mkdir()
    for f in crash_dir.iterdir():
        if f.is_file():
            (out / f.name).write_bytes(f.read_bytes())
    (out / "report.html").unlink()
    assert main(["plot", str(out), "--formats", "pdf"]) == 0
    assert "8 figure(s)" in capsys.readouterr().out  # the run is traced: the sequence chart
    assert {p.suffix for p in (out / "plots").iterdir()} == {".pdf"}
    assert (out / "plots" / "throughput.pdf").read_bytes().startswith(b"%PDF")
    assert (out / "report.html").exists()


def test_no_plots_skips_figures(tmp_path: Path) -> None:
    assert main(["run", BASELINE, "--out", str(tmp_path), "--quiet", "--no-plots",
                 "--set", "duration=200ms"]) == 0
    assert not (tmp_path / "plots").exists()
    assert "--no-plots" in (tmp_path / "report.html").read_text()


def test_plot_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert main(["plot", str(tmp_path)]) == 2
    assert "summary.json: missing" in capsys.readouterr().err
    assert main(["plot", str(tmp_path), "--formats", "gif"]) == 2


def test_figures_drawn_side_by_side_are_the_ones_drawn_in_turn(crash_dir: Path,
                                                              tmp_path: Path) -> None:
    """`draw_run` in forked workers writes the same files, byte for byte, and warns the same
    lines in the same order, as drawing the figures one after another here; a figure that
    cannot be drawn has its stale files removed either way."""
    out = tmp_path / "copy"
    out.mkdir()
    for f in crash_dir.iterdir():
        if f.is_file() and f.name not in ("views.csv", "phases.csv"):  # two warnings
            (out / f.name).write_bytes(f.read_bytes())
    data = load_run(out)
    results = {}
    for jobs in (1, 2):
        plots = tmp_path / f"plots-{jobs}"
        plots.mkdir()
        (plots / "phases.png").write_bytes(b"stale")
        warnings: list[str] = []
        written = rf.draw_run(data, plots, ("png", "svg"), warn=warnings.append, jobs=jobs)
        assert not (plots / "phases.png").exists()
        results[jobs] = ([p.name for p in written], warnings,
                         {p.name: p.read_bytes() for p in sorted(plots.iterdir())})
    names, warnings, files = results[1]
    assert "throughput.svg" in files
    assert "throughput.png" in names and "phases.png" not in names
    assert any("phases.csv" in w for w in warnings) and any("views.csv" in w for w in warnings)
    assert results[2] == results[1]
    # The workers really drew them (no silent fall-back to drawing here).
    outcomes = rf._draw_in_workers(data, tmp_path / "plots-w", ("png",), ["throughput"], 2)
    assert outcomes is not None and outcomes[0][0] == [tmp_path / "plots-w" / "throughput.png"]
    assert rf._figure_jobs(8) >= 1 and rf._figure_jobs(1) == 1
    import threading

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert rf._figure_jobs(8) == 1  # no fork while another thread runs
    finally:
        stop.set()
        other.join()


def test_run_draws_in_a_process_started_before_the_simulation(tmp_path: Path) -> None:
    """`medbft run` starts its drawing process before simulating (it loads matplotlib on the
    other core meanwhile): the command's own process never loads matplotlib, leaves no
    process behind, and its figures and report are the files an in-process redraw of the
    same folder writes."""
    import subprocess
    import sys

    from medbft.views.publish import redraw_run

    out = tmp_path / "run"
    probe = ("import sys, multiprocessing\nfrom medbft.cli import main\n"
             "code = main(sys.argv[1:])\n"
             "print('matplotlib' in sys.modules, len(multiprocessing.active_children()))\n"
             "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", probe, "run", BASELINE, "--quiet", "--out",
                           str(out), "--set", "duration=2s"], cwd=ROOT, text=True,
                          capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["False", "0"]
    drawn = {p.name: p.read_bytes() for p in (out / "plots").iterdir()}
    assert "throughput.png" in drawn and "network.svg" in drawn
    again = tmp_path / "again"
    again.mkdir()
    for f in out.iterdir():
        if f.is_file():
            (again / f.name).write_bytes(f.read_bytes())
    redraw_run(again, warn=lambda message: pytest.fail(message))
    assert {p.name: p.read_bytes() for p in (again / "plots").iterdir()} == drawn
    assert (again / "report.html").read_bytes() == (out / "report.html").read_bytes()


def test_the_drawing_process_falls_back_to_drawing_here(crash_dir: Path,
                                                         tmp_path: Path) -> None:
    """If the drawing process dies, or cannot start because another thread runs, the figures
    are drawn in this process instead, with the same warnings."""
    import os
    import signal
    import threading

    from medbft.views.publish import Drawer

    out = tmp_path / "copy"
    out.mkdir()
    for f in crash_dir.iterdir():
        if f.is_file() and f.name != "views.csv":
            (out / f.name).write_bytes(f.read_bytes())
    warnings: list[str] = []
    with Drawer() as drawer:
        pool = drawer._pool
        assert pool is not None or threading.active_count() > 1
        if pool is not None:  # none while another thread of this test process runs
            list(pool.map(int, [0]))  # started
            for pid in list(pool._processes):  # type: ignore[attr-defined]
                os.kill(pid, signal.SIGKILL)
        written = drawer.redraw(out, warn=warnings.append)
    assert drawer._pool is None
    assert (out / "plots" / "throughput.png") in written
    assert any("views.csv" in w for w in warnings)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with Drawer() as drawer:
            assert drawer._pool is None
    finally:
        stop.set()
        other.join()
