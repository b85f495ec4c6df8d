"""Every command that reads a run folder survives every damaged file it reads: exit 2 and one
line naming the file (or, for a file only one figure needs, exit 0 and a warning naming it),
never a traceback.

Why this exists: run folders get truncated by a full disk, hand-edited, copied half-way. The
issue "Runs people can trust and compare" asks that each reader be fed a corrupted copy of
each file it reads; this file does so, with three kinds of damage per file (cut short,
malformed, the wrong shape), into a fresh copy of one real traced run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medbft.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runfiles") / "baseline"
    code = main(["run", str(ROOT / "scenarios" / "baseline.yaml"), "--set", "duration=1s",
                 "--trace", "--quiet", "--no-plots", "--out", str(out)])
    assert code == 0
    return out


def _truncated(text: str) -> str:
    """The first half, cut inside a line (never right after a line break)."""
    cut = max(1, len(text) // 2)
    while cut > 1 and text[cut - 1] in "\r\n":
        cut -= 1
    return text[:cut]


WRONG_SHAPE = {
    ".json": "[1, 2]\n",
    ".csv": "foo,bar\r\n1,2\r\n",
    ".yaml": "- a\n- b\n",
    ".jsonl": "[1, 2]\n",
}
MALFORMED = {
    ".json": "{broken\n",
    ".yaml": "foo: [\n",
    ".jsonl": '{"t": 0, "event": \n',
}


def _malformed(name: str, text: str) -> str:
    suffix = Path(name).suffix
    if suffix == ".csv":  # the right header, a row of the right width with words for numbers
        header = text.splitlines()[0]
        return header + "\r\n" + ",".join(["x"] * len(header.split(","))) + "\r\n"
    return MALFORMED[suffix]


def _damage(path: Path, how: str) -> None:
    text = path.read_text()
    if how == "truncated":
        path.write_text(_truncated(text))
    elif how == "malformed":
        path.write_text(_malformed(path.name, text))
    elif how == "wrong-shape":
        path.write_text(WRONG_SHAPE[path.suffix])
    else:
        path.unlink()


#: (reader, its arguments after DIR, the files it reads, the files only a figure needs).
READERS = {
    "plot": (["--formats", "png"],
             ("summary.json", "requests.csv", "phases.csv", "views.csv", "faults.csv",
              "events.csv", "scenario.yaml", "run.json", "trace.jsonl"), ("trace.jsonl",)),
    "sequence": (["--formats", "png", "--brief"],
                 ("trace.jsonl", "requests.csv", "scenario.yaml"), ()),
    "ledger-verify": (["verify"], ("ledger.json", "ledger_digests.json", "offchain.json"), ()),
    "ledger-consents": (["consents", "--patient", "patient-1"], ("ledger.json",), ()),
    "compare": ([], ("summary.json", "requests.csv", "views.csv", "faults.csv",
                     "events.csv", "scenario.yaml", "run.json", "phases.csv"), ()),
}
CASES = [(reader, name, how) for reader, (_, files, _) in READERS.items() for name in files
         for how in ("truncated", "malformed", "wrong-shape")]


@pytest.mark.parametrize(("reader", "name", "how"), CASES,
                         ids=[f"{r}-{n}-{h}" for r, n, h in CASES])
def test_a_damaged_file_is_named_with_exit_2(run_dir: Path, tmp_path: Path, reader: str,
                                             name: str, how: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    _damage(folder / name, how)
    extra, _, figure_only = READERS[reader]
    command = reader.split("-")[0]
    if command == "compare":
        argv = ["compare", str(run_dir), str(folder), "--out", str(tmp_path / "cmp"), *extra]
    else:
        argv = [command, str(folder), *extra]
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    expected = 0 if name in figure_only else 2
    assert code == expected, err
    assert name in err, err
    assert ("warning:" if expected == 0 else "error:") in err


@pytest.mark.parametrize(("reader", "name"), [
    ("plot", "summary.json"), ("plot", "requests.csv"), ("sequence", "trace.jsonl"),
    ("ledger-verify", "ledger.json"), ("ledger-verify", "ledger_digests.json"),
    ("compare", "summary.json")])
def test_a_missing_required_file_is_named_with_exit_2(
        run_dir: Path, tmp_path: Path, reader: str, name: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    (folder / name).unlink()
    extra, _, _ = READERS[reader]
    command = reader.split("-")[0]
    argv = (["compare", str(run_dir), str(folder), "--out", str(tmp_path / "cmp")]
            if command == "compare" else [command, str(folder), *extra])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert name in err and "missing" in err and "Traceback" not in err


def test_a_missing_optional_file_warns_per_figure(run_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    for name in ("phases.csv", "views.csv", "scenario.yaml"):
        (folder / name).unlink()
    assert main(["plot", str(folder), "--formats", "png"]) == 0
    err = capsys.readouterr().err
    assert "figure phases not drawn" in err and "phases.csv is missing" in err
    assert "figure network not drawn" in err and "scenario.yaml is missing" in err
    assert "figure throughput drawn without view changes" in err
    assert not (folder / "plots" / "phases.png").exists()
    assert (folder / "plots" / "throughput.png").exists()
