"""`medbft ledger RESULTS_DIR ...`: a run saves its ledger, and the queries answer from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medbft.apps import verify_results
from medbft.cli import main
from node.ledger import load_ledger, recall_exposure, trace

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recall")
    code = main(["run", str(ROOT / "scenarios" / "vaccine-recall.yaml"), "--out", str(out),
                 "--quiet", "--no-plots", "--set", "duration=5s"])
    assert code == 0
    return out


def ask(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def test_run_saves_the_ledger_digests_and_offchain_documents(results: Path) -> None:
    for name in ("ledger.json", "ledger_digests.json", "offchain.json"):
        assert (results / name).exists(), name
    digests = json.loads((results / "ledger_digests.json").read_text())
    assert set(digests) == {"hospital-1", "hospital-2", "pharmacy-1", "regulator-1"}
    summary = json.loads((results / "summary.json").read_text())
    ledger = summary["ledger"]
    assert ledger["blocks"] > 0 and ledger["txs_by_kind"] and ledger["rejections_by_reason"]
    assert load_ledger(results).state_digest().hex() == ledger["state_digest"]


def test_trace_and_recall_exposure_queries(results: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    ledger = load_ledger(results)
    lot = json.loads((results / "summary.json").read_text())["ledger"]["story"]["recalls"][0][
        "lot"]
    code, out = ask(capsys, "ledger", str(results), "recall-exposure", "--lot", lot, "--json")
    assert code == 0 and json.loads(out) == recall_exposure(ledger, lot)
    code, out = ask(capsys, "ledger", str(results), "recall-exposure", "--lot", lot)
    assert "patients who received a unit" in out and "recall" in out
    serial = json.loads(out and ask(capsys, "ledger", str(results), "recall-exposure",
                                    "--lot", lot, "--json")[1])["patients"][0]["epc"]
    code, out = ask(capsys, "ledger", str(results), "trace", "--serial", serial, "--json")
    answer = json.loads(out)
    assert answer == trace(ledger, serial)
    assert answer["events"][0]["event"] == "EPCIS_COMMISSION"
    assert answer["events"][-1]["event"] == "IMMUNIZATION_ADMINISTER"
    code, out = ask(capsys, "ledger", str(results), "trace", "--serial", serial)
    assert "EPCIS_COMMISSION" in out and "[RECALLED]" in out


def test_access_log_consents_and_verify(results: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = ask(capsys, "ledger", str(results), "access-log", "--patient", "patient-1",
                    "--json")
    entries = json.loads(out)
    assert code == 0 and entries and all(e["target"].startswith("pp:") for e in entries)
    code, out = ask(capsys, "ledger", str(results), "consents", "--patient", "patient-1")
    assert code == 0 and out
    code, out = ask(capsys, "ledger", str(results), "verify")
    assert code == 0 and out.startswith("OK:") and "MISMATCH" in out  # the label, with 0
    report = verify_results(results)
    assert report["ok"] and report["offchain"]["records_mismatch"] == 0
    assert report["offchain"]["records_ok"] > 0 and report["offchain"]["events_on_chain"] > 0


def test_verify_detects_a_tampered_ledger_and_bad_input(
        results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("ledger.json", "ledger_digests.json", "offchain.json"):
        (tmp_path / name).write_text((results / name).read_text())
    data = json.loads((tmp_path / "ledger.json").read_text())
    audit = data["snapshot"]["state"]["audit"]
    audit[0][5] = "permit" if audit[0][5] != "permit" else "deny"
    (tmp_path / "ledger.json").write_text(json.dumps(data))
    code, out = ask(capsys, "ledger", str(tmp_path), "verify")
    assert code == 1 and "FAILED" in out
    assert main(["ledger", str(tmp_path / "nowhere"), "verify"]) == 2
    assert main(["ledger", str(results), "trace", "--serial", "urn:epc:id:sgtin:1.2.3"]) == 2
    assert "not on the ledger" in capsys.readouterr().err
