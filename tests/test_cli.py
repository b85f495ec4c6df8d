"""The `medbft` command: outputs, exit codes, and clear errors for bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medbft.cli import main

ROOT = Path(__file__).parent.parent
BASELINE = str(ROOT / "scenarios" / "baseline.yaml")


@pytest.mark.slow
def test_run_writes_summary_requests_and_trace(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", BASELINE, "--out", str(tmp_path), "--trace", "--set", "duration=1s"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "seed 1" in printed and "PASS" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("scenario", "seed", "n", "f", "duration_s", "sim_time_s", "wall_time_s",
                "requests", "throughput_tps", "latency_ms", "messages", "view_changes",
                "final_view", "safety", "liveness", "expect"):
        assert key in summary
    assert set(summary["latency_ms"]) == {"p50", "p95", "p99", "mean", "max"}
    assert set(summary["messages"]["by_type"]) >= {"REQUEST", "PRE-PREPARE", "PREPARE",
                                                   "COMMIT", "REPLY"}
    rows = list(csv.DictReader((tmp_path / "requests.csv").read_text().splitlines()))
    assert len(rows) == summary["requests"]["submitted"]
    assert set(rows[0]) == {"client", "session", "timestamp", "submit_s", "commit_s",
                            "latency_ms", "view", "seq"}
    assert float(rows[0]["latency_ms"]) == 50.0 and rows[0]["seq"] == "1"
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["event"] for line in lines)


def test_seed_option_overrides_and_is_printed(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", BASELINE, "--seed", "99", "--out", str(tmp_path), "--quiet",
                 "--set", "duration=500ms"]) == 0
    assert "seed 99" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text())["seed"] == 99


def test_failed_expectation_exits_1_and_prints_reproduction(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(ROOT / "scenarios" / "f-plus-one-crashed.yaml"), "--out",
                 str(tmp_path), "--quiet", "--set", "expect.liveness=true"])
    assert code == 1
    out = capsys.readouterr().out
    assert "expectation liveness failed" in out
    assert "reproduce with: medbft run" in out and "--seed 11" in out


def test_a_fork_is_printed_with_its_seq_replicas_and_digests(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(ROOT / "scenarios" / "f-plus-one-equivocators.yaml"), "--out",
                 str(tmp_path), "--quiet", "--no-plots"])
    assert code == 0, "the scenario expects safety: false"
    out = capsys.readouterr().out
    fork = json.loads((tmp_path / "summary.json").read_text())["safety"]["violations"][0]
    names = [f"{node} {digest[:12]}" for node, digest in fork["digests"].items()]
    assert f"seq {fork['seq']}: {', '.join(names)}" in out


def test_bad_scenario_exits_2_naming_file_and_field(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(BASELINE).read_text().replace("latency: 10ms", "latency: fast"))
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "network.latency" in err and "Traceback" not in err


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "no/such/file.yaml"]) == 2
    assert "no/such/file.yaml" in capsys.readouterr().err


def test_validate_checks_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nduration: 1s\nnodes: 3\n")
    assert main(["validate", BASELINE, str(bad)]) == 2
    captured = capsys.readouterr()
    assert "ok:" in captured.out and "bad.yaml" in captured.err and "nodes" in captured.err
    assert main(["validate", *map(str, sorted((ROOT / "scenarios").glob("*.yaml")))]) == 0


def test_a_scenario_whose_virtual_time_cannot_advance_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Zero latency, no CPU model, no bandwidth: every message would arrive the instant it is
    sent and the run would never end. validate and run both refuse it, naming the field."""
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text("name: minimal\nduration: 1s\nnodes: 4\n")
    for argv in (["validate", str(minimal)], ["run", str(minimal), "--out", str(tmp_path / "o")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{minimal}: network.latency: is 0 while cpu is none" in err, err
    assert not (tmp_path / "o").exists()
    assert main(["run", str(minimal), "--set", "network.latency=1ms", "--out",
                 str(tmp_path / "ok"), "--no-plots", "--quiet"]) == 0



def test_a_command_imports_only_what_it_runs(tmp_path: Path) -> None:
    """Naming a subcommand registers that command's module alone: `validate` and a run never
    load aiohttp, matplotlib or networkx (half a second to a second per command otherwise;
    a run's figures are drawn by its drawing process); `--help` still lists every command,
    and a misspelt command is told the valid choices."""
    import subprocess
    import sys

    probe = ("import sys\nfrom medbft.cli import main\ncode = main(sys.argv[1:])\n"
             "print(sorted(m for m in ('aiohttp', 'matplotlib', 'networkx') if m in sys.modules))\n"
             "sys.exit(code)\n")

    def loaded(*argv: str) -> tuple[int, str, str]:
        done = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, text=True,
                              capture_output=True, check=False)
        return done.returncode, done.stdout.strip().splitlines()[-1] if done.stdout else "", \
            done.stderr

    assert loaded("validate", BASELINE)[:2] == (0, "[]")
    code, modules, _ = loaded("run", BASELINE, "--no-plots", "--quiet", "--out",
                              str(tmp_path / "run"))
    assert (code, modules) == (0, "[]")
    assert (tmp_path / "run" / "report.html").exists()
    code, modules, _ = loaded("run", BASELINE, "--quiet", "--out", str(tmp_path / "plotted"))
    assert (code, modules) == (0, "[]")  # the drawing process loads matplotlib, not this one
    assert (tmp_path / "plotted" / "plots" / "throughput.png").exists()
    help_text = subprocess.run([sys.executable, "-m", "medbft", "--help"], cwd=ROOT, text=True,
                               capture_output=True, check=True).stdout
    for command in ("run", "validate", "cluster", "verify-receipt", "native", "studio"):
        assert command in help_text
    wrong = subprocess.run([sys.executable, "-m", "medbft", "rnu", BASELINE], cwd=ROOT,
                           text=True, capture_output=True, check=False)
    assert wrong.returncode == 2 and "invalid choice: 'rnu'" in wrong.stderr
    assert "'validate'" in wrong.stderr
