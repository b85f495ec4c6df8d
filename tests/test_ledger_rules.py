"""The ledger's rules and invariants (docs/ledger.md#invariants), on hand-built ledgers: a flow with
an exact custody trace and recall exposure, custody, lifecycle, recall and quarantine,
counterfeits, consent at block time (and the order inside one block), no personal data,
the audit chain, blocks, determinism and tamper evidence. Every block of every test is
checked by `CheckedLedger` (ledger_support.Harness)."""

from __future__ import annotations

import json

import pytest
from ledger_support import DAY, GTIN, Harness, epc, ev, genesis, pp, sha

from node.ledger import (
    Ledger,
    access_log,
    active_consents,
    check_ledger,
    commitment,
    recall_exposure,
    rules,
    trace,
    verify_chain,
    verify_record,
)
from node.ledger.ledger import merkle_root, tx_leaf
from node.statemachine import BlockInfo

P1H1 = pp("patient-1", "hospital-1")


def hand_built_flow() -> Harness:
    """Manufacturer -> distributor -> pharmacy and hospital; a dose administered, a unit
    dispensed; then the lot is recalled while one unit is still on its way."""
    h = Harness()
    assert h.commission([1, 2, 3, 4, 5]) == "ok"                              # blocks 1-2
    assert h.ship("manufacturer-1", [1, 2, 3, 4, 5], "dist-1") == "ok"        # 3
    assert h.receive("distributor-1", [1, 2, 3, 4, 5]) == "ok"                # 4
    assert h.ship("distributor-1", [1, 2], "pharmacy-1") == "ok"              # 5
    assert h.ship("distributor-1", [3], "hospital-1") == "ok"                 # 6
    assert h.receive("pharmacist-1", [1, 2]) == "ok"                          # 7
    assert h.receive("clinician-1", [3]) == "ok"                              # 8
    assert h.tx("clinician-1", "IMMUNIZATION_ADMINISTER", record_id="imm-1", patient=P1H1,
                epc=epc(3), vaccine_code="140", commitment=sha("imm-1")) == "ok"   # 9
    assert h.tx("pharmacist-1", "EPCIS_DISPENSE", epcs=[epc(1)],
                event_hash=ev("d1")) == "ok"                                  # 10
    assert h.ship("distributor-1", [4], "hospital-1") == "ok"                 # 11
    assert h.tx("manufacturer-1", "RECALL_ISSUE", recall_id="recall-1", gtin=GTIN,
                lots=["LOT-A1"], reason="particulate-matter", **{"class": "I"}) == "ok"  # 12
    return h


def test_hand_built_flow_gives_exactly_the_expected_custody_trace() -> None:
    h = hand_built_flow()
    t = trace(h.ledger, epc(3))
    assert t is not None
    assert [(e["height"], e["event"], e["by"], e.get("to") or e.get("patient"))
            for e in t["events"]] == [
        (2, "EPCIS_COMMISSION", "mfr-1", None),
        (3, "EPCIS_SHIP", "mfr-1", "dist-1"),
        (4, "EPCIS_RECEIVE", "dist-1", None),
        (6, "EPCIS_SHIP", "dist-1", "hospital-1"),
        (8, "EPCIS_RECEIVE", "hospital-1", None),
        (9, "IMMUNIZATION_ADMINISTER", "hospital-1", P1H1),
    ]
    assert (t["custodian"], t["disposition"], t["blocked"]) == ("hospital-1", "administered",
                                                               "recalled")
    assert t["events"][0]["time"] == "2025-03-01T00:00:02.000Z"
    assert trace(h.ledger, epc(99)) is None


def test_hand_built_flow_gives_exactly_the_expected_recall_exposure() -> None:
    h = hand_built_flow()
    x = recall_exposure(h.ledger, "LOT-A1")
    assert x is not None
    assert x["recall"] == {"recall_id": "recall-1", "class": "I", "status": "open",
                           "issued_height": 12}
    assert x["units"] == 5
    assert x["in_stock"] == {"dist-1": 1, "pharmacy-1": 1}
    assert x["in_transit_to"] == {"hospital-1": 1}
    assert x["used"] == {"administered": {"hospital-1": 1}, "dispensed": {"pharmacy-1": 1}}
    assert [(p["patient"], p["epc"], p["record_id"], p["by"]) for p in x["patients"]] == [
        (P1H1, epc(3), "imm-1", "hospital-1")]
    # every custodian acknowledges; the ledger's own on-hand count is recorded beside theirs
    assert h.tx("distributor-1", "RECALL_ACK", recall_id="recall-1", on_hand=1) == "ok"
    assert h.tx("pharmacist-1", "RECALL_ACK", recall_id="recall-1", on_hand=0) == \
        "ok:ledger-on-hand=1"
    assert h.tx("clinician-1", "RECALL_ACK", recall_id="recall-1", on_hand=1) == "ok"
    assert h.tx("clinician-1", "RECALL_ACK", recall_id="recall-1", on_hand=1) == \
        "rejected:already-acked"
    assert h.tx("inspector-1", "RECALL_CLOSE", recall_id="recall-1") == "ok"


def test_recalled_and_quarantined_units_never_move_b4_4() -> None:
    h = hand_built_flow()
    assert h.ship("distributor-1", [5], "pharmacy-1") == "rejected:recalled"
    assert h.tx("pharmacist-1", "EPCIS_DISPENSE", epcs=[epc(2)],
                event_hash=ev("d2")) == "rejected:recalled"
    assert h.tx("pharmacist-1", "IMMUNIZATION_ADMINISTER", record_id="imm-2",
                patient=pp("patient-1", "pharmacy-1"), epc=epc(2), vaccine_code="140",
                commitment=sha("i2")) == "rejected:recalled"
    assert h.receive("clinician-1", [4]) == "ok", "goods already on their way still arrive"
    assert h.tx("pharmacist-1", "EPCIS_DESTROY", epcs=[epc(2)], event_hash=ev("x"),
                reason="recalled") == "ok", "destroying recalled stock is what a recall asks"
    # quarantine by a suspect flag, on one unit, then cleared by the regulator
    g = Harness()
    g.to_pharmacy([7, 8])
    assert g.tx("pharmacist-1", "SUSPECT_FLAG", epc=epc(7), basis="packaging-anomaly") == "ok"
    assert g.tx("pharmacist-1", "EPCIS_DISPENSE", epcs=[epc(7)], event_hash=ev("a")) == \
        "rejected:quarantined"
    assert g.tx("pharmacist-1", "EPCIS_DISPENSE", epcs=[epc(8)], event_hash=ev("b")) == "ok"
    assert g.tx("pharmacist-1", "SUSPECT_CLEAR", epc=epc(7)) == "rejected:role-not-permitted"
    assert g.tx("inspector-1", "SUSPECT_CLEAR", epc=epc(7)) == "ok"
    assert g.tx("pharmacist-1", "EPCIS_DISPENSE", epcs=[epc(7)], event_hash=ev("c")) == "ok"


def test_custody_is_a_function_and_lifecycle_order_holds_b4_2_b4_3() -> None:
    h = Harness()
    assert h.commission([1, 2]) == "ok"
    assert h.ship("distributor-1", [1], "pharmacy-1") == "rejected:not-custodian"
    assert h.receive("distributor-1", [1]) == "rejected:bad-lifecycle:active"
    assert h.ship("manufacturer-1", [1], "dist-1") == "ok"
    assert h.ship("manufacturer-1", [1], "pharmacy-1") == "rejected:bad-lifecycle:in_transit"
    assert h.receive("pharmacist-1", [1]) == "rejected:not-destination"
    assert h.receive("distributor-1", [1]) == "ok"
    assert h.receive("distributor-1", [1]) == "rejected:bad-lifecycle:in_progress"
    assert h.ship("distributor-1", [1, 2], "pharmacy-1") == "rejected:not-custodian", \
        "all or nothing: one unit of the batch is not the shipper's"
    assert trace(h.ledger, epc(2))["disposition"] == "active"  # type: ignore[index]
    assert h.ship("distributor-1", [1], "pharmacy-1") == "ok"
    assert h.receive("pharmacist-1", [1]) == "ok"
    assert h.tx("pharmacist-1", "EPCIS_DISPENSE", epcs=[epc(1)], event_hash=ev("d")) == "ok"
    assert h.tx("pharmacist-1", "EPCIS_DISPENSE", epcs=[epc(1)], event_hash=ev("d2")) == \
        "rejected:bad-lifecycle:dispensed"
    assert h.ship("pharmacist-1", [1], "hospital-1") == "rejected:bad-lifecycle:dispensed"
    assert h.ship("manufacturer-1", [2], "mfr-1") == "rejected:ship-to-self"
    assert h.ship("manufacturer-1", [2], "nowhere") == "rejected:unknown-destination"


def test_second_commissioning_of_a_serial_is_caught_as_counterfeit_b4_2() -> None:
    h = Harness()
    h.to_pharmacy([1, 2])
    # a compromised pharmacy re-commissions a serial it holds: rejected, flagged, audited
    result = h.tx("pharmacist-1", "EPCIS_COMMISSION", gtin=GTIN, epcs=[epc(1)], lot="LOT-A1",
                  expiry="2026-12-31", event_hash=ev("fake"))
    assert result == "rejected:counterfeit-suspected"
    t = trace(h.ledger, epc(1))
    assert t is not None and t["custodian"] == "pharmacy-1"
    assert [a["by"] for a in t["counterfeit_alerts"]] == ["pharmacist-1"]
    last = h.ledger.state.audit.entries[-1]
    assert last[2:] == ("pharmacist-1", "COUNTERFEIT_SUSPECTED", epc(1), "rejected",
                        "duplicate-serial")
    assert h.commission([2, 3]) == "rejected:counterfeit-suspected", "even by the maker"
    assert trace(h.ledger, epc(3)) is None, "nothing of a rejected batch is commissioned"


def test_consent_is_checked_at_block_time_and_order_in_a_block_decides_b4_5() -> None:
    h = Harness()
    assert h.anchor("clinician-1", "patient-1", "hospital-1", "r-1") == "ok"
    ask = {"patient": P1H1, "purpose": "TREAT", "record_id": "r-1"}
    assert h.tx("clinician-2", "ACCESS_REQUEST", **ask) == "deny:no-consent"
    assert h.grant("patient-1", "hospital-1", "hospital-2", "c-1") == "ok"
    assert h.tx("clinician-2", "ACCESS_REQUEST", **ask) == "permit:consent:c-1"
    assert h.tx("clinician-2", "ACCESS_REQUEST", patient=P1H1, purpose="HRESCH") == \
        "deny:no-consent", "consent for treatment does not cover research"
    assert h.tx("clinician-1", "ACCESS_REQUEST", **ask) == "permit:custodian"
    assert h.tx("patient-1", "ACCESS_REQUEST", **ask) == "permit:own"
    assert h.tx("patient-2", "ACCESS_REQUEST", **ask) == "deny:not-own"
    assert h.tx("inspector-1", "ACCESS_REQUEST", **ask) == "deny:regulator-metadata-only"
    assert h.tx("patient-2", "CONSENT_REVOKE", consent_id="c-1") == "rejected:not-own-consent"
    # revoke and access in one block: whichever the primary ordered first wins
    revoke = h.request("patient-1", "CONSENT_REVOKE", consent_id="c-1")
    access = h.request("clinician-2", "ACCESS_REQUEST", **ask)
    assert h.block(access, revoke) == ["permit:consent:c-1", "ok"]
    assert h.grant("patient-1", "hospital-1", "hospital-2", "c-2") == "ok"
    revoke = h.request("patient-1", "CONSENT_REVOKE", consent_id="c-2")
    access = h.request("clinician-2", "ACCESS_REQUEST", **ask)
    assert h.block(revoke, access) == ["ok", "deny:no-consent"]
    # a consent outside its period does not count (block time, not the client's clock)
    assert h.grant("patient-1", "hospital-1", "hospital-2", "c-3",
                   start="2025-03-02T00:00:00Z", end="2025-03-04T00:00:00Z") == "ok"
    assert h.tx("clinician-2", "ACCESS_REQUEST", **ask) == "deny:no-consent"
    assert [c["consent_id"] for c in active_consents(h.ledger, "patient-1")] == []
    h.ts += DAY
    assert h.tx("clinician-2", "ACCESS_REQUEST", **ask) == "permit:consent:c-3"
    assert [c["consent_id"] for c in active_consents(h.ledger, "patient-1")] == ["c-3"]
    h.ts += 3 * DAY
    assert h.tx("clinician-2", "ACCESS_REQUEST", **ask) == "deny:no-consent"
    log = access_log(h.ledger, "patient-1")
    assert [e["decision"] for e in log if e["actor"] == "clinician-2"] == [
        "deny", "permit", "deny", "permit", "deny", "deny", "permit", "deny"]


def test_break_glass_is_always_permitted_audited_and_reviewed() -> None:
    h = Harness()
    result = h.tx("clinician-2", "BREAK_GLASS", patient=P1H1, reason_code="ETREAT")
    review = result.rsplit(":", 1)[1]
    assert result.startswith("permit:break-glass:")
    assert access_log(h.ledger, P1H1)[-1]["rule"] == f"break-glass:{review}"
    assert h.tx("auditor-1", "BREAK_GLASS_REVIEW", review_id=review, outcome="justified") == \
        "rejected:role-not-permitted"
    assert h.tx("inspector-1", "BREAK_GLASS_REVIEW", review_id=review, outcome="justified") \
        == "ok"
    assert h.tx("inspector-1", "BREAK_GLASS_REVIEW", review_id=review, outcome="justified") \
        == "rejected:review-closed"


def test_personal_data_and_malformed_transactions_are_rejected_and_audited_b4_6() -> None:
    h = Harness()
    cases = {
        b'{"kind":"ACCESS_REQUEST","name":"Peter Chalmers","patient":"pp:x","purpose":"TREAT"}':
            "rejected:phi-field:name",
        b'{"birthDate":"1974-12-25","kind":"ACCESS_REQUEST","patient":"pp:x","purpose":"TREAT"}':
            "rejected:phi-field:birthDate",
        b'{"kind":"RECORD_ANCHOR","meta":{"address":"1 Main St"}}': "rejected:phi-field:address",
        b'{"kind":"BIOMETRIC_ENROLL","vec":[' + b",".join(b"1" for _ in range(64)) + b"]}":
            "rejected:phi-vector",
        b'{"kind": "GTIN_REGISTER", "gtin": "1"}': "rejected:non-canonical",
        b"not json": "rejected:malformed",
        b'{"kind":"TELEPORT"}': "rejected:unknown-kind",
        b'{"gtin":"00614141000012","kind":"GTIN_REGISTER","x":1}': "rejected:unknown-field",
        b'{"kind":"GTIN_REGISTER"}': "rejected:missing-field:gtin",
    }
    from node.messages import Request
    for i, (op, expected) in enumerate(cases.items()):
        assert h.block(Request(op, 1000 + i, "manufacturer-1", 0, b""))[0] == expected
    assert h.tx("stranger-1", "GTIN_REGISTER", gtin=GTIN) == "rejected:unknown-identity"
    entries = h.ledger.state.audit.entries
    assert len(entries) == len(cases) + 1 and all(e[5] == "rejected" for e in entries)
    assert "Peter" not in h.ledger.snapshot().decode()


def test_expiry_records_amendments_and_late_notifications() -> None:
    h = Harness()
    assert h.commission([1], lot="LOT-X", expiry="2025-03-10") == "ok"
    assert h.commission([2], lot="LOT-X", expiry="2025-04-01") == "rejected:lot-mismatch"
    assert h.ship("manufacturer-1", [1], "pharmacy-1") == "ok"
    assert h.receive("pharmacist-1", [1]) == "ok"
    h.ts += 10 * DAY
    assert h.tx("pharmacist-1", "EPCIS_DISPENSE", epcs=[epc(1)], event_hash=ev("late")) == \
        "rejected:expired"
    assert h.anchor("clinician-1", "patient-1", "hospital-1", "r-1") == "ok"
    assert h.anchor("clinician-1", "patient-2", "hospital-2", "r-2") == "rejected:not-custodian"
    assert h.anchor("pharmacist-1", "patient-1", "pharmacy-1", "r-3") == \
        "rejected:pharmacist-dispense-records-only"
    amend = {"record_id": "r-1", "prev_commitment": sha("r-1"), "new_commitment": sha("v2")}
    assert h.tx("clinician-1", "RECORD_AMEND", **amend) == "ok"
    assert h.tx("clinician-1", "RECORD_AMEND", **amend) == "rejected:stale-commitment"
    assert h.tx("inspector-1", "SUSPECT_FLAG", lot="LOT-X", basis="inspection") == "ok"
    h.ts += 2 * DAY
    assert h.tx("inspector-1", "ILLEGITIMATE_NOTIFY", incident_id="i-1", lot="LOT-X",
                classification="unfit") == "ok:late"


def test_verify_record_against_its_commitment() -> None:
    h = Harness()
    resource = {"resourceType": "Observation", "id": "r-9", "status": "final"}
    salt = b"\x07" * 16
    assert h.anchor("clinician-1", "patient-1", "hospital-1", "r-9",
                    commitment=commitment(resource, salt)) == "ok"
    assert verify_record(h.ledger, "r-9", resource, salt)["ok"] is True
    assert verify_record(h.ledger, "r-9", {**resource, "status": "x"}, salt)["reason"] == \
        "mismatch"
    assert verify_record(h.ledger, "r-9", resource, b"\x08" * 16)["ok"] is False
    assert verify_record(h.ledger, "nope", resource, salt)["reason"] == "unknown-record"


def test_blocks_chain_and_snapshots_are_canonical_b4_1() -> None:
    h = hand_built_flow()
    st = h.ledger.state
    first, second = st.blocks.entries[0], st.blocks.entries[1]
    assert first[:4] == (1, 1, 1_000_000_000, "00" * 32)
    assert second[3] == first[7]
    req = h.request("manufacturer-1", "PRODUCT_VERIFY", epc=epc(1), lot="LOT-A1",
                    expiry="2026-12-31")
    h.block(req)
    assert st.blocks.entries[-1][4] == merkle_root([tx_leaf(req)]).hex()
    assert check_ledger(h.ledger) == []
    # a replica restored from the snapshot is the same state, byte for byte
    other = Ledger(genesis())
    other.restore(h.ledger.snapshot())
    assert other.snapshot() == h.ledger.snapshot() and other.digest() == h.ledger.digest()
    # and it keeps agreeing as both execute the same next block
    reqs = [h.request("inspector-1", "RECALL_CLOSE", recall_id="recall-1")]
    block = BlockInfo(99, 0, h.ts + 1)
    assert h.ledger.execute(reqs, block) == other.execute(reqs, block)
    assert other.digest() == h.ledger.digest()


@pytest.mark.parametrize("part", ["row", "event", "audit", "block"])
def test_a_snapshot_whose_rows_are_not_arrays_is_refused_whole(part: str) -> None:
    """A snapshot can come from a faulty replica: a row, event, audit entry or block header
    that is not a JSON array makes it malformed (ValueError, the state unchanged), in both
    builds alike (the compiled store reads rows back as tuples)."""
    h = hand_built_flow()
    snap = json.loads(h.ledger.snapshot())
    state = snap["state"]
    if part == "row":
        table = next(t for t, rows in state["tables"].items() if rows)
        state["tables"][table][0][1] = "not-a-row"
    else:
        state[{"event": "events", "audit": "audit", "block": "blocks"}[part]].insert(0, 7)
    other = Ledger(genesis())
    before = other.snapshot()
    with pytest.raises(ValueError, match="is not an array"):
        other.restore(json.dumps(snap, separators=(",", ":")).encode())
    assert other.snapshot() == before


def test_tampering_is_detected_b4_7() -> None:
    h = hand_built_flow()
    h.tx("clinician-2", "ACCESS_REQUEST", patient=P1H1, purpose="TREAT")
    honest = h.ledger.digest()
    st = h.ledger.state
    entry = st.audit.entries[0]
    st.audit.entries[0] = (*entry[:5], "permit", entry[6])      # rewrite a deny as a permit
    assert any("audit" in p for p in verify_chain(h.ledger)["problems"])
    st.audit.entries[0] = entry
    row = st.tables["units"][epc(5)]
    st.tables["units"][epc(5)] = (*row[:2], "pharmacy-1", *row[3:])   # steal a unit
    problems = verify_chain(h.ledger)["problems"]
    assert any("multiset" in p for p in problems)
    restored = Ledger(genesis())
    restored.restore(h.ledger.snapshot())
    assert restored.digest() != honest, "a tampered replica's digest disagrees with a quorum"


def test_the_invariant_checker_catches_a_broken_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """The invariant checks are independent of the rules: break one rule and they object."""
    h = hand_built_flow()
    monkeypatch.setattr(rules, "blocked_reason", lambda *args: None)
    with pytest.raises(AssertionError, match="recall: EPCIS_SHIP"):
        h.ship("distributor-1", [5], "pharmacy-1")
    g = Harness()
    assert g.anchor("clinician-1", "patient-1", "hospital-1", "r-1") == "ok"
    monkeypatch.setattr(rules, "decide_access", lambda ctx: ("permit", "consent:none"))
    with pytest.raises(AssertionError, match="consent: permit"):
        g.tx("clinician-2", "ACCESS_REQUEST", patient=P1H1, purpose="TREAT")



@pytest.mark.parametrize("obj", [
    ("units", "urn:epc:id:sgtin:0614141.107346.2017", ("dispensed", None, 12, True, 1.5)),
    {"kind": "X", "b": [1, {"z": "é\u2028\"\\", "a": -0.0}], "a": 10**30},
    "plain", 7, None, [], {},
])
def test_canonical_json_is_the_standard_encoders_output(obj: object) -> None:
    """The ledger's fast canonical encoder (one C encoder built once) gives the bytes of
    json.JSONEncoder(sort_keys, compact, ASCII) exactly: every hash on the chain depends on it."""
    import json

    from node.ledger.canonical import CanonicalJson

    fast = CanonicalJson()
    assert fast.encode.__name__ == "fast"  # the C path is in use on CPython
    reference = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert fast.encode(obj) == reference.encode(obj)


def test_canonical_json_refuses_nan_when_asked() -> None:
    from node.ledger.canonical import CanonicalJson

    with pytest.raises(ValueError):
        CanonicalJson(allow_nan=False).encode({"x": float("nan")})
    assert CanonicalJson().encode([float("inf")]) == "[Infinity]"
