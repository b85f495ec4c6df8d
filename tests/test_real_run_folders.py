"""Real runs keep the run-folder guarantees of `medbft run`: `medbft cluster` and `medbft load`
check --out before any process starts, a second cluster run into one folder starts from a
fresh network and leaves no file of the first (keys, node databases, logs), run.json lists
exactly the folder's files, and a run under results/ adds a row to results/index.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

import medbft.real.cluster as real_cluster
import medbft.real.load as real_load
from medbft.cli import main


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets as far as starting a cluster or a load."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a process or the load was started")

    monkeypatch.setattr(real_cluster, "run_cluster", refuse)
    monkeypatch.setattr(real_cluster.LocalCluster, "start", refuse)
    monkeypatch.setattr(real_load, "run_load", refuse)


LOAD = ["--transport", "http", "--duration", "1s", "--drain", "3s", "--outstanding", "1",
        "--quiet"]
KV = ["--app", "kv", *LOAD]


@pytest.mark.real
@pytest.mark.slow
def test_a_second_cluster_run_into_one_folder_leaves_no_file_of_the_first(
        tmp_path: Path) -> None:
    out = tmp_path / "results" / "c"
    assert main(["cluster", "--nodes", "5", *KV, "--out", str(out)]) == 0
    first_id = json.loads((out / "network" / "network.json").read_text())["network_id"]
    first_key = (out / "network" / "keys" / "hospital-1.pem").read_bytes()
    first = files(out)
    assert {"network/keys/pharmacy-2.pem", "logs/pharmacy-2.log",
            "network/data/pharmacy-2.db"} <= first
    assert set(json.loads((out / "run.json").read_text())["files"]) == first

    assert main(["cluster", "--nodes", "4", *KV, "--out", str(out)]) == 0
    second = files(out)
    # a fresh network: new id, new keys; the fifth node of the first run left nothing
    assert json.loads((out / "network" / "network.json").read_text())["network_id"] != first_id
    assert (out / "network" / "keys" / "hospital-1.pem").read_bytes() != first_key
    assert not any("pharmacy-2" in name for name in second), sorted(second)
    # logs start empty (one start per node), databases from genesis
    for node in ("hospital-1", "pharmacy-1", "regulator-1", "hospital-2"):
        assert (out / "logs" / f"{node}.log").read_text().count("ready") == 1, node
    summary = json.loads((out / "summary.json").read_text())
    committed = summary["requests"]["committed"]
    agreement = summary["safety"]["state_agreement"]["nodes"]
    assert all(0 < n["last_executed"] <= committed for n in agreement.values()), agreement
    info = json.loads((out / "run.json").read_text())
    assert info["mode"] == "real" and info["command"].startswith("medbft cluster --nodes 4")
    assert info["files"] == sorted(second) and "kept" not in info
    with (tmp_path / "results" / "index.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["path"], r["verdict"]) for r in rows] == [("results/c", "pass")] * 2


@pytest.mark.usefixtures("no_processes")
@pytest.mark.parametrize("command", [["cluster", "--app", "kv"], ["load", "--network", "net"]])
def test_an_out_that_is_a_file_is_refused_before_any_process_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    out = tmp_path / "taken"
    out.write_text("mine")
    assert main([*command, *LOAD, "--out", str(out)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert out.read_text() == "mine"
    assert main([*command, *LOAD, "--out", str(out / "below")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.usefixtures("no_processes")
def test_a_foreign_folder_is_refused_unless_forced_and_a_load_keeps_its_network_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for command in (["cluster"], ["load", "--network", "net"]):
        assert main([*command, *LOAD, "--out", str(mine)]) == 2
        err = capsys.readouterr().err
        assert "not empty" in err and "--force" in err
    assert files(mine) == {"notes.txt"}
    # --force gets past the check (and here to the stubbed start)
    with pytest.raises(AssertionError, match="was started"):
        main(["cluster", *KV, "--force", "--out", str(mine)])
    assert (mine / "notes.txt").read_text() == "keep me"
    # a load whose --out holds its network would remove the network with its next run
    out = tmp_path / "c"
    assert main(["load", "--network", str(out / "network"), *LOAD, "--out", str(out)]) == 2
    assert "holds the network directory" in capsys.readouterr().err
