"""`medbft sweep`: grid x seeds in parallel, results.csv with every parameter and metric,
resume, figures whose data is the CSV's, and the same results on a Dask cluster."""

from __future__ import annotations

import json
import math
import os
import statistics
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from medbft.cli import main
from medbft.scenario import load_scenario
from medbft.sweep import (
    flatten_metrics,
    load_sweep,
    mean_ci95,
    read_results,
    t_quantile_975,
)
from medbft.views.style import style
from medbft.views.sweep_figures import axis_values, metric_figure, series

ROOT = Path(__file__).parent.parent
BASELINE = ROOT / "scenarios" / "baseline.yaml"


def _sweep_file(tmp_path: Path, seeds: int | list[int] = 2, **extra: object) -> Path:
    spec = {
        "name": "tiny",
        "base": str(BASELINE),
        "set": {"duration": "300ms", "drain": "1s",
                "network.latency": {"dist": "uniform", "low": "5ms", "high": "15ms"}},
        "grid": {"nodes": [4, 7], "protocol.batch_size": [1, 4]},
        "seeds": seeds,
        **extra,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sweep run once on two local processes: 4 points x 2 seeds."""
    base = tmp_path_factory.mktemp("sweep")
    out = base / "out"
    assert main(["sweep", str(_sweep_file(base)), "--jobs", "2", "--out", str(out)]) == 0
    return out


def test_results_csv_has_a_row_per_run_with_parameters_and_metrics(swept: Path) -> None:
    rows = read_results(swept / "results.csv")
    assert len(rows) == 8
    assert [(r["nodes"], r["protocol.batch_size"], r["seed"]) for r in rows[:3]] == [
        (4, 1, 1), (4, 1, 2), (4, 4, 1)]
    for column in ("scenario_hash", "version", "n", "f", "throughput_tps", "latency_ms.p50",
                   "latency_ms.p99", "stall_ms", "phase_ms.prepare", "messages.total",
                   "messages.per_committed_request", "messages.by_type.PREPARE",
                   "view_changes", "safety.ok", "liveness.ok"):
        assert column in rows[0], column
    assert {r["n"] for r in rows} == {4, 7}
    assert all(r["safety.ok"] is True for r in rows)
    assert "wall_time_s" not in rows[0]  # results.csv is reproducible


def test_csv_round_trips_the_stored_runs(swept: Path) -> None:
    rows = read_results(swept / "results.csv")
    stored = {(r["scenario_hash"], r["seed"]): r for r in
              (json.loads(p.read_text()) for p in (swept / "runs").glob("*.json"))}
    assert len(stored) == 8
    for row in rows:
        record = stored[(row["scenario_hash"], row["seed"])]
        assert record["summary"]["seed"] == row["seed"]
        for key, value in record["metrics"].items():
            assert row[key] == (pytest.approx(value) if isinstance(value, float) else value), key
        assert flatten_metrics(record["summary"], {
            "stall_ms": record["metrics"]["stall_ms"],
            "phase_ms": {k[9:]: v for k, v in record["metrics"].items()
                         if k.startswith("phase_ms.")}}) == record["metrics"]


def test_the_scenario_of_each_row_is_the_grid_point(swept: Path) -> None:
    from medbft.scenario import scenario_hash

    row = read_results(swept / "results.csv")[-1]
    scenario = load_scenario(BASELINE, overrides=[
        "duration=300ms", "drain=1s", "network.latency={dist: uniform, low: 5ms, high: 15ms}",
        "nodes=7", "protocol.batch_size=4"])
    assert row["scenario_hash"] == scenario_hash(scenario)
    assert scenario.n == 7 and scenario.node_ids[:3] == ("hospital-1", "pharmacy-1",
                                                          "regulator-1")


def test_a_rerun_does_no_work_and_adding_a_seed_runs_only_it(
        swept: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in (swept / "runs").iterdir()}
    csv_before = (swept / "results.csv").read_bytes()
    sweep = _sweep_file(tmp_path)
    assert main(["sweep", str(sweep), "--jobs", "1", "--out", str(swept), "--no-plots"]) == 0
    assert "0 run(s) done, 8 reused" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (swept / "runs").iterdir()} == before
    assert (swept / "results.csv").read_bytes() == csv_before
    out = tmp_path / "more"
    for f in (swept / "runs").iterdir():
        (out / "runs").mkdir(parents=True, exist_ok=True)
        (out / "runs" / f.name).write_bytes(f.read_bytes())
    more = _sweep_file(tmp_path, seeds=[1, 2, 3])
    assert main(["sweep", str(more), "--jobs", "1", "--out", str(out), "--no-plots"]) == 0
    assert "4 run(s) done, 8 reused" in capsys.readouterr().out
    assert len(read_results(out / "results.csv")) == 12


def test_confidence_interval() -> None:
    mean, half = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert mean_ci95([5.0]) == (5.0, 0.0)
    assert t_quantile_975(1) == 12.706 and t_quantile_975(60) == pytest.approx(2.000, abs=2e-3)
    values = [3.0, 4.5, 4.0, 6.0]
    assert mean_ci95(values)[1] == pytest.approx(
        t_quantile_975(3) * statistics.stdev(values) / 2)


def test_figures_plot_the_mean_and_ci_of_the_csv(swept: Path) -> None:
    names = {p.stem for p in (swept / "plots").glob("*.png")}
    assert "throughput_tps_vs_nodes_by_protocol.batch_size" in names
    assert "latency_ms.p99_vs_protocol.batch_size_by_nodes" in names
    assert len(names) == 8
    rows = read_results(swept / "results.csv")
    with style():
        fig = metric_figure(rows, "nodes", "latency_ms.p50", "protocol.batch_size")
    assert fig is not None
    containers = fig.axes[0].containers
    assert len(containers) == 2  # one line per batch size
    container: Any
    for container, batch in zip(containers, (1, 4), strict=True):
        line = container.lines[0]
        assert container.get_label() == f"batch size = {batch}"
        for x, y in zip(*line.get_data(), strict=True):
            values = [r["latency_ms.p50"] for r in rows
                      if r["nodes"] == x and r["protocol.batch_size"] == batch]
            assert len(values) == 2 and y == pytest.approx(statistics.mean(values))
        segments = container.lines[2][0].get_segments()
        for (x, _), seg in zip(zip(*line.get_data(), strict=True), segments, strict=True):
            values = [r["latency_ms.p50"] for r in rows
                      if r["nodes"] == x and r["protocol.batch_size"] == batch]
            assert (seg[1][1] - seg[0][1]) / 2 == pytest.approx(mean_ci95(values)[1])
    assert fig.axes[0].get_xlabel() == "n (replicas)"


def test_axis_values_turn_durations_and_node_counts_into_numbers() -> None:
    assert axis_values("network.latency", ["1ms", "10ms", "1s"])[:2] == (
        [1.0, 10.0, 1000.0], "link delay (ms)")
    assert axis_values("nodes", ['{"hospital": 2, "pharmacy": 1, "regulator": 1}', 7])[0] == [
        4.0, 7.0]
    assert axis_values("workload.mix", ["a", "b"])[2] == ["a", "b"]
    assert series([{"x": 1, "y": None}], "x", "y", None) == {}


def test_bad_sweep_files_exit_2_naming_the_field(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        ({"grid": {"nodes": [4]}}, "base"),
        ({"base": str(BASELINE), "grid": {"nodes": 4}}, "grid.nodes"),
        ({"base": str(BASELINE), "grid": {"nodes": [4]}, "seeds": 0}, "seeds"),
        ({"base": str(BASELINE), "grid": {"nodes": [4]}, "colour": 1}, "colour"),
        ({"base": str(BASELINE), "grid": {"nodes": [4]}, "plots": [{"x": "n", "y": "a"}]},
         "plots[0].x"),
        ({"base": str(BASELINE), "grid": {"nodes": [2]}}, "nodes"),
    ]
    for spec, field in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(spec))
        assert main(["sweep", str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and field in err, (field, err)
    assert main(["sweep", str(tmp_path / "none.yaml")]) == 2
    assert main(["sweep", str(path), "--jobs", "0"]) == 2


def test_seeds_and_default_plots() -> None:
    sweep = load_sweep(ROOT / "scenarios" / "sweeps" / "scale.yaml")
    assert sweep.seeds == [1, 2, 3] and list(sweep.grid) == ["nodes", "protocol.batch_size"]
    assert {"x": "nodes", "y": "throughput_tps", "lines": "protocol.batch_size"} in (
        sweep.spec()["plots"])


@pytest.mark.parametrize("name", ["scale", "batching", "latency", "loss", "view-change"])
def test_shipped_sweeps_are_valid(name: str) -> None:
    from medbft.sweep import expand

    sweep = load_sweep(ROOT / "scenarios" / "sweeps" / f"{name}.yaml")
    points = expand(sweep)
    assert len({p.scenario_hash for p in points}) == len(points)
    assert len(sweep.seeds) >= 3


@pytest.mark.real  # a Dask scheduler and worker on loopback
def test_dask_cluster_gives_the_same_results_csv(swept: Path, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "dask"
    with warnings.catch_warnings():
        # Dask warns about its own internals (ports, event loops); they are not ours.
        warnings.simplefilter("ignore")
        with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                      host="127.0.0.1", protocol="tcp",
                                      dashboard_address=None) as cluster:
            assert main(["sweep", str(_sweep_file(tmp_path)), "--out", str(out),
                         "--scheduler", cluster.scheduler_address, "--no-plots"]) == 0
    assert (out / "results.csv").read_bytes() == (swept / "results.csv").read_bytes()
    assert sorted(os.listdir(out / "runs")) == sorted(os.listdir(swept / "runs"))


def test_unreachable_scheduler_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr("medbft.sweep.execute.DASK_CONNECT_TIMEOUT", "1s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["sweep", str(_sweep_file(tmp_path)), "--out", str(tmp_path / "o"),
                     "--scheduler", "tcp://127.0.0.1:9", "--no-plots"])
    assert code == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
