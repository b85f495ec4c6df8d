"""Issue 16's teaching scenarios as whole simulated runs, with the ledger's invariants checked
on every replica after every block: insurance-claim, research-study and cold-chain-excursion
tell their stories (docs/ledger.md#teaching-scenarios), pass their `expect:`, and the
`medbft ledger` queries for the new kinds answer from the saved ledger. Also: the new kinds
stay out of every other flow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import medbft.apps
from medbft.cli import main
from medbft.scenario import load_scenario
from medbft.traffic.ledger import FLOWS, PARTNER_KINDS
from node.ledger import cases, claims, excursions, load_ledger, studies

ROOT = Path(__file__).parent.parent


def run(name: str, out: Path) -> dict[str, Any]:
    """Run a shipped scenario with the invariants checked; save it; return the summary."""
    medbft.apps.CHECK_INVARIANTS = True
    try:
        code = main(["run", str(ROOT / "scenarios" / f"{name}.yaml"), "--out", str(out),
                     "--quiet", "--no-plots"])
    finally:
        medbft.apps.CHECK_INVARIANTS = False
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert code == 0
    ledger = summary["ledger"]
    assert ledger["invariants"] == {"violations": [], "digest_forks": []}
    assert ledger["digests_agree"] and summary["safety"]["ok"]
    assert summary["expect"] == {"ok": True, "failed": []}, summary["expect"]
    return summary


@pytest.fixture(scope="module")
def claim_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("claim")
    return out, run("insurance-claim", out)


@pytest.fixture(scope="module")
def research_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("research")
    return out, run("research-study", out)


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("cold")
    return out, run("cold-chain-excursion", out)


def ask(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def results(story: dict[str, Any]) -> dict[str, str]:
    return {s["step"]: s.get("result", "skipped") for s in story["steps"]}


def test_insurance_claim_is_paid_only_under_consent(
        claim_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    out, summary = claim_run
    story = summary["ledger"]["story"]["claim"]
    steps = results(story)
    assert steps["verify-identity"] == "verified:match"
    assert steps["pay-claim"] == "ok:paid"
    assert steps["pay-second-claim"] == "rejected:no-consent"
    assert steps["deny-second-claim"] == "ok:denied"
    assert steps["re-enrol-old-identifier"] == "rejected:pi-reused"
    assert steps["verify-old-reference"] == "rejected:stale-template-version"
    assert steps["verify-renewed"] == "verified:match"
    assert story["paid_without_consent"] == 0
    assert story["claims_on_ledger"]["approved"] > 1, "background claims are paid too"
    ledger = load_ledger(out)
    every = claims(ledger)
    assert all(c["consent_in_force_at_payment"] for c in every if c["status"] == "approved")
    code, text = ask(capsys, "ledger", str(out), "claims", "--json")
    assert code == 0 and json.loads(text) == every
    code, text = ask(capsys, "ledger", str(out), "claims")
    assert "paid under" in text and "denied: no-consent" in text
    assert main(["ledger", str(out), "claims", "--claim", "claim-0"]) == 2
    assert "not on the ledger" in capsys.readouterr().err


def test_research_answers_are_suppressed_below_the_cohort_minimum(
        research_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    out, summary = research_run
    story = summary["ledger"]["story"]["research"]
    answers = [s["result"] for s in story["steps"] if s["step"] == "query"]
    released = [a for a in answers if a.startswith("ok:aggregate=")]
    assert answers[0] == "ok:suppressed" and released, answers
    first = answers.index(released[0])
    assert all(a == "ok:suppressed" for a in answers[:first])
    assert released[0] == "ok:aggregate=5", "released exactly when the cohort reaches 5"
    after = next(s["result"] for s in story["steps"] if s["step"] == "query-after-revocation")
    assert int(after.rsplit("=", 1)[1]) == int(released[-1].rsplit("=", 1)[1]) - 1
    assert story["answers_on_ledger"]["released_below_minimum"] == 0
    assert story["answers_on_ledger"]["suppressed"] >= first
    ledger = load_ledger(out)
    code, text = ask(capsys, "ledger", str(out), "studies", "--json")
    assert code == 0 and json.loads(text) == studies(ledger)
    code, text = ask(capsys, "ledger", str(out), "studies")
    assert "minimum cohort 5" in text and "suppressed" in text


def test_cold_chain_excursion_quarantines_the_lot(
        cold_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    out, summary = cold_run
    ledger_summary = summary["ledger"]
    story = ledger_summary["story"]["cold_chain"]
    steps = results(story)
    assert steps["excursion"] == "ok:quarantined"
    assert steps["dispense-attempt"] == "rejected:quarantined"
    assert steps["verify-unit"] == "verified:quarantined"
    assert steps["serious-adverse-event"].startswith("ok:review:sig-")
    assert story["excursions"][0]["reading_c"] == 12.4
    assert story["cases_packed"] > 0 and ledger_summary["txs_by_kind"]["EPCIS_RETURN"]["ok"] > 0
    assert "closed" in story["signal_reviews"].values(), "the inspector closed the review"
    ledger = load_ledger(out)
    code, text = ask(capsys, "ledger", str(out), "excursions", "--lot", story["lot"], "--json")
    assert code == 0 and json.loads(text) == excursions(ledger, story["lot"])
    code, text = ask(capsys, "ledger", str(out), "excursions")
    assert "QUARANTINED the lot" in text
    every = cases(ledger)
    code, text = ask(capsys, "ledger", str(out), "cases", "--case", every[0]["case"], "--json")
    assert code == 0 and json.loads(text) == every[:1]
    code, text = ask(capsys, "ledger", str(out), "cases")
    assert "packed by mfr-1" in text
    serial = every[0]["units"][0]
    code, text = ask(capsys, "ledger", str(out), "trace", "--serial", serial, "--json")
    assert "EPCIS_AGGREGATE" in [e["event"] for e in json.loads(text)["events"]]
    assert main(["ledger", str(out), "excursions", "--lot", "LOT-NONE"]) == 2
    code, text = ask(capsys, "ledger", str(out), "verify")
    assert code == 0 and text.startswith("OK:")


def test_the_new_kinds_appear_only_in_the_flows_that_ask_for_them() -> None:
    for flow, weights in FLOWS.items():
        if flow not in ("insurance-claim", "research-study", "cold-chain-excursion"):
            assert not any(weights.get(k) for k in PARTNER_KINDS), flow
    for name in ("vaccine-recall", "consent-race", "counterfeit-injection", "regulator-crash"):
        population = load_scenario(ROOT / "scenarios" / f"{name}.yaml").workload.population
        assert not {"insurer", "researcher", "ethics_board"} & set(population or {})


def test_one_seed_gives_one_ledger(research_run: tuple[Path, dict[str, Any]],
                                   tmp_path: Path) -> None:
    """The partners' traffic draws only from the run's seeded stream: a second run of the
    same scenario saves the same ledger, byte for byte."""
    out, summary = research_run
    again = run("research-study", tmp_path)
    assert again["ledger"]["state_digest"] == summary["ledger"]["state_digest"]
    assert (tmp_path / "ledger.json").read_bytes() == (out / "ledger.json").read_bytes()
