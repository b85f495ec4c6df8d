"""The rules issue 16 added, each accepting and rejecting, and the invariants behind them
(docs/ledger.md#claims, #research, #biometrics, #cold-chain-aggregation-and-returns and
#adverse-event-signals): insurance claims under a payment consent, aggregate research under a
cohort minimum, biometric verification against a renewable reference, cases, returns,
cold-chain excursions and adverse-event signal reviews. Every block is checked against the
invariants as it lands (ledger_support.Harness); the last tests break a rule on purpose and
show that the invariant checker notices."""

from __future__ import annotations

import pytest
from ledger_support import Harness, epc, ev, pp, sha, sscc

from node.ledger import cases, claims, excursions, studies, trace
from node.ledger import partners as partner_rules
from node.ledger import rules as core_rules
from node.ledger.genesis import pseudonym_for

P1H1 = pp("patient-1", "hospital-1")
P1PH = pp("patient-1", "pharmacy-1")
PAY = {"actions": ("disclose",), "purposes": ("HPAYMT",)}
RESEARCH = {"actions": ("use",), "purposes": ("HRESCH",)}


def claim(h: Harness, claim_id: str = "cl-1", who: str = "clinician-1", patient: str = P1H1,
          records: tuple[str, ...] = ("r-1",), to: str = "ins-1", **extra: object) -> str:
    return h.tx(who, "CLAIM_SUBMIT", claim_id=claim_id, patient=patient, to=to,
                claim_type="professional", record_ids=list(records),
                claim_commitment=sha(claim_id), **extra)


def adjudicate(h: Harness, claim_id: str = "cl-1", decision: str = "approve",
               reason: str = "covered", who: str = "insurer-1") -> str:
    return h.tx(who, "CLAIM_ADJUDICATE", claim_id=claim_id, decision=decision,
                reason_code=reason)


def billed() -> Harness:
    h = Harness((("insurer-2", "insurer"),))
    assert h.anchor("clinician-1", "patient-1", "hospital-1", "r-1") == "ok"
    assert h.anchor("clinician-1", "patient-2", "hospital-1", "r-2") == "ok"
    return h


# == claims ==================================================================================

def test_a_claim_needs_a_payment_consent_naming_the_insurer() -> None:
    h = billed()
    assert claim(h) == "rejected:no-consent"
    assert h.grant("patient-1", "hospital-1", "ins-1", "c-11", purposes=("TREAT",),
                   actions=("disclose",)) == "ok"                      # wrong purpose
    assert h.grant("patient-1", "hospital-1", "ins-1", "c-12", purposes=("HPAYMT",)) == "ok"
    assert claim(h) == "rejected:no-consent"                           # access, not disclose
    assert h.grant("patient-1", "hospital-1", "ins-2", "c-2", **PAY) == "ok"
    assert claim(h) == "rejected:no-consent"                           # another insurer
    assert h.grant("patient-1", "hospital-1", "ins-1", "c-1", **PAY) == "ok"
    assert claim(h) == "ok"
    assert claims(h.ledger)[0]["consent_at_submission"] == "c-1"


def test_a_claim_bills_only_what_its_submitter_holds_for_that_patient_once() -> None:
    h = billed()
    assert h.grant("patient-1", "hospital-1", "ins-1", "c-1", **PAY) == "ok"
    assert claim(h, records=("r-9",)) == "rejected:unknown-record"
    assert claim(h, records=("r-2",)) == "rejected:record-not-of-patient"
    assert claim(h, who="clinician-2") == "rejected:not-custodian"
    assert claim(h, to="hospital-2") == "rejected:not-an-insurer"
    assert claim(h, to="ins-9").startswith("rejected:")                # not in the genesis
    assert claim(h, epcs=[epc(1)]) == "rejected:unknown-epc"
    assert claim(h) == "ok"
    assert claim(h) == "rejected:duplicate-claim"
    assert claim(h, "cl-2") == "rejected:already-claimed"


def test_payment_checks_the_consent_again_at_adjudication() -> None:
    h = billed()
    assert h.grant("patient-1", "hospital-1", "role:insurer", "c-1", **PAY) == "ok"
    assert claim(h) == "ok"
    assert adjudicate(h, who="insurer-2") == "rejected:not-payer"
    assert adjudicate(h, reason="not-covered") == "rejected:bad-field:reason_code"
    assert adjudicate(h, decision="deny", reason="covered") == "rejected:bad-field:reason_code"
    assert h.tx("patient-1", "CONSENT_REVOKE", consent_id="c-1") == "ok"
    assert adjudicate(h) == "rejected:no-consent"                      # revoked: no payment
    assert adjudicate(h, decision="deny", reason="no-consent") == "ok:denied"
    assert adjudicate(h) == "rejected:claim-closed"
    assert claims(h.ledger)[0]["status"] == "denied"
    assert h.grant("patient-1", "hospital-1", "ins-1", "c-2", **PAY) == "ok"
    assert claim(h, "cl-2") == "ok"                                    # denied items re-billed
    assert adjudicate(h, "cl-2") == "ok:paid"
    paid = claims(h.ledger, "cl-2")[0]
    assert paid["consent_at_payment"] == "c-2" and paid["consent_in_force_at_payment"]


def test_revocation_and_payment_in_one_block_are_decided_by_their_order() -> None:
    for revoke_first in (True, False):
        h = billed()
        assert h.grant("patient-1", "hospital-1", "ins-1", "c-1", **PAY) == "ok"
        assert claim(h) == "ok"
        revoke = h.request("patient-1", "CONSENT_REVOKE", consent_id="c-1")
        pay = h.request("insurer-1", "CLAIM_ADJUDICATE", claim_id="cl-1", decision="approve",
                        reason_code="covered")
        results = h.block(*((revoke, pay) if revoke_first else (pay, revoke)))
        assert ("rejected:no-consent" in results) == revoke_first


def test_a_pharmacy_claim_bills_its_dispensations() -> None:
    h = billed()
    h.to_pharmacy([1, 2])
    assert h.tx("pharmacist-1", "EPCIS_DISPENSE", epcs=[epc(1)], event_hash=ev("d")) == "ok"
    assert h.anchor("pharmacist-1", "patient-1", "pharmacy-1", "r-3",
                    "MedicationDispense") == "ok"
    assert h.grant("patient-1", "pharmacy-1", "ins-1", "c-1", **PAY) == "ok"
    assert claim(h, who="pharmacist-1", patient=P1PH, records=("r-3",), epcs=[epc(2)]) \
        == "rejected:not-dispensed"
    assert claim(h, who="pharmacist-1", patient=P1PH, records=("r-3",), epcs=[epc(1)],
                 amount=1250) == "ok"
    assert claims(h.ledger)[0]["epcs"] == [epc(1)] and claims(h.ledger)[0]["amount"] == 1250


# == research ================================================================================

COHORT = tuple((f"patient-{k}", "patient") for k in range(3, 9))      # patients 3..8


def study(h: Harness, minimum: int = 5, classes: tuple[str, ...] = ("Observation",),
          study_id: str = "st-1", researcher: str = "researcher-1") -> str:
    return h.tx("ethics_board-1", "STUDY_APPROVE", study_id=study_id, researcher=researcher,
                protocol_commitment=sha(study_id), data_classes=list(classes),
                min_cohort=minimum)


def query(h: Harness, query_id: str, measure: str = "patients", who: str = "researcher-1",
          resource: str = "Observation", study_id: str = "st-1") -> str:
    return h.tx(who, "RESEARCH_QUERY", query_id=query_id, study_id=study_id,
                resource_type=resource, measure=measure)


def test_an_ethics_board_approves_a_study_for_a_researcher() -> None:
    h = Harness()
    assert study(h, minimum=4) == "rejected:cohort-minimum-too-low"
    assert study(h, researcher="clinician-1") == "rejected:unknown-researcher"
    assert study(h) == "ok"
    assert study(h) == "rejected:duplicate-study"
    assert studies(h.ledger)[0]["min_cohort"] == 5


def test_research_answers_count_consenting_patients_and_are_suppressed_below_the_minimum(
        ) -> None:
    h = Harness((*COHORT, ("researcher-2", "researcher")))
    assert study(h) == "ok"
    for k in range(3, 9):
        assert h.anchor("clinician-1", f"patient-{k}", "hospital-1", f"r-{k}") == "ok"
    assert h.anchor("clinician-2", "patient-3", "hospital-2", "r-30") == "ok"  # 2nd pseudonym
    assert h.anchor("clinician-1", "patient-3", "hospital-1", "r-31") == "ok"  # 2nd record
    for k in range(3, 7):                                               # four consent
        assert h.grant(f"patient-{k}", "hospital-1", "res-1", f"c-{k}", **RESEARCH) == "ok"
    assert h.grant("patient-7", "hospital-1", "res-1", "c-7", purposes=("TREAT",),
                   actions=("use",)) == "ok"                            # not for research
    assert query(h, "q-1") == "ok:suppressed"                           # 4 < 5
    assert h.grant("patient-3", "hospital-2", "role:researcher", "c-30", **RESEARCH) == "ok"
    assert query(h, "q-2") == "ok:suppressed"                           # patient-3 counted once
    assert h.grant("patient-8", "hospital-1", "researcher-1", "c-8", **RESEARCH) == "ok"
    assert query(h, "q-3") == "ok:aggregate=5"
    assert query(h, "q-4", measure="records") == "ok:aggregate=7"       # r-3, r-30, r-31, 4..6, 8
    assert h.tx("patient-8", "CONSENT_REVOKE", consent_id="c-8") == "ok"
    assert query(h, "q-5") == "ok:suppressed"
    assert query(h, "q-5") == "rejected:duplicate-query"
    assert query(h, "q-6", who="researcher-2") == "rejected:not-study-researcher"
    assert query(h, "q-7", resource="Immunization") == "rejected:outside-protocol"
    assert query(h, "q-8", study_id="st-9") == "rejected:unknown-study"
    answers = studies(h.ledger)[0]["answers"]
    assert [(a["cohort"], a["released"]) for a in answers] == [
        (4, False), (4, False), (5, True), (5, True), (4, False)]
    audit = [e for e in h.ledger.state.audit.entries
             if e[3] == "RESEARCH_QUERY" and e[5] != "rejected"]
    assert [e[5] for e in audit] == ["suppressed", "suppressed", "released", "released",
                                     "suppressed"]


# == biometrics ==============================================================================

def enrol(h: Harness, tag: str, version: int, subject: str = P1H1) -> str:
    return h.tx("patient-1", "BIOMETRIC_ENROLL", subject=subject, pi_commitment=sha("pi" + tag),
                template_version=version, ad_ref_hash=sha("ad" + tag))


def verify(h: Harness, tag: str, version: int, who: str = "clinician-1",
           subject: str = P1H1) -> str:
    return h.tx(who, "BIOMETRIC_VERIFY", subject=subject, pi_commitment=sha("pi" + tag),
                template_version=version, ad_ref_hash=sha("ad" + tag))


def test_biometric_verification_is_audited_and_renewal_retires_the_old_reference() -> None:
    h = Harness()
    assert verify(h, "a", 1) == "rejected:not-enrolled"
    assert enrol(h, "a", 1) == "ok"
    assert verify(h, "a", 1) == "verified:match"
    assert verify(h, "x", 1) == "verified:no-match"                     # an impostor's PI*
    assert verify(h, "a", 1, who="pharmacist-1") == "rejected:not-custodian"
    assert verify(h, "a", 2) == "rejected:unknown-template-version"
    assert h.tx("patient-1", "BIOMETRIC_REVOKE", subject=P1H1) == "ok"
    assert verify(h, "a", 1) == "rejected:reference-revoked"
    assert enrol(h, "a", 1) == "rejected:stale-template-version"
    assert enrol(h, "a", 2) == "rejected:pi-reused"
    assert enrol(h, "b", 2) == "ok"                                     # renewed
    assert verify(h, "a", 1) == "rejected:stale-template-version"       # the old reference
    assert verify(h, "a", 2) == "verified:no-match"                     # the old PI, new version
    assert verify(h, "b", 2) == "verified:match"
    audit = [e for e in h.ledger.state.audit.entries
             if e[3] == "BIOMETRIC_VERIFY" and e[5] != "rejected"]
    assert [(e[5], e[6]) for e in audit] == [("match", "template-v1"), ("no-match", "template-v1"),
                                             ("no-match", "template-v2"), ("match", "template-v2")]
    assert all(e[4] == P1H1 for e in audit)


# == cases, returns, cold chain ==============================================================

def test_a_case_moves_its_units_until_it_is_unpacked() -> None:
    h = Harness()
    assert h.commission([1, 2, 3, 4]) == "ok"
    assert h.ledger.admissible(b'{"epcs":["' + epc(1).encode() + b'"],"event_hash":"'
                               + ev("p").encode() + b'","kind":"EPCIS_AGGREGATE","parent":'
                               b'"urn:epc:id:sscc:0614141.1"}') == "bad-field:parent"
    pack = {"parent": sscc(7), "epcs": [epc(1), epc(2), epc(3)], "event_hash": ev("p")}
    assert h.tx("distributor-1", "EPCIS_AGGREGATE", **pack) == "rejected:not-custodian"
    assert h.tx("manufacturer-1", "EPCIS_AGGREGATE", **pack) == "ok"
    assert h.tx("manufacturer-1", "EPCIS_AGGREGATE", **{**pack, "epcs": [epc(4)]}) \
        == "rejected:sscc-reused"
    assert h.ship("manufacturer-1", [1], "dist-1") == "rejected:packed-in-case"
    assert h.tx("manufacturer-1", "EPCIS_SHIP", parents=[sscc(8)], to="dist-1",
                event_hash=ev("s")) == "rejected:unknown-case"
    assert h.tx("manufacturer-1", "EPCIS_SHIP", parents=[sscc(7)], epcs=[epc(4)], to="dist-1",
                event_hash=ev("s")) == "ok"
    assert {trace(h.ledger, epc(k))["disposition"] for k in (1, 2, 3, 4)} == {"in_transit"}
    unpack = {"parent": sscc(7), "event_hash": ev("u")}
    assert h.tx("manufacturer-1", "EPCIS_DISAGGREGATE", **unpack) \
        == "rejected:bad-lifecycle:in_transit"
    assert h.tx("distributor-1", "EPCIS_DISAGGREGATE", **unpack) == "rejected:not-custodian"
    assert h.tx("distributor-1", "EPCIS_DISAGGREGATE", **{**unpack, "parent": sscc(8)}) \
        == "rejected:unknown-case"
    assert h.tx("distributor-1", "EPCIS_RECEIVE", parents=[sscc(7)], event_hash=ev("r")) == "ok"
    assert h.receive("distributor-1", [4]) == "ok"
    assert h.tx("distributor-1", "EPCIS_DESTROY", epcs=[epc(2)], event_hash=ev("x"),
                reason="damaged") == "rejected:packed-in-case"
    assert cases(h.ledger)[0]["where"] == [{"custodian": "dist-1",
                                            "disposition": "in_progress", "to": None}]
    assert trace(h.ledger, epc(2))["in_case"] == sscc(7)
    assert h.tx("distributor-1", "EPCIS_DISAGGREGATE", parent=sscc(7), event_hash=ev("u")) \
        == "ok"
    assert h.ship("distributor-1", [2], "pharmacy-1") == "ok"
    assert [e["event"] for e in trace(h.ledger, epc(2))["events"]] == [
        "EPCIS_COMMISSION", "EPCIS_AGGREGATE", "EPCIS_SHIP", "EPCIS_RECEIVE",
        "EPCIS_DISAGGREGATE", "EPCIS_SHIP"]
    assert cases(h.ledger)[0]["status"] == "unpacked"


def test_returns_go_upstream_even_for_recalled_units() -> None:
    h = Harness()
    h.to_pharmacy([1, 2, 3])
    back = {"event_hash": ev("b"), "reason": "recalled"}
    assert h.tx("pharmacist-1", "EPCIS_RETURN", epcs=[epc(1)], to="hospital-1", **back) \
        == "rejected:not-upstream"
    assert h.tx("manufacturer-1", "RECALL_ISSUE", recall_id="rc-1", gtin="00614141000012",
                lots=["LOT-A1"], reason="potency", **{"class": "II"}) == "ok"
    assert h.ship("pharmacist-1", [1], "dist-1") == "rejected:recalled"
    assert h.tx("pharmacist-1", "EPCIS_RETURN", epcs=[epc(1), epc(2)], to="dist-1", **back) \
        == "ok"
    assert trace(h.ledger, epc(1))["events"][-1]["to"] == "dist-1"
    assert h.tx("pharmacist-1", "EPCIS_RETURN", epcs=[epc(1)], to="dist-1", **back) \
        == "rejected:bad-lifecycle:returned"
    assert h.tx("distributor-1", "RECALL_ACK", recall_id="rc-1", on_hand=2) == "ok"
    assert h.receive("distributor-1", [1, 2]) == "ok"
    assert h.tx("distributor-1", "EPCIS_RETURN", epcs=[epc(1)], to="mfr-1", **back) == "ok"
    assert h.receive("manufacturer-1", [1]) == "ok"
    assert trace(h.ledger, epc(1))["custodian"] == "mfr-1"


def test_a_cold_chain_excursion_quarantines_the_lot() -> None:
    h = Harness()
    assert h.commission([1, 2, 3], lot="LOT-C", temp_min="2.0", temp_max="8.0") == "ok"
    assert h.commission([4], lot="LOT-C", temp_min="2.0", temp_max="9.0") \
        == "rejected:lot-mismatch"
    assert h.commission([4], lot="LOT-C") == "rejected:lot-mismatch"
    assert h.commission([5], lot="LOT-D", temp_min="2.0") == "rejected:bad-field:temp_max"
    assert h.commission([5], lot="LOT-D", temp_min="8.0", temp_max="-2.5") \
        == "rejected:bad-field:temp_max"
    assert h.commission([5], lot="LOT-D", temp_min="-25.0", temp_max="-15.0") == "ok"
    assert h.commission([6], lot="LOT-N") == "ok"
    for serial in (1, 2):
        assert h.ship("manufacturer-1", [serial], "pharmacy-1") == "ok"
        assert h.receive("pharmacist-1", [serial]) == "ok"
    sensor = {"event_hash": ev("t")}
    assert h.tx("pharmacist-1", "COLD_CHAIN_EXCURSION", lot="LOT-C", reading="5.5",
                **sensor) == "rejected:within-range"
    assert h.tx("pharmacist-1", "COLD_CHAIN_EXCURSION", lot="LOT-N", reading="25.0",
                **sensor) == "rejected:no-storage-range"
    assert h.tx("pharmacist-1", "COLD_CHAIN_EXCURSION", lot="LOT-D", reading="-5.0",
                **sensor) == "rejected:not-holding-lot"
    assert h.tx("manufacturer-1", "COLD_CHAIN_EXCURSION", lot="LOT-D", reading="-5.0",
                **sensor) == "ok:quarantined"
    assert h.tx("pharmacist-1", "COLD_CHAIN_EXCURSION", lot="LOT-C", reading="11.2",
                **sensor) == "ok:quarantined"
    assert h.tx("pharmacist-1", "COLD_CHAIN_EXCURSION", lot="LOT-C", reading="-0.5",
                **sensor) == "ok:already-quarantined"
    assert h.tx("pharmacist-1", "EPCIS_DISPENSE", epcs=[epc(1)], event_hash=ev("d")) \
        == "rejected:quarantined"
    assert h.ship("manufacturer-1", [3], "pharmacy-1") == "rejected:quarantined"
    found = excursions(h.ledger, "LOT-C")
    assert [(x["reading_c"], x["range_c"], x["quarantined_lot"]) for x in found] == [
        (11.2, [2.0, 8.0], True), (-0.5, [2.0, 8.0], False)]
    assert found[0]["lot_quarantined_now"]
    assert h.tx("inspector-1", "SUSPECT_CLEAR", lot="LOT-C") == "ok"   # regulator clearance
    assert h.tx("pharmacist-1", "EPCIS_DISPENSE", epcs=[epc(1)], event_hash=ev("d")) == "ok"
    assert not excursions(h.ledger, "LOT-C")[0]["lot_quarantined_now"]


def test_a_serious_adverse_event_opens_one_regulator_review_per_lot() -> None:
    h = Harness()
    assert h.commission([1]) == "ok"
    report = {"lot": "LOT-A1", "report_commitment": sha("ae")}
    assert h.tx("clinician-1", "ADVERSE_EVENT_REPORT", severity="moderate", **report) == "ok"
    opened = h.tx("clinician-1", "ADVERSE_EVENT_REPORT", severity="severe", **report)
    assert opened.startswith("ok:review:sig-")
    assert h.tx("clinician-2", "ADVERSE_EVENT_REPORT", severity="death", **report) == "ok"
    review = opened.rsplit(":", 1)[1]
    close = {"review_id": review, "outcome": "recall-requested"}
    assert h.tx("inspector-1", "AE_REVIEW_CLOSE", **{**close, "review_id": "sig-9-9"}) \
        == "rejected:unknown-review"
    assert h.tx("inspector-1", "AE_REVIEW_CLOSE", **close) == "ok"
    assert h.tx("inspector-1", "AE_REVIEW_CLOSE", **close) == "rejected:review-closed"
    assert h.tx("clinician-1", "ADVERSE_EVENT_REPORT", severity="severe", **report) \
        .startswith("ok:review:sig-")                                   # a new review


def test_new_tables_survive_a_snapshot_and_stay_out_of_it_until_used() -> None:
    h = Harness()
    assert h.commission([1]) == "ok"
    assert b'"claims"' not in h.ledger.snapshot() and b'"cases"' not in h.ledger.snapshot()
    assert h.tx("manufacturer-1", "EPCIS_AGGREGATE", parent=sscc(1), epcs=[epc(1)],
                event_hash=ev("p")) == "ok"
    snap = h.ledger.snapshot()
    assert b'"cases"' in snap and b'"claims"' not in snap
    other = Harness()
    other.ledger.restore(snap)
    assert other.ledger.digest() == h.ledger.digest() and other.ledger.snapshot() == snap


# == the invariant checker notices broken rules ==============================================

def test_invariant_8_catches_a_claim_paid_without_consent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    h = billed()
    monkeypatch.setattr(partner_rules, "consent_in_force", lambda *a, **k: "c-none")
    assert claim(h) == "ok"
    with pytest.raises(AssertionError, match="claim: cl-1 paid without"):
        adjudicate(h)


def test_invariant_9_catches_an_answer_released_below_the_minimum(
        monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    assert study(h) == "ok"
    monkeypatch.setattr(partner_rules, "released", lambda size, minimum: True)
    with pytest.raises(AssertionError, match="released below the cohort minimum"):
        query(h, "q-1")


def test_invariant_10_catches_a_packed_unit_moving_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    assert h.commission([1, 2]) == "ok"
    assert h.tx("manufacturer-1", "EPCIS_AGGREGATE", parent=sscc(1), epcs=[epc(1), epc(2)],
                event_hash=ev("p")) == "ok"
    monkeypatch.setattr(core_rules, "_moving",
                        lambda ctx: core_rules._units(ctx, ctx.tx["epcs"]))
    with pytest.raises(AssertionError, match="do not move together"):
        h.ship("manufacturer-1", [1], "dist-1")


def test_the_signal_invariant_catches_a_serious_report_without_review(
        monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    assert h.commission([1]) == "ok"
    monkeypatch.setattr(core_rules, "SERIOUS", frozenset())
    with pytest.raises(AssertionError, match="opened no review"):
        h.tx("clinician-1", "ADVERSE_EVENT_REPORT", lot="LOT-A1", severity="death",
             report_commitment=sha("ae"))


def test_pseudonyms_of_new_partners_never_exist() -> None:
    """Insurers, researchers and ethics boards are organisations, not patients' custodians."""
    g = Harness().ledger.genesis
    assert {g.orgs[o] for o in ("ins-1", "res-1", "irb-1")} == {"insurer", "research", "ethics"}
    assert pseudonym_for("patient-1", "ins-1") not in g.pseudonyms
