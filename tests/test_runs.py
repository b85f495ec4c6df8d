"""Runs people can trust and compare: a run folder holds one run's files, bad --out and names
fail before simulating, results/index.csv lists the runs, --json for scripts, --version, and
the small points of the issue (seed range, unknown parties, sweep of a scenario, verdict
wording, rounding, real-run table, keys init order)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

import medbft.cli.fuzz as fuzz_cmd
import medbft.fuzz as fuzz
from medbft.cli import main
from medbft.cli.tables import summary_table
from medbft.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).parent.parent
BASELINE = str(ROOT / "scenarios" / "baseline.yaml")
SHORT = ["--set", "duration=300ms", "--set", "drain=1s"]


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# -- 1. a run folder holds the files of one run -----------------------------------------------


def test_a_second_run_without_trace_leaves_no_trace_or_figure_of_the_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["run", BASELINE, "--out", str(out), "--trace", "--quiet", *SHORT]) == 0
    first = files(out)
    assert "trace.jsonl" in first and "plots/sequence.png" in first
    assert main(["run", BASELINE, "--out", str(out), "--quiet", "--seed", "2",
                 "--set", "nodes=7", *SHORT]) == 0
    second = files(out)
    assert "trace.jsonl" not in second
    assert not any(name.startswith("plots/sequence") for name in second)
    info = json.loads((out / "run.json").read_text())
    assert set(info["files"]) == second  # the manifest lists exactly what is there
    assert json.loads((out / "summary.json").read_text())["n"] == 7
    assert "held another run" in capsys.readouterr().err  # not overwritten silently
    # --no-plots: the earlier figures go too
    assert main(["run", BASELINE, "--out", str(out), "--quiet", "--no-plots", *SHORT]) == 0
    assert not (out / "plots").exists()
    # `medbft sequence` now says there is no trace instead of reading the first run's
    assert main(["sequence", str(out)]) == 2
    assert "no trace" in capsys.readouterr().err


def test_a_non_empty_folder_no_run_wrote_is_refused_before_simulating(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "plots").mkdir()
    (out / "plots" / "mine.png").write_text("")
    assert main(["run", BASELINE, "--out", str(out), "--quiet", *SHORT]) == 2
    captured = capsys.readouterr()
    assert "not empty" in captured.err and "--force" in captured.err
    assert "medbft run" not in captured.out  # nothing started
    assert files(out) == {"notes.txt", "plots/mine.png"}
    assert main(["run", BASELINE, "--out", str(out), "--quiet", "--force", "--no-plots",
                 *SHORT]) == 0
    assert (out / "notes.txt").read_text() == "keep me"
    assert "notes.txt" not in json.loads((out / "run.json").read_text())["files"]
    # the next run removes its own files and keeps the foreign one
    assert main(["run", BASELINE, "--out", str(out), "--quiet", "--no-plots", *SHORT]) == 0
    assert (out / "notes.txt").exists() and (out / "plots" / "mine.png").exists()
    info = json.loads((out / "run.json").read_text())
    assert info["kept"] == ["notes.txt", "plots/mine.png"]
    assert not set(info["kept"]) & set(info["files"])


def test_a_manifest_cannot_remove_files_outside_the_run_folder(tmp_path: Path) -> None:
    from medbft.results import clear_run_dir

    out = tmp_path / "run"
    out.mkdir()
    (tmp_path / "precious.txt").write_text("x")
    (out / "run.json").write_text(json.dumps({"files": ["../precious.txt", "a.csv",
                                                         "sub/b.csv", str(tmp_path / "p2")]}))
    (tmp_path / "p2").write_text("x")
    (out / "a.csv").write_text("x")
    (out / "sub").mkdir()
    (out / "sub" / "b.csv").write_text("x")
    (out / "empty-but-mine").mkdir()
    clear_run_dir(out)
    assert (tmp_path / "precious.txt").exists() and (tmp_path / "p2").exists()
    assert not (out / "a.csv").exists() and not (out / "sub").exists()
    assert (out / "empty-but-mine").is_dir() and out.is_dir()


# -- 2. --out and the scenario name are checked before the run -------------------------------


def test_out_that_is_a_file_exits_2_before_simulating(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "taken"
    target.write_text("")
    for out in (target, target / "below"):
        assert main(["run", BASELINE, "--out", str(out), *SHORT]) == 2
        captured = capsys.readouterr()
        assert "medbft run" not in captured.out and "Errno" not in captured.err
        assert f"--out {out}: " in captured.err and "file" in captured.err
        assert len(captured.err.strip().splitlines()) == 1


def test_out_under_a_read_only_folder_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unwritable parent is refused before the run. `os.access` is faked: the tests run
    as root here, who writes anywhere."""
    import medbft.results as results

    monkeypatch.setattr(results.os, "access", lambda path, mode: Path(path) != tmp_path)
    assert main(["run", BASELINE, "--out", str(tmp_path / "x" / "y"), *SHORT]) == 2
    captured = capsys.readouterr()
    assert f"{tmp_path} is not writable" in captured.err and "medbft run" not in captured.out


@pytest.mark.parametrize("name", ["../../outside", "a/b", ".hidden", "-dash", "", "x" * 65,
                                  "with space"])
def test_scenario_name_must_be_a_safe_slug(tmp_path: Path, name: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(Path(BASELINE).read_text().replace("name: baseline", f"name: {name!r}"))
    assert main(["validate", str(path)]) == 2
    assert f"{path}: name: expected a name of 1-64 letters" in capsys.readouterr().err


def test_safe_names_still_parse() -> None:
    raw = {"name": "Scale_n4.b8-v2", "duration": "1s", "nodes": 4}
    assert parse_scenario(raw).name == "Scale_n4.b8-v2"


def test_negative_seed_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", BASELINE, "--seed", "-5", "--out", str(tmp_path / "o"), *SHORT]) == 2
    assert "--seed: expected a whole number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["fuzz", "--seed", "-5", "--out", str(tmp_path)]) == 2


# -- 3. results/index.csv --------------------------------------------------------------------


def test_runs_under_results_are_listed_in_the_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", BASELINE, "--quiet", "--no-plots", *SHORT]) == 0
    assert main(["run", BASELINE, "--quiet", "--no-plots", "--seed", "3",
                 "--out", "results/elsewhere", *SHORT]) == 0
    assert main(["run", BASELINE, "--quiet", "--no-plots", "--out", "outside", *SHORT]) == 0
    rows = list(csv.DictReader((tmp_path / "results" / "index.csv").read_text().splitlines()))
    assert [(r["scenario"], r["seed"], r["path"]) for r in rows] == [
        ("baseline", "1", "results/baseline"), ("baseline", "3", "results/elsewhere")]
    summary = json.loads((tmp_path / "results" / "baseline" / "summary.json").read_text())
    first = rows[0]
    assert first["scenario_hash"] == summary["scenario_hash"]
    assert first["version"] and first["verdict"] == "pass"
    assert first["safety_ok"] == "True" and first["liveness_ok"] == "True"
    assert float(first["throughput_tps"]) == summary["throughput_tps"]
    assert float(first["latency_p99_ms"]) == summary["latency_ms"]["p99"]
    assert first["command"].startswith("medbft run ")


# -- 4. --json and --version -----------------------------------------------------------------


def test_run_json_prints_one_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    assert main(["run", BASELINE, "--out", str(out), "--json", "--no-plots", *SHORT]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["ok"] is True and result["verdict"] == "pass"
    assert result["summary"] == str(out / "summary.json")
    summary = json.loads(Path(result["summary"]).read_text())
    assert result["throughput_tps"] == summary["throughput_tps"]
    assert result["latency_p50_ms"] == summary["latency_ms"]["p50"]
    assert result["safety_ok"] is True and result["liveness_ok"] is True
    assert captured.err == ""


def test_failed_run_json_carries_the_reproduction(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(ROOT / "scenarios" / "f-plus-one-crashed.yaml"), "--out",
                 str(tmp_path), "--json", "--no-plots", "--set", "expect.liveness=true"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False and result["reproduce"].startswith("medbft run ")
    assert [f["name"] for f in result["expect_failed"]] == ["liveness"]


def test_validate_json_names_each_problem(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: ../x\nduration: 1s\nnodes: 3\n")
    assert main(["validate", "--json", BASELINE, str(bad)]) == 2
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["ok"] is False and captured.err == ""
    good, wrong = result["files"]
    assert good == {"path": BASELINE, "ok": True, "name": "baseline", "n": 4, "f": 1,
                    "faults": 0, "problems": []}
    assert wrong["ok"] is False
    assert {p["field"] for p in wrong["problems"]} >= {"name", "nodes"}


def test_fuzz_json_lists_failures_with_repro_commands(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    def judge(raw: dict[str, Any]) -> fuzz.FuzzOutcome:
        bad = raw["seed"] == 1
        return fuzz.FuzzOutcome(raw["seed"], not bad, True, [{"kind": "fake", "seq": 1}] * bad,
                                0, raw)

    monkeypatch.setattr(fuzz, "check", judge)
    assert main(["fuzz", "--seeds", "3", "--json", "--no-shrink", "--out", str(tmp_path)]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["seeds"] == {"first": 0, "last": 2, "count": 3}
    assert result["passed"] == 2 and result["ok"] is False
    (failure,) = result["failed"]
    assert failure["seed"] == 1 and failure["reproduce"] == "medbft fuzz --n 4 --seed 1"
    assert Path(failure["schedule"]).exists()
    assert fuzz_cmd  # the module the command runs


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from medbft.results import package_version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"medbft {package_version()}"
    assert package_version()[0].isdigit()


def test_version_falls_back_to_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from medbft.results import package_version

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    text = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{package_version()}"' in text


# -- 5. small points -------------------------------------------------------------------------


def test_expected_fork_verdict_does_not_say_pass_violated(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(ROOT / "scenarios" / "f-plus-one-equivocators.yaml"), "--out",
                 str(tmp_path), "--quiet", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "PASS: safety violated as expected (expect: safety: false)" in out
    assert "PASS: safety VIOLATED" not in out


@pytest.mark.slow
def test_sequence_names_unknown_parties(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", BASELINE, "--out", str(tmp_path), "--trace", "--quiet", "--no-plots",
                 *SHORT]) == 0
    capsys.readouterr()
    assert main(["sequence", str(tmp_path), "--nodes", "foo,bar", "--formats", "svg"]) == 2
    err = capsys.readouterr().err
    assert "unknown parties foo, bar" in err and "hospital-1" in err
    assert "nothing happened" not in err


def test_sweep_of_a_scenario_file_says_use_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", BASELINE]) == 2
    err = capsys.readouterr().err
    assert "this is a scenario, not a sweep" in err and f"medbft run {BASELINE}" in err
    assert "unknown field" not in err


def _summary(**changes: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "scenario": "x", "seed": 1, "n": 4, "f": 1, "sim_time_s": 2.0, "wall_time_s": 0.5,
        "requests": {"committed": 10, "submitted": 10}, "throughput_tps": 5.0,
        "latency_ms": dict.fromkeys(("p50", "p95", "p99", "mean", "max"), 1.0),
        "messages": {"total": 653, "bytes": 1, "per_committed_request": 65.282759},
        "view_changes": 0, "final_view": 0, "state_transfers": 0,
        "rejected_messages": {"total": 0}, "safety": {"ok": True, "violations": []},
        "liveness": {"ok": True, "unsettled": 0}}
    summary.update(changes)
    return summary


def _rows(summary: dict[str, Any]) -> dict[str, str]:
    table = summary_table(summary)
    names, values = (list(column.cells) for column in table.columns)
    return dict(zip(names, values, strict=True))


def test_messages_per_request_has_one_rounding_rule() -> None:
    assert _rows(_summary())["messages per committed request"] == "65.3"


def test_real_run_table_has_no_simulated_time_row() -> None:
    rows = _rows(_summary(sim_time_s=None))
    assert "simulated / wall time" not in rows and rows["wall time"] == "0.5 s"
    real = _summary()
    del real["sim_time_s"]
    assert "simulated / wall time" not in _rows(real)


@pytest.mark.parametrize("form, scenario_form", [
    ("7", 7), ("pharmacy:1,hospital:2,regulator:1", {"pharmacy": 1, "hospital": 2,
                                                     "regulator": 1})])
def test_keys_init_orders_nodes_as_scenarios_do(tmp_path: Path, form: str,
                                                scenario_form: Any) -> None:
    assert main(["keys", "init", "--out", str(tmp_path), "--nodes", form, "--app", "kv"]) == 0
    genesis = json.loads((tmp_path / "genesis.json").read_text())
    scenario = parse_scenario({"name": "x", "duration": "1s", "nodes": scenario_form})
    assert [node["id"] for node in genesis["nodes"]] == list(scenario.node_ids)
    assert [node["role"] for node in genesis["nodes"]] == [n.role for n in scenario.nodes]


def test_keys_init_refuses_a_role_given_twice(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "init", "--out", str(tmp_path), "--nodes",
                 "hospital:2,hospital:2"]) == 2
    assert "hospital given twice" in capsys.readouterr().err


def test_load_scenario_of_a_run_folder_still_works(tmp_path: Path) -> None:
    assert main(["run", BASELINE, "--out", str(tmp_path), "--quiet", "--no-plots",
                 *SHORT]) == 0
    assert load_scenario(tmp_path / "scenario.yaml").name == "baseline"
