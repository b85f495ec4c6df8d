"""Every cell of the permission matrix (docs/ledger.md#permission-matrix): each role submits
each kind, in a world where the transaction would succeed if the role were allowed. Allowed
cells must succeed; denied cells must be rejected as `role-not-permitted` (an ACCESS_REQUEST
from a denied role is an audited `deny:role-not-permitted` decision). The conditions behind the
"own" and "C" cells are tested in test_ledger_rules.py."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from ledger_support import GTIN, ROLE_ACTOR, Harness, epc, ev, pp, sha, sscc

from node.ledger import KINDS, PERMISSIONS, audit_entries
from node.ledger.roles import LEDGER_ROLES
from node.ledger.txs import gtin_check_digit

P1H1 = pp("patient-1", "hospital-1")
ORG_UNIT = {"mfr-1": 10, "dist-1": 20, "pharmacy-1": 30, "hospital-1": 40}
ORG_INBOUND = {"mfr-1": 21, "dist-1": 11, "pharmacy-1": 31, "hospital-1": 41}
ROLE_ORG = {"manufacturer": "mfr-1", "distributor": "dist-1", "pharmacist": "pharmacy-1",
            "clinician": "hospital-1", "patient": "hospital-1", "inspector": "mfr-1",
            "auditor": "mfr-1", "insurer": "ins-1", "researcher": "res-1",
            "ethics_board": "irb-1"}
P1PH = pp("patient-1", "pharmacy-1")
#: The case (SSCC) each custodian packed in the world, and the biometric reference each
#: custodian verifies against: (pseudonym, PI tag, version).
ORG_CASE = {"mfr-1": 1, "dist-1": 2, "pharmacy-1": 3, "hospital-1": 4}
COLD = {"temp_min": "2.0", "temp_max": "8.0"}


@cache
def world() -> bytes:
    """A ledger where every kind has something to act on; returns its snapshot."""
    h = Harness()
    assert h.commission([10, 11, 12, 20, 21, 22, 30, 31, 32, 40, 41, 42], **COLD) == "ok"
    assert h.commission([90, 91], lot="LOT-R") == "ok"
    assert h.commission([95], lot="LOT-S") == "ok"
    for org, who in (("dist-1", "distributor-1"), ("pharmacy-1", "pharmacist-1"),
                     ("hospital-1", "clinician-1")):
        base = ORG_UNIT[org]
        assert h.ship("manufacturer-1", [base, base + 1, base + 2], org) == "ok"
        assert h.receive(who, [base, base + 1, base + 2]) == "ok"
    assert h.ship("distributor-1", [21], "mfr-1") == "ok"          # a return, in transit
    for org in ("dist-1", "pharmacy-1", "hospital-1"):             # one more unit in transit
        src = "manufacturer-1"
        serial = ORG_INBOUND[org]
        if org != "dist-1":
            holder = {"pharmacy-1": "pharmacist-1", "hospital-1": "clinician-1"}[org]
            assert h.ship(holder, [serial], "dist-1" if org != "dist-1" else "mfr-1") == "ok"
            assert h.receive("distributor-1", [serial]) == "ok"
            src = "distributor-1"
        assert h.ship(src, [serial], org) == "ok"
    assert h.ship("manufacturer-1", [90], "pharmacy-1") == "ok"
    assert h.tx("inspector-1", "RECALL_ISSUE", recall_id="recall-90", gtin=GTIN,
                lots=["LOT-R"], reason="contamination", **{"class": "II"}) == "ok"
    assert h.tx("inspector-1", "SUSPECT_FLAG", lot="LOT-S", basis="inspection") == "ok"
    assert h.tx("inspector-1", "ILLEGITIMATE_NOTIFY", incident_id="inc-90", lot="LOT-S",
                classification="diverted") == "ok"
    assert h.anchor("clinician-1", "patient-1", "hospital-1", "r-91") == "ok"
    assert h.anchor("pharmacist-1", "patient-1", "pharmacy-1", "r-92",
                    "MedicationDispense") == "ok"
    assert h.grant("patient-1", "hospital-1", "pharmacy-1", "c-89") == "ok"
    assert h.tx("clinician-1", "BREAK_GLASS", patient=P1H1,
                reason_code="ETREAT").startswith("permit:break-glass:")
    assert h.tx("inspector-1", "ORG_SUSPEND", org="hospital-2",
                reason="compliance-investigation") == "ok"
    assert h.tx("patient-1", "BIOMETRIC_ENROLL", subject=P1H1, pi_commitment=sha("pi1"),
                template_version=1, ad_ref_hash=sha("ad1")) == "ok"
    assert h.tx("patient-1", "BIOMETRIC_REVOKE", subject=P1H1) == "ok"
    # issue 16: a verified reference at the pharmacy, payment and research consents, a
    # claim to adjudicate, an approved study, a packed case per custodian, a signal review
    assert h.tx("patient-1", "BIOMETRIC_ENROLL", subject=P1PH, pi_commitment=sha("piP"),
                template_version=1, ad_ref_hash=sha("adP")) == "ok"
    assert h.grant("patient-1", "hospital-1", "ins-1", "c-80", actions=("disclose",),
                   purposes=("HPAYMT",)) == "ok"
    assert h.grant("patient-1", "pharmacy-1", "role:insurer", "c-81", actions=("disclose",),
                   purposes=("HPAYMT",)) == "ok"
    assert h.anchor("clinician-1", "patient-1", "hospital-1", "r-94") == "ok"
    assert h.tx("clinician-1", "CLAIM_SUBMIT", claim_id="cl-80", patient=P1H1, to="ins-1",
                claim_type="professional", record_ids=["r-94"],
                claim_commitment=sha("cl-80")) == "ok"
    assert h.tx("ethics_board-1", "STUDY_APPROVE", study_id="st-80", researcher="researcher-1",
                protocol_commitment=sha("st-80"), data_classes=["Observation"],
                min_cohort=5) == "ok"
    for org, who in (("mfr-1", "manufacturer-1"), ("dist-1", "distributor-1"),
                     ("pharmacy-1", "pharmacist-1"), ("hospital-1", "clinician-1")):
        assert h.tx(who, "EPCIS_AGGREGATE", parent=sscc(ORG_CASE[org]),
                    epcs=[epc(ORG_UNIT[org] + 2)], event_hash=ev(f"pack{org}")) == "ok"
    assert h.tx("clinician-1", "ADVERSE_EVENT_REPORT", lot="LOT-A1", severity="severe",
                report_commitment=sha("ae-s")).startswith("ok:review:sig-")
    return h.ledger.snapshot()


def body(kind: str, role: str) -> dict[str, Any]:
    """A transaction of `kind` that succeeds when `role` (acting for its org) may submit it."""
    org = ROLE_ORG[role]
    unit = epc(ORG_UNIT.get(org, 10))
    record = "r-92" if org == "pharmacy-1" else "r-91"
    patient = pp("patient-1", org) if org in ("pharmacy-1", "hospital-1") else P1H1
    new_gtin_body = "0061414100002"
    return {
        "CONSENT_GRANT": {"consent_id": "c-90", "patient": P1H1, "grantee": "hospital-2",
                              "actions": ["access"], "purposes": ["TREAT"],
                              "period": {"start": "2025-01-01T00:00:00Z",
                                      "end": "2026-01-01T00:00:00Z"},
                              "doc_commitment": sha("c-90")},
        "CONSENT_REVOKE": {"consent_id": "c-89"},
        "ACCESS_REQUEST": dict(patient=P1H1, purpose="TREAT", record_id="r-91",
                               **({"scope": "metadata"} if role == "inspector" else {})),
        "BREAK_GLASS": {"patient": P1H1, "reason_code": "ETREAT"},
        "BREAK_GLASS_REVIEW": {"review_id": review_id(), "outcome": "justified"},
        "RECORD_ANCHOR": {"record_id": "r-93", "patient": patient,
                              "resource_type": "MedicationDispense" if role == "pharmacist"
                              else "Observation", "commitment": sha("r-93"),
                              "fhir_version": "4.0.1"},
        "RECORD_AMEND": {"record_id": record, "prev_commitment": sha(record),
                             "new_commitment": sha(record + "v2")},
        "GTIN_REGISTER": {"gtin": new_gtin_body + gtin_check_digit(new_gtin_body)},
        "EPCIS_COMMISSION": {"gtin": GTIN, "epcs": [epc(500)], "lot": "LOT-A1",
                             "expiry": "2026-12-31", "event_hash": ev("new"), **COLD},
        "EPCIS_SHIP": {"epcs": [unit], "to": "hospital-1" if org == "pharmacy-1" else "pharmacy-1",
                           "event_hash": ev("ship")},
        "EPCIS_RECEIVE": {"epcs": [epc(ORG_INBOUND.get(org, 21))], "event_hash": ev("recv")},
        "EPCIS_DISPENSE": {"epcs": [unit], "event_hash": ev("disp")},
        "EPCIS_DESTROY": {"epcs": [unit], "event_hash": ev("dest"), "reason": "damaged"},
        "PRODUCT_VERIFY": {"epc": unit, "lot": "LOT-A1", "expiry": "2026-12-31"},
        "IMMUNIZATION_ADMINISTER": {"record_id": "imm-93", "patient": patient, "epc": unit,
                                        "vaccine_code": "140", "commitment": sha("imm")},
        "ADVERSE_EVENT_REPORT": {"lot": "LOT-A1", "severity": "mild", "patient": P1H1,
                                     "report_commitment": sha("ae")},
        "SUSPECT_FLAG": {"lot": "LOT-A1", "basis": "inspection"},
        "SUSPECT_CLEAR": {"lot": "LOT-S"},
        "ILLEGITIMATE_NOTIFY": {"incident_id": "inc-91", "lot": "LOT-S",
                                    "classification": "counterfeit"},
        "NOTIFICATION_TERMINATE": {"incident_id": "inc-90"},
        "RECALL_ISSUE": dict(recall_id="recall-91", gtin=GTIN, lots=["LOT-A1"],
                             reason="contamination", **{"class": "I"}),
        "RECALL_ACK": {"recall_id": "recall-90", "on_hand": 0},
        "RECALL_CLOSE": {"recall_id": "recall-90"},
        "ORG_SUSPEND": {"org": "dist-1", "reason": "license-revoked"},
        "ORG_REINSTATE": {"org": "hospital-2"},
        "BIOMETRIC_ENROLL": {"subject": P1H1, "pi_commitment": sha("pi2"), "template_version": 2,
                                 "ad_ref_hash": sha("ad2")},
        "BIOMETRIC_REVOKE": {"subject": P1H1},
        "BIOMETRIC_VERIFY": {"subject": patient, "template_version": 3 if patient == P1H1 else 1,
                             "pi_commitment": sha("pi3" if patient == P1H1 else "piP"),
                             "ad_ref_hash": sha("ad3" if patient == P1H1 else "adP")},
        "CLAIM_SUBMIT": {"claim_id": "cl-90", "patient": patient, "to": "ins-1",
                         "claim_type": "pharmacy" if role == "pharmacist" else "professional",
                         "record_ids": [record], "claim_commitment": sha("cl-90")},
        "CLAIM_ADJUDICATE": {"claim_id": "cl-80", "decision": "approve",
                             "reason_code": "covered"},
        "STUDY_APPROVE": {"study_id": "st-90", "researcher": "researcher-1",
                          "protocol_commitment": sha("st-90"), "data_classes": ["Observation"],
                          "min_cohort": 11},
        "RESEARCH_QUERY": {"query_id": "q-90", "study_id": "st-80",
                           "resource_type": "Observation", "measure": "patients"},
        "EPCIS_AGGREGATE": {"parent": sscc(90), "epcs": [unit], "event_hash": ev("pack")},
        "EPCIS_DISAGGREGATE": {"parent": sscc(ORG_CASE.get(org, 1)),
                               "event_hash": ev("unpack")},
        "EPCIS_RETURN": {"epcs": [unit], "to": "mfr-1", "event_hash": ev("return"),
                         "reason": "damaged"},
        "COLD_CHAIN_EXCURSION": {"lot": "LOT-A1", "reading": "12.5",
                                 "event_hash": ev("sensor")},
        "AE_REVIEW_CLOSE": {"review_id": signal_id(), "outcome": "monitoring"},
    }[kind]


@cache
def review_id() -> str:
    h = Harness()
    h.ledger.restore(world())
    return next(iter(h.ledger.state.tables["reviews"]))


@cache
def signal_id() -> str:
    h = Harness()
    h.ledger.restore(world())
    return next(iter(h.ledger.state.tables["signals"]))


def fresh() -> Harness:
    h = Harness()
    h.ledger.restore(world())
    h.checked.checker.reset()
    h.checked.checker.after_block()
    h.ts = h.ledger.state.blocks.entries[-1][2]
    h.seq = len(h.ledger.state.block_hashes)
    return h


CELLS = [(kind, role) for kind in KINDS for role in ROLE_ACTOR]


def test_matrix_covers_every_kind_and_role() -> None:
    assert len(CELLS) == len(KINDS) * len(LEDGER_ROLES) == 37 * 10
    assert set(PERMISSIONS) == set(KINDS) and set(ROLE_ACTOR) == set(LEDGER_ROLES)


@pytest.mark.parametrize(("kind", "role"), CELLS, ids=[f"{k}-{r}" for k, r in CELLS])
def test_permission_matrix_cell(kind: str, role: str) -> None:
    h = fresh()
    if kind in ("BIOMETRIC_REVOKE", "BIOMETRIC_VERIFY"):  # need an active enrolment first
        assert h.tx("patient-1", "BIOMETRIC_ENROLL", subject=P1H1, pi_commitment=sha("pi3"),
                    template_version=3, ad_ref_hash=sha("ad3")) == "ok"
    result = h.tx(ROLE_ACTOR[role], kind, **body(kind, role))
    if role in PERMISSIONS[kind]:
        assert result.split(":")[0] in ("ok", "permit", "verified"), (kind, role, result)
    elif kind == "ACCESS_REQUEST":
        assert result == "deny:role-not-permitted"
    else:
        assert result == "rejected:role-not-permitted", (kind, role, result)


AUDIT_ROWS_SEEN = {"auditor": 4, "inspector": 4, "clinician": 2, "distributor": 1,
                   "manufacturer": 1, "patient": 3, "pharmacist": 0, "insurer": 0,
                   "researcher": 0, "ethics_board": 0}


@pytest.mark.parametrize("role", sorted(ROLE_ACTOR))
def test_read_audit_log_row(role: str) -> None:
    """Regulator and auditor read the whole audit log; everyone else only their own entries."""
    h = fresh()
    h.tx("manufacturer-1", "ACCESS_REQUEST", patient=P1H1, purpose="TREAT")   # deny, audited
    h.tx("clinician-1", "ACCESS_REQUEST", patient=P1H1, purpose="TREAT")      # permit
    h.tx("distributor-1", "RECALL_CLOSE", recall_id="recall-90")                 # rejected
    who = ROLE_ACTOR[role]
    seen = audit_entries(h.ledger, who)
    everything = len(h.ledger.state.audit.entries)
    # Four entries: the denied and the permitted access, the clinician's read of the record,
    # the rejected recall. The patient sees the three about them; the pharmacist did nothing.
    assert everything == 4
    assert len(seen) == AUDIT_ROWS_SEEN[role]
    if role not in ("inspector", "auditor"):
        for entry in seen:
            assert entry["actor"] == who or (role == "patient" and entry["target"].startswith(
                "pp:") and entry["target"] in h.ledger.genesis.pseudonyms_of(who).values())
