"""Every cell of the permission matrix (docs/ledger.md#permission-matrix): each role submits
each kind, in a world where the transaction would succeed if the role were allowed. Allowed
cells must succeed; denied cells must be rejected as `role-not-permitted` (an ACCESS_REQUEST
from a denied role is an audited `deny:role-not-permitted` decision). The conditions behind the
"own" and "C" cells are tested in test_ledger_rules.py."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from ledger_support import GTIN, ROLE_ACTOR, Harness, epc, ev, pp, sha

from node.ledger import KINDS, PERMISSIONS, audit_entries
from node.ledger.txs import gtin_check_digit

P1H1 = pp("patient-1", "hospital-1")
ORG_UNIT = {"mfr-1": 10, "dist-1": 20, "pharmacy-1": 30, "hospital-1": 40}
ORG_INBOUND = {"mfr-1": 21, "dist-1": 11, "pharmacy-1": 31, "hospital-1": 41}
ROLE_ORG = {"manufacturer": "mfr-1", "distributor": "dist-1", "pharmacist": "pharmacy-1",
            "clinician": "hospital-1", "patient": "hospital-1", "inspector": "mfr-1",
            "auditor": "mfr-1"}


@cache
def world() -> bytes:
    """A ledger where every kind has something to act on; returns its snapshot."""
    h = Harness()
    assert h.commission([10, 11, 12, 20, 21, 22, 30, 31, 32, 40, 41, 42]) == "ok"
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
                             "expiry": "2026-12-31", "event_hash": ev("new")},
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
    }[kind]


@cache
def review_id() -> str:
    h = Harness()
    h.ledger.restore(world())
    return next(iter(h.ledger.state.tables["reviews"]))


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
    assert len(CELLS) == len(KINDS) * 7 == 27 * 7
    assert set(PERMISSIONS) == set(KINDS)


@pytest.mark.parametrize(("kind", "role"), CELLS, ids=[f"{k}-{r}" for k, r in CELLS])
def test_permission_matrix_cell(kind: str, role: str) -> None:
    h = fresh()
    if kind == "BIOMETRIC_REVOKE":  # needs an active enrolment first
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
                   "manufacturer": 1, "patient": 3, "pharmacist": 0}


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
