"""Harm measured in the application's own terms (medbft/harm.py, docs/harm.md): each detector
counts a harmful history built by hand and ignores the same history made harmless; the
ledger-aware Byzantine behaviours produce the windows and unfair orderings they aim at, and
PBFT's f+1 matching replies and view changes end what they can; tampering is detected at the
next checkpoint and repaired by state transfer; the schema explains bad parameters."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from medbft.fuzz import FuzzOutcome
from medbft.harm import History, Tx, empty_harm, judge_harm
from medbft.scenario import ScenarioError, load_scenario, parse_scenario
from medbft.summary import check_expect
from node.ledger import Ledger, encode_tx
from sim.run import run_scenario
from tests.ledger_support import Harness, genesis, pp, sha

SCENARIOS = Path(__file__).parent.parent / "scenarios"
EPC = "urn:epc:id:sgtin:0614141.000001.7"
LOT = "LOT-A"


# -- detectors on hand-built histories -----------------------------------------------------------

def _tx(key: str, kind: str, result: bytes | None, pos: tuple[int, int] | None,
        submit_ns: int = 0, accepted: bytes | None = None, **fields: Any) -> Tx:
    op = encode_tx(kind, **fields)
    tx = Tx(key, key.split("/")[0], 0, 1, op, kind, {"kind": kind, **fields}, submit_ns)
    tx.result, tx.pos = result, pos
    if accepted is not None:
        tx.accepted, tx.accepted_ns = accepted, submit_ns + 1
    return tx


def _history(*txs: Tx, arrivals: dict[tuple[str, str], tuple[int, int]] | None = None
             ) -> History:
    ledger = Ledger(genesis())
    ledger.state.put("units", EPC, ("00614141000012", LOT, "pharmacy-1", "in_progress", None))
    committed = sorted((t for t in txs if t.pos is not None), key=lambda t: t.pos or (0, 0))
    return History({t.key: t for t in txs}, committed, ledger, arrivals or {}, [])


def _judge(*txs: Tx, **kw: Any) -> dict[str, Any]:
    return judge_harm(_history(*txs, **kw), [], 10**9)


def _recall(pos: tuple[int, int] | None, submit_ns: int = 0) -> Tx:
    return _tx("manufacturer-1/0/1", "RECALL_ISSUE", b"ok" if pos else None, pos, submit_ns,
               recall_id="recall-1", gtin="00614141000012", lots=[LOT], reason="contamination",
               **{"class": "I"})


def _dose(result: bytes, pos: tuple[int, int], submit_ns: int = 0) -> Tx:
    return _tx("pharmacist-1/0/1", "IMMUNIZATION_ADMINISTER", result, pos, submit_ns,
               record_id="imm-1", patient="pp:" + "0" * 20, epc=EPC, vaccine_code="207",
               commitment="sha256:" + "0" * 64)


def test_a_dose_after_its_recall_committed_is_harm() -> None:
    harm = _judge(_recall((1, 0)), _dose(b"ok", (2, 0)))
    assert harm["events"] == 1 and harm["by_kind"] == {"dose-after-recall": 1}
    assert not harm["ok"]
    assert harm["listed"][0]["request"] == "pharmacist-1/0/1"


@pytest.mark.parametrize(("recall_pos", "dose_result"), [((3, 0), b"ok"),
                                                        ((1, 0), b"rejected:recalled")])
def test_a_dose_before_the_recall_or_refused_after_it_is_not(recall_pos: tuple[int, int],
                                                             dose_result: bytes) -> None:
    assert _judge(_recall(recall_pos), _dose(dose_result, (2, 0)))["events"] == 0


def test_an_access_after_its_revocation_committed_is_harm() -> None:
    revoke = _tx("patient-1/0/1", "CONSENT_REVOKE", b"ok", (1, 0), consent_id="c-1")
    access = _tx("clinician-1/0/1", "ACCESS_REQUEST", b"permit:consent:c-1", (1, 1),
                 patient="pp:" + "1" * 20, purpose="TREAT")
    assert _judge(revoke, access)["by_kind"] == {"access-after-revocation": 1}
    other = _tx("clinician-1/0/1", "ACCESS_REQUEST", b"permit:consent:c-2", (1, 1),
                patient="pp:" + "1" * 20, purpose="TREAT")
    assert _judge(revoke, other)["events"] == 0


def test_a_cleared_quarantine_no_longer_protects() -> None:
    flag = _tx("inspector-1/0/1", "SUSPECT_FLAG", b"ok", (1, 0), lot=LOT, basis="inspection")
    clear = _tx("inspector-1/0/2", "SUSPECT_CLEAR", b"ok", (2, 0), lot=LOT, basis="inspection")
    assert _judge(flag, _dose(b"ok", (3, 0)))["by_kind"] == {"dose-after-quarantine": 1}
    assert _judge(flag, clear, _dose(b"ok", (3, 0)))["events"] == 0


def test_a_client_accepting_what_the_ledger_did_not_say_is_harm() -> None:
    access = _tx("clinician-1/0/1", "ACCESS_REQUEST", b"deny:no-consent", (1, 0),
                 accepted=b"permit:no-consent", patient="pp:" + "1" * 20, purpose="TREAT")
    assert _judge(access)["by_kind"] == {"false-reply-accepted": 1}
    access.accepted = b"deny:no-consent"
    assert _judge(access)["events"] == 0


def test_personal_data_ordered_or_acknowledged_is_harm() -> None:
    phi = _tx("clinician-1/0/1", "RECORD_ANCHOR", b"ok", (1, 0), record_id="rec-1",
              patient="pp:" + "1" * 20, resource_type="Observation", name="Jane",
              commitment="sha256:" + "0" * 64, fhir_version="4.0.1")
    assert _judge(phi)["by_kind"] == {"phi-accepted": 1}
    phi.pos, phi.result, phi.accepted = None, b"refused:phi-field:name", b"refused:phi-field:name"
    assert _judge(phi)["events"] == 0


# -- claims and research: a committed order run on a real ledger -------------------------------

class _Committed:
    """A hand-built committed order whose steps run on a real ledger, one block each, so the
    judge reads real consents, claims and research rows at real positions; each step's client
    accepted what the ledger said unless a test then makes it accept a lie."""

    def __init__(self, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.h = Harness(extra)
        self.txs: list[Tx] = []

    def step(self, who: str, kind: str, **fields: Any) -> Tx:
        result = self.h.tx(who, kind, **fields).encode()
        height, stamp = len(self.h.ledger.state.block_hashes), len(self.txs) + 1
        tx = Tx(f"{who}/0/{stamp}", who, 0, stamp, encode_tx(kind, **fields), kind,
                {"kind": kind, **fields}, submit_ns=height)
        tx.pos, tx.result, tx.accepted, tx.accepted_ns = (height, 0), result, result, height
        self.txs.append(tx)
        return tx

    def grant(self, patient: str, grantee: str, consent_id: str, **scope: Any) -> Tx:
        return self.step(patient, "CONSENT_GRANT", consent_id=consent_id,
                         patient=pp(patient, "hospital-1"), grantee=grantee,
                         period={"start": "2025-01-01T00:00:00Z",
                                 "end": "2026-01-01T00:00:00Z"},
                         doc_commitment=sha(consent_id), **scope)

    def judge(self) -> dict[str, Any]:
        committed = [t for t in self.txs if t.pos is not None]
        h = History({t.key: t for t in self.txs}, committed, self.h.ledger, {}, [])
        return judge_harm(h, [], 10**9)


PAYMENT = {"actions": ["disclose"], "purposes": ["HPAYMT"]}
RESEARCH = {"actions": ["use"], "purposes": ["HRESCH"]}


def _billed(revoke_first: bool) -> tuple[_Committed, Tx]:
    """A claim under a payment consent, the consent revoked before or after the insurer's
    approval; returns the approval."""
    run = _Committed()
    assert run.h.anchor("clinician-1", "patient-1", "hospital-1", "r-1") == "ok"
    run.grant("patient-1", "ins-1", "c-1", **PAYMENT)
    assert run.step("clinician-1", "CLAIM_SUBMIT", claim_id="cl-1",
                    patient=pp("patient-1", "hospital-1"), to="ins-1",
                    claim_type="professional", record_ids=["r-1"],
                    claim_commitment=sha("cl-1")).result == b"ok"
    if revoke_first:
        run.step("patient-1", "CONSENT_REVOKE", consent_id="c-1")
    pay = run.step("insurer-1", "CLAIM_ADJUDICATE", claim_id="cl-1", decision="approve",
                   reason_code="covered")
    if not revoke_first:
        run.step("patient-1", "CONSENT_REVOKE", consent_id="c-1")
    return run, pay


def test_a_payment_accepted_after_the_consent_was_revoked_is_harm() -> None:
    run, pay = _billed(revoke_first=True)
    assert pay.result == b"rejected:no-consent"
    assert run.judge()["events"] == 0, "refused, and the insurer was told so"
    pay.accepted = b"ok:paid"  # f+1 replicas lied: the insurer pays
    harm = run.judge()
    assert harm["by_kind"] == {"claim-without-consent": 1, "false-reply-accepted": 1}
    (event,) = [e for e in harm["listed"] if e["kind"] == "claim-without-consent"]
    assert event["request"] == pay.key and "no HPAYMT consent in force at" in event["detail"]


def test_a_payment_before_the_revocation_committed_is_not_harm() -> None:
    run, pay = _billed(revoke_first=False)
    assert pay.result == pay.accepted == b"ok:paid"
    assert run.h.ledger.state.tables["consents"]["c-1"][8] is not None, "revoked in the end"
    assert run.judge()["events"] == 0, "in force at the payment's position: judged there"


def test_a_payment_that_never_committed_is_judged_after_the_committed_order() -> None:
    run, pay = _billed(revoke_first=True)
    pay.pos, pay.result, pay.accepted = None, None, b"ok:paid"
    harm = run.judge()
    assert harm["by_kind"] == {"claim-without-consent": 1}
    assert "never committed" in harm["listed"][0]["detail"]


def _researched(consenting: int) -> tuple[_Committed, Tx]:
    """A study (minimum 5) over seven patients' observations, `consenting` of whom consent to
    research; returns the researcher's count of patients."""
    run = _Committed(tuple((f"patient-{k}", "patient") for k in range(3, 8)))
    assert run.step("ethics_board-1", "STUDY_APPROVE", study_id="st-1",
                    researcher="researcher-1", protocol_commitment=sha("st-1"),
                    data_classes=["Observation"], min_cohort=5).result == b"ok"
    for k in range(1, 8):
        assert run.h.anchor("clinician-1", f"patient-{k}", "hospital-1", f"r-{k}") == "ok"
    for k in range(1, consenting + 1):
        run.grant(f"patient-{k}", "res-1", f"c-{k}", **RESEARCH)
    return run, run.step("researcher-1", "RESEARCH_QUERY", query_id="q-1", study_id="st-1",
                         resource_type="Observation", measure="patients")


def test_a_released_answer_below_the_cohort_minimum_is_harm() -> None:
    run, query = _researched(consenting=4)
    assert query.result == b"ok:suppressed"
    assert run.judge()["events"] == 0
    query.accepted = b"ok:aggregate=4"  # f+1 replicas released what the ledger suppressed
    harm = run.judge()
    assert harm["by_kind"] == {"false-reply-accepted": 1, "research-below-cohort": 1}
    (event,) = [e for e in harm["listed"] if e["kind"] == "research-below-cohort"]
    assert event["request"] == query.key and event["detail"] == "cohort 4 < minimum 5"


def test_a_released_answer_at_the_cohort_minimum_is_not() -> None:
    run, query = _researched(consenting=5)
    assert query.result == query.accepted == b"ok:aggregate=5"
    assert run.judge()["events"] == 0


def test_the_cohort_floor_holds_whatever_the_study_says() -> None:
    run, query = _researched(consenting=4)
    study = run.h.ledger.state.tables["studies"]["st-1"]
    run.h.ledger.state.put("studies", "st-1", (*study[:5], 3, *study[6:]))  # a bad approval
    query.accepted = b"ok:aggregate=4"
    (event,) = [e for e in run.judge()["listed"] if e["kind"] == "research-below-cohort"]
    assert event["detail"] == "cohort 4 < minimum 5"
    query.pos = None
    (event,) = [e for e in run.judge()["listed"] if e["kind"] == "research-below-cohort"]
    assert event["detail"] == "released with no committed answer"


def test_an_ordering_against_what_the_primary_received_first_is_unfair() -> None:
    recall = _recall((3, 0), submit_ns=100)
    dose = _dose(b"ok", (2, 0), submit_ns=200)
    dose.proposer = "hospital-1"
    received = {("hospital-1", recall.key): (150, 1), ("hospital-1", dose.key): (250, 2)}
    harm = _judge(recall, dose, arrivals=received)
    assert harm["events"] == 0, "ordered before the recall committed: not a safety harm"
    assert harm["unfair"] == {"events": 1, "by_kind": {"recall-pending:ordered-first": 1}}
    window = harm["windows"][0]
    assert (window["kind"], window["exposed"], window["unfair"]) == ("recall-pending", 1, 1)
    # The primary received the dose first: ordering it first is fair, though harm happened.
    received[("hospital-1", dose.key)] = (120, 0)
    harm = _judge(recall, dose, arrivals=received)
    assert harm["unfair"]["events"] == 0 and harm["windows"][0]["exposed"] == 1


def test_expect_harm_is_judged() -> None:
    sc = parse_scenario({**BASE, "expect": {"harm": 0, "harm_unfair": {
        "min": 1}}}, "<t>")
    summary = {"safety": {"ok": True}, "liveness": {"ok": True}, "requests": {
        "committed": 1, "submitted": 1}, "latency_ms": {"p50": 1, "p99": 1},
        "throughput_tps": 1, "view_changes": 0, "rejected_messages": {"total": 0},
        "state_transfers": 0, "final_view": 0,
        "harm": {**empty_harm(), "events": 2, "unfair": {"events": 0, "by_kind": {}}}}
    failed = check_expect(sc.expect, summary)["failed"]
    assert [f["name"] for f in failed] == ["harm_unfair", "harm"]
    assert failed[1] == {"name": "harm", "expected": 0, "measured": 2}


def test_the_swarm_fails_a_seed_with_harm_only_within_f() -> None:
    assert FuzzOutcome(1, True, True, harm=1, within_f=True).failure == "harm"
    assert FuzzOutcome(1, True, True, harm=1, within_f=False).ok
    assert FuzzOutcome(1, True, True).ok


# -- whole runs ---------------------------------------------------------------------------------

def _raw(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    return raw


def _run(raw: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = run_scenario(parse_scenario(raw, raw["name"])).summary
    return summary


def test_a_key_value_run_has_no_domain_harm() -> None:
    summary = _run({"name": "kv", "nodes": 4, "duration": "1s", "network": {"latency": "5ms"},
                    "cpu": "none", "workload": {"app": "kv", "clients": 2}})
    assert summary["harm"] == empty_harm()


@pytest.mark.slow
def test_censored_recall_window_is_closed_by_a_view_change_and_honest_has_no_harm() -> None:
    summary = run_scenario(load_scenario(SCENARIOS / "censored-recall.yaml")).summary
    harm = summary["harm"]
    assert harm["events"] == 0
    recall = [w for w in harm["windows"] if w["kind"] == "recall-pending"]
    assert len(recall) == 1 and recall[0]["closed_by"] == "view-change"
    assert recall[0]["unfair"] >= 1 and recall[0]["unfair"] == harm["unfair"]["events"]
    honest = _raw("censored-recall")
    del honest["faults"]
    harm = _run(honest)["harm"]
    assert harm["events"] == 0 and harm["unfair"]["events"] == 0
    assert harm["window_stats"]["recall-pending"]["closed_by_view_change"] == 0


def test_front_running_is_unfair_and_unnoticed_and_an_honest_primary_is_fair() -> None:
    summary = run_scenario(load_scenario(SCENARIOS / "consent-front-running.yaml")).summary
    harm = summary["harm"]
    assert summary["view_changes"] == 0 and harm["events"] == 0
    assert harm["unfair"]["by_kind"]["revocation-pending:ordered-first"] >= 1
    assert {w["closed_by"] for w in harm["windows"]} == {"normal-case"}
    honest = _raw("consent-front-running")
    del honest["faults"]
    assert _run(honest)["harm"]["unfair"]["events"] == 0


def _consent_race_with(*faults: dict[str, Any]) -> dict[str, Any]:
    raw = _raw("consent-race")
    raw["faults"] = list(faults)
    return _run(raw)


def test_false_replies_from_f_replicas_are_outvoted_and_from_f_plus_one_are_accepted() -> None:
    one = _consent_race_with({"at": "0s", "byzantine": "hospital-2", "behavior": "false-reply"})
    stats = one["harm"]["window_stats"]["false-reply"]
    assert stats["count"] >= 1 and stats["unfair"] == 0 and one["harm"]["events"] == 0
    assert {w["closed_by"] for w in one["harm"]["windows"] if w["kind"] == "false-reply"} == {
        "f+1 matching replies"}
    # Beyond the bound the detector must fire: two liars give a client f+1 matching lies.
    two = _consent_race_with(
        {"at": "0s", "byzantine": "hospital-2", "behavior": "false-reply"},
        {"at": "0s", "byzantine": "pharmacy-1", "behavior": "false-reply"})
    assert two["harm"]["by_kind"].get("false-reply-accepted", 0) >= 1 and not two["harm"]["ok"]


@pytest.mark.parametrize(("story", "lie", "harm_kind"), [
    ("insurance-claim", "paid", "claim-without-consent"),
    ("research-study", "released", "research-below-cohort")])
def test_f_plus_one_liars_make_a_client_accept_a_payment_or_a_release_and_f_cannot(
        story: str, lie: str, harm_kind: str) -> None:
    def run(*liars: str) -> dict[str, Any]:
        raw = _raw(story)
        raw["duration"] = "4s"  # the story runs from 3 s to under 4 s
        raw["faults"] = [{"at": "0s", "byzantine": node,
                          "behavior": {"false-reply": {"lies": [lie]}}} for node in liars]
        harm: dict[str, Any] = _run(raw)["harm"]
        return harm

    one = run("hospital-2")
    assert one["events"] == 0 and one["window_stats"]["false-reply"]["count"] >= 1
    assert {w["closed_by"] for w in one["windows"] if w["kind"] == "false-reply"} == {
        "f+1 matching replies"}
    two = run("hospital-2", "pharmacy-1")
    assert two["by_kind"].get(harm_kind, 0) >= 1 and not two["ok"]
    assert two["by_kind"][harm_kind] <= two["by_kind"]["false-reply-accepted"]

def test_delay_regulator_holds_regulator_work_just_under_the_timeout() -> None:
    honest = _consent_race_with()
    slow = _consent_race_with({"at": "0s", "byzantine": "hospital-1",
                               "behavior": {"delay-regulator": {"delay": "400ms"}}})
    assert slow["view_changes"] == 0 and slow["harm"]["events"] == 0
    inspector = slow["ledger"]["latency_ms_by_role"]["inspector"]
    assert inspector["max"] >= 400 > honest["ledger"]["latency_ms_by_role"]["inspector"]["max"]
    held = slow["harm"]["window_stats"]["regulator-pending"]
    assert held["max_duration_s"] >= 0.4 > honest["harm"]["window_stats"]["regulator-pending"][
        "max_duration_s"]
    assert held["closed_by_view_change"] == 0, "just under the timeout: PBFT never reacts"


@pytest.mark.parametrize("target", ["audit", "blocks", "state"])
def test_tampering_is_detected_at_the_next_checkpoint_and_repaired(target: str) -> None:
    raw = _raw("tamper-audit")
    raw["duration"] = "3s"
    raw["faults"] = [{"at": "2s", "tamper": "hospital-2", "target": target}]
    result = run_scenario(parse_scenario(raw, raw["name"]), trace=False)
    summary = result.summary
    (entry,) = summary["harm"]["tampering"]
    assert entry["target"] == target and entry["detected_by"] == "hospital-2"
    interval = raw["protocol"]["checkpoint_interval"]
    executed_at_tamper = max(r["seq"] for r in result.events if r["event"] == "execute"
                             and r["node"] == "hospital-2" and r["t"] <= 2 * 10**9)
    assert entry["detected_at_checkpoint"] <= executed_at_tamper + interval
    assert entry["repaired_at_s"] is not None and entry["final_state_agrees"]
    assert summary["safety"]["ok"] and summary["harm"]["events"] == 0


def test_untampered_replicas_report_no_tampering() -> None:
    raw = _raw("tamper-audit")
    raw["duration"], raw["faults"] = "1s", []
    assert _run(raw)["harm"]["tampering"] == []


# -- the schema ---------------------------------------------------------------------------------

BASE: dict[str, Any] = {"name": "t", "nodes": 4, "duration": "2s"}


@pytest.mark.parametrize(("fault", "app", "words"), [
    ({"at": "1s", "tamper": "hospital-1"}, "ledger", ["faults[0].target", "missing"]),
    ({"at": "1s", "tamper": "hospital-1", "target": "disk"}, "ledger",
     ["faults[0].target", "audit, blocks, state", "'disk'"]),
    ({"at": "1s", "tamper": "hospital-1", "target": "audit"}, "kv",
     ["faults[0].tamper", "workload.app: ledger"]),
    ({"at": "1s", "byzantine": "primary", "behavior": "censor-kind"}, "ledger",
     ["behavior", "needs kinds"]),
    ({"at": "1s", "byzantine": "primary", "behavior": {"censor-kind": {"kinds": ["RECALL_ISSU"]}}},
     "ledger", ["unknown transaction kind", "did you mean 'RECALL_ISSUE'"]),
    ({"at": "1s", "byzantine": "primary", "behavior": {"delay-regulator": {"roles": ["boss"]}}},
     "ledger", ["roles", "inspector"]),
    ({"at": "1s", "byzantine": "primary", "behavior": {"front-run-revoke": {"hold": "-1s"}}},
     "ledger", ["behavior"]),
    ({"at": "1s", "byzantine": "primary", "behavior": {"false-reply": {"rate": 1}}}, "ledger",
     ["no parameter 'rate'"]),
    ({"at": "1s", "byzantine": "primary", "behavior": {"false-reply": {"lies": ["refund"]}}},
     "ledger", ["lies", "permit, paid, released"]),
    ({"at": "1s", "byzantine": "primary", "behavior": {"false-reply": {"lies": []}}},
     "ledger", ["lies", "each once"]),
    ({"at": "1s", "byzantine": "primary", "behavior": "false-reply"}, "kv",
     ["faults[0].behavior", "workload.app: ledger"]),
])
def test_bad_ledger_faults_are_explained(fault: dict[str, Any], app: str,
                                         words: list[str]) -> None:
    raw = copy.deepcopy(BASE)
    raw["workload"] = {"app": app}
    raw["faults"] = [fault]
    with pytest.raises(ScenarioError) as info:
        parse_scenario(raw, "s.yaml")
    text = str(info.value)
    assert text.startswith("s.yaml: ")
    for word in words:
        assert word in text, text


def test_recall_news_is_checked() -> None:
    with pytest.raises(ScenarioError, match=r"workload\.recall_news: .*submitted, committed"):
        parse_scenario({**BASE, "workload": {"recall_news": "phone"}}, "s.yaml")


# -- the swarm, the figure and the table -----------------------------------------------------------

def test_fuzz_app_ledger_draws_the_ledger_and_leaves_default_draws_alone() -> None:
    from medbft.fuzz import draw_scenario
    from medbft.scenario import LEDGER_BEHAVIORS

    names = set()
    for seed in range(40):
        default = draw_scenario(seed, 4)
        ledger = draw_scenario(seed, 4, app="ledger")
        assert ledger["workload"]["app"] == "ledger" and ledger["workload"]["clients"] == 7
        assert [f["at"] for f in ledger["faults"]] == [f["at"] for f in default["faults"]]
        for fault in ledger["faults"]:
            if "byzantine" in fault:
                behavior = fault["behavior"]
                names.add(behavior if isinstance(behavior, str) else next(iter(behavior)))
        assert all(not isinstance(f.get("behavior"), str | dict) or
                   (f["behavior"] if isinstance(f["behavior"], str) else next(
                       iter(f["behavior"]))) not in LEDGER_BEHAVIORS for f in default["faults"])
        parse_scenario(ledger, "fuzz")
    assert names & set(LEDGER_BEHAVIORS), "half the Byzantine ledger seeds read the ledger"


def test_the_harm_figure_and_table_show_windows_and_counts(tmp_path: Path) -> None:
    from medbft.cli.tables import summary_table
    from medbft.views.harm_figures import _longest, draw

    summary = _consent_race_with({"at": "0s", "byzantine": "hospital-2",
                                  "behavior": "false-reply"})
    window = _longest(summary, "false-reply")
    assert window is not None and window["closed_by"] == "f+1 matching replies"
    assert _longest(summary, "recall-pending") is None
    (png,) = draw([("f liar", "false-reply", summary)], tmp_path / "harm")
    assert png.stat().st_size > 0
    rows = {row: value for row, value in zip(*(c._cells for c in summary_table(summary).columns),
                                             strict=True)}
    assert rows["harm (unfair orderings)"] == "0 (0)"
