"""The rules: one handler per transaction kind, each checking everything before it changes
anything (a rejected transaction leaves no trace in the tables, only an audit entry).

Why this exists: this is where the invariants of docs/ledger.md#invariants hold. Custody is a
function (a unit has one custodian and one disposition); the lifecycle is commissioned ->
(shipped -> received)* -> dispensed | administered | destroyed, and nothing follows a terminal
state; a recalled or quarantined unit is never shipped, dispensed or administered; an access is
permitted only by ownership, custodianship, an active consent at block time, or break-glass
(always audited); the regulator sees metadata only. A handler gets a `Ctx` (state, genesis, the
signer's registered party, the decoded tx, its position and the block's calendar time) and
returns the result bytes, or raises `Reject(reason)`.

Must not know: the wall clock, randomness, the network. Block time is the agreed timestamp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from node.ledger.genesis import LedgerGenesis, Party
from node.ledger.state import State
from node.ledger.txs import TxError, gtin_of, is_commitment, is_event_hash
from node.ledger.vocab import (
    CONSENT_ACTIONS,
    ILLEGITIMATE_CLASSES,
    PURPOSES,
    RESOURCE_TYPES,
    SEVERITIES,
)

__all__ = ["ACCESS_KINDS", "EN_ROUTE", "HANDLERS", "MOVABLE", "Ctx", "Reject", "blocked_reason",
           "decide_access"]

Reject = TxError

NS_PER_DAY = 86_400 * 10**9
NOTIFY_DEADLINE_NS = 86_400 * 10**9  # ILLEGITIMATE_NOTIFY within 24 h of the SUSPECT_FLAG
RECEIVERS = frozenset({"hospital", "pharmacy", "distributor", "manufacturer"})
MOVABLE = ("active", "in_progress")            # may be shipped or destroyed
HELD = ("in_progress", "dispensed")            # may be administered by its custodian
EN_ROUTE = ("in_transit", "returned")          # on its way (to `dest`): may be received
SERIOUS = frozenset({"severe", "death"})       # an adverse event this bad opens a review
GRANTEE_ROLES = ("clinician", "pharmacist", "insurer", "researcher")  # `role:<role>` grantees
ACCESS_KINDS = frozenset({"ACCESS_REQUEST", "BREAK_GLASS"})


@dataclass(slots=True)
class Ctx:
    st: State
    g: LedgerGenesis
    party: Party
    tx: dict[str, Any]
    height: int
    index: int
    now_ns: int      # calendar ns (genesis epoch + agreed block timestamp)
    today: str       # ISO date of now_ns, UTC

    @property
    def pos(self) -> tuple[int, int]:
        return (self.height, self.index)


def _need(cond: bool, reason: str) -> None:
    if not cond:
        raise Reject(reason)


def _parse_time_ns(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Reject("bad-period") from None
    if moment.tzinfo is None:
        raise Reject("bad-period")
    return int(moment.timestamp()) * 10**9


def blocked_reason(st: State, epc: str, lot: str) -> str | None:
    """Why a unit may not move (recalled lot, quarantined unit or lot), or None."""
    lot_row = st.tables["lots"].get(lot)
    if lot_row is not None and lot_row[3]:
        return "recalled"
    suspects = st.tables["suspects"]
    if ("epc:" + epc) in suspects or ("lot:" + lot) in suspects:
        return "quarantined"
    return None


def _patient(ctx: Ctx, pseudonym: str) -> tuple[str, str]:
    owner = ctx.g.pseudonyms.get(pseudonym)
    _need(owner is not None, "unknown-patient")
    assert owner is not None
    return owner


def _event(ctx: Ctx, epcs: list[str] | tuple[str, ...], detail: Any = None) -> None:
    ctx.st.add_event((ctx.height, ctx.index, ctx.tx["kind"], ctx.party.org, tuple(epcs),
                      detail, ctx.tx.get("event_hash", "")))


def _units(ctx: Ctx, epcs: list[Any]) -> list[tuple[str, tuple[Any, ...]]]:
    _need(len(set(epcs)) == len(epcs) and all(type(e) is str for e in epcs), "bad-field:epcs")
    _need(is_event_hash(ctx.tx.get("event_hash", "")), "bad-event-hash")
    units = ctx.st.tables["units"]
    rows = []
    for epc in epcs:  # (per unit: the checks are written out, not _need calls)
        row = units.get(epc)
        if row is None:
            raise Reject("unknown-epc")
        rows.append((epc, row))
    return rows


def _moving(ctx: Ctx) -> list[tuple[str, tuple[Any, ...]]]:
    """The units a shipment or receipt moves: those it names (`epcs`, none of them packed in a
    case: a packed unit moves with its case) and every unit of the cases it names
    (`parents`)."""
    tx, tables = ctx.tx, ctx.st.tables
    named = tx.get("epcs", [])
    if tables["case_of"]:
        _need(not any(e in tables["case_of"] for e in named), "packed-in-case")
    children: list[str] = []
    for parent in tx.get("parents", ()):
        case = tables["cases"].get(parent)
        _need(case is not None and case[2] == "packed", "unknown-case")
        assert case is not None
        children.extend(case[1])
    return _units(ctx, [*named, *children] if children else named)


def _not_packed(ctx: Ctx, epcs: list[str] | tuple[str, ...]) -> None:
    case_of = ctx.st.tables["case_of"]
    if case_of:
        _need(not any(e in case_of for e in epcs), "packed-in-case")


def _celsius_tenths(text: str) -> int:
    """'-20.5' -> -205 (the vocabulary's `celsius` pattern has been checked)."""
    whole, _, tenth = text.partition(".")
    value = abs(int(whole)) * 10 + int(tenth or 0)
    return -value if text.startswith("-") else value


# == consent and access ======================================================================

def consent_grant(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    owner, _ = _patient(ctx, tx["patient"])
    _need(owner == ctx.party.id, "not-own-patient")
    _need(st.get("consents", tx["consent_id"]) is None, "duplicate-consent")
    grantee = tx["grantee"]
    _need(grantee in ctx.g.orgs or grantee in ctx.g.parties
          or (grantee[5:] in GRANTEE_ROLES and grantee.startswith("role:")),
          "unknown-grantee")
    actions, purposes = tx["actions"], tx["purposes"]
    _need(all(a in CONSENT_ACTIONS for a in actions), "bad-field:actions")
    _need(all(p in PURPOSES for p in purposes), "bad-field:purposes")
    period = tx["period"]
    _need(set(period) == {"start", "end"} and all(type(v) is str for v in period.values()),
          "bad-period")
    start, end = _parse_time_ns(period["start"]), _parse_time_ns(period["end"])
    _need(start < end, "bad-period")
    _need(is_commitment(tx["doc_commitment"]), "bad-commitment")
    classes = tuple(sorted(tx.get("data_classes", ())))
    _need(all(c in RESOURCE_TYPES for c in classes), "bad-field:data_classes")
    st.put("consents", tx["consent_id"], (tx["patient"], grantee, tuple(sorted(actions)),
                                          tuple(sorted(purposes)), classes, start, end,
                                          ctx.pos, None, tx["doc_commitment"]))
    return b"ok"


def consent_revoke(ctx: Ctx) -> bytes:
    row = ctx.st.get("consents", ctx.tx["consent_id"])
    _need(row is not None, "unknown-consent")
    assert row is not None
    _need(ctx.g.pseudonyms[row[0]][0] == ctx.party.id, "not-own-consent")
    _need(row[8] is None, "already-revoked")
    ctx.st.put("consents", ctx.tx["consent_id"], (*row[:8], ctx.pos, row[9]))
    return b"ok"


def _active_consent(ctx: Ctx, pseudonym: str, purpose: str, resource: str | None) -> str | None:
    party, now = ctx.party, ctx.now_ns
    grantees = (party.id, party.org, "role:" + party.role)
    consents = ctx.st.tables["consents"]
    best: tuple[tuple[int, int], str] | None = None
    # The earliest-granted match, not the first in the index: the index's order depends on
    # history (a restored replica rebuilds it in key order), the answer must not.
    for cid in ctx.st.consents_of.get(pseudonym, ()):
        row = consents[cid]
        if (row[8] is None and row[1] in grantees and "access" in row[2]
                and purpose in row[3] and row[5] <= now < row[6]
                and (not row[4] or resource in row[4])
                and (best is None or tuple(row[7]) < best[0])):
            best = (tuple(row[7]), cid)
    return None if best is None else best[1]


def decide_access(ctx: Ctx) -> tuple[str, str]:
    """(decision, rule) for an ACCESS_REQUEST: deny by default (docs/ledger.md#transactions)."""
    tx, party = ctx.tx, ctx.party
    owner = ctx.g.pseudonyms.get(tx["patient"])
    if owner is None:
        return "deny", "unknown-patient"
    custodian, resource = owner[1], None
    if "record_id" in tx:
        record = ctx.st.get("records", tx["record_id"])
        if record is None or record[0] != tx["patient"]:
            return "deny", "unknown-record"
        custodian, resource = record[1], record[2]
    scope = tx.get("scope", "content")
    if scope not in ("content", "metadata") or tx["purpose"] not in PURPOSES:
        return "deny", "bad-request"
    if party.role == "patient":
        return ("permit", "own") if owner[0] == party.id else ("deny", "not-own")
    if party.role == "inspector":
        return (("permit", "regulator-metadata") if scope == "metadata"
                else ("deny", "regulator-metadata-only"))
    if party.role not in ("clinician", "pharmacist"):
        return "deny", "role-not-permitted"
    if party.org == custodian:
        return "permit", "custodian"
    cid = _active_consent(ctx, tx["patient"], tx["purpose"], resource)
    return ("permit", f"consent:{cid}") if cid else ("deny", "no-consent")


def access_request(ctx: Ctx) -> bytes:
    decision, rule = decide_access(ctx)
    target = ctx.tx["patient"]
    ctx.st.add_audit((ctx.height, ctx.index, ctx.party.id, "ACCESS_DECISION", target,
                      decision, rule), target if target.startswith("pp:") else None)
    ctx.st.count("decisions", decision)
    return f"{decision}:{rule}".encode()


def break_glass(ctx: Ctx) -> bytes:
    pseudonym = ctx.tx["patient"]
    _patient(ctx, pseudonym)
    _need(ctx.tx["reason_code"] in ("ETREAT", "BTG"), "bad-field:reason_code")
    review_id = f"bg-{ctx.height}-{ctx.index}"
    ctx.st.put("reviews", review_id, (ctx.party.id, pseudonym, ctx.pos, "open", None))
    ctx.st.add_audit((ctx.height, ctx.index, ctx.party.id, "ACCESS_DECISION", pseudonym,
                      "permit", "break-glass:" + review_id), pseudonym)
    ctx.st.count("decisions", "permit")
    return f"permit:break-glass:{review_id}".encode()


def break_glass_review(ctx: Ctx) -> bytes:
    row = ctx.st.get("reviews", ctx.tx["review_id"])
    _need(row is not None, "unknown-review")
    assert row is not None
    _need(row[3] == "open", "review-closed")
    _need(ctx.tx["outcome"] in ("justified", "unjustified"), "bad-field:outcome")
    ctx.st.put("reviews", ctx.tx["review_id"], (*row[:3], ctx.tx["outcome"], ctx.pos))
    return b"ok"


# == clinical records =========================================================================

def _check_record_author(ctx: Ctx, custodian: str, resource_type: str) -> None:
    _need(custodian == ctx.party.org, "not-custodian")
    if ctx.party.role == "pharmacist":
        _need(resource_type == "MedicationDispense", "pharmacist-dispense-records-only")


def record_anchor(ctx: Ctx) -> bytes:
    tx = ctx.tx
    _, custodian = _patient(ctx, tx["patient"])
    _need(tx["resource_type"] in RESOURCE_TYPES, "bad-field:resource_type")
    _check_record_author(ctx, custodian, tx["resource_type"])
    _need(tx["fhir_version"] == "4.0.1", "bad-field:fhir_version")
    _need(is_commitment(tx["commitment"]), "bad-commitment")
    _need(ctx.st.get("records", tx["record_id"]) is None, "duplicate-record")
    ctx.st.put("records", tx["record_id"], (tx["patient"], custodian, tx["resource_type"],
                                            (tx["commitment"],), ctx.pos))
    return b"ok"


def record_amend(ctx: Ctx) -> bytes:
    tx = ctx.tx
    row = ctx.st.get("records", tx["record_id"])
    _need(row is not None, "unknown-record")
    assert row is not None
    _check_record_author(ctx, row[1], row[2])
    _need(is_commitment(tx["new_commitment"]), "bad-commitment")
    _need(tx["prev_commitment"] == row[3][-1], "stale-commitment")
    ctx.st.put("records", tx["record_id"], (*row[:3], (*row[3], tx["new_commitment"]), row[4]))
    return b"ok"


# == supply chain =============================================================================

def gtin_register(ctx: Ctx) -> bytes:
    gtin = ctx.tx["gtin"]
    _need(len(gtin) == 14 and gtin.isdigit(), "bad-field:gtin")
    prefix = ctx.g.company_prefix.get(ctx.party.org, "")
    _need(bool(prefix) and gtin[1:1 + len(prefix)] == prefix, "not-prefix-owner")
    _need(ctx.st.get("gtins", gtin) is None, "gtin-taken")
    ctx.st.put("gtins", gtin, (ctx.party.org, ctx.pos))
    return b"ok"


def commission_duplicates(st: State, tx: dict[str, Any]) -> list[str]:
    """Serials in a commissioning that already exist: the counterfeit signal (invariant 2)."""
    units = st.tables["units"]
    return [e for e in tx["epcs"] if type(e) is str and e in units]


def epcis_commission(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    gtin, lot, expiry, epcs = tx["gtin"], tx["lot"], tx["expiry"], tx["epcs"]
    owner = st.get("gtins", gtin)
    _need(owner is not None and owner[0] == ctx.party.org, "not-gtin-owner")
    _need(len(set(epcs)) == len(epcs) and all(type(e) is str for e in epcs), "bad-field:epcs")
    _need(all(gtin_of(e) == gtin for e in epcs), "epc-gtin-mismatch")
    _need(len(expiry) == 10 and expiry[4] == "-" and expiry[7] == "-", "bad-field:expiry")
    _need(expiry >= ctx.today, "expired")
    _need(is_event_hash(tx["event_hash"]), "bad-event-hash")
    storage = None
    if "temp_min" in tx or "temp_max" in tx:
        _need("temp_min" in tx and "temp_max" in tx, "bad-field:temp_max")
        storage = (_celsius_tenths(tx["temp_min"]), _celsius_tenths(tx["temp_max"]))
        _need(storage[0] < storage[1], "bad-field:temp_max")
    lot_row = st.get("lots", lot)
    if lot_row is None:
        st.put("lots", lot, (gtin, expiry, ctx.party.org, None))
        if storage is not None:
            st.put("lot_storage", lot, (*storage, ctx.pos))
    else:
        _need(lot_row[0] == gtin and lot_row[1] == expiry and lot_row[2] == ctx.party.org,
              "lot-mismatch")
        known = st.tables["lot_storage"].get(lot)
        _need((None if known is None else tuple(known[:2])) == storage, "lot-mismatch")
    for epc in epcs:
        st.put("units", epc, (gtin, lot, ctx.party.org, "active", None))
    _event(ctx, epcs, lot)
    return b"ok"


def epcis_ship(ctx: Ctx) -> bytes:
    to = ctx.tx["to"]
    _need(ctx.g.orgs.get(to) in RECEIVERS, "unknown-destination")
    _need(to != ctx.party.org, "ship-to-self")
    _need(ctx.st.get("org_status", to) is None, "destination-suspended")
    rows = _moving(ctx)
    org, st = ctx.party.org, ctx.st
    for epc, row in rows:
        if row[2] != org:
            raise Reject("not-custodian")
        if row[3] not in MOVABLE:
            raise Reject(f"bad-lifecycle:{row[3]}")
        blocked = blocked_reason(st, epc, row[1])
        if blocked is not None:
            raise Reject(blocked)
    for epc, row in rows:
        st.put("units", epc, (*row[:3], "in_transit", to))
    _event(ctx, [epc for epc, _ in rows], to)
    return b"ok"


def epcis_receive(ctx: Ctx) -> bytes:
    rows = _moving(ctx)
    org, st = ctx.party.org, ctx.st
    for _, row in rows:
        if row[3] not in EN_ROUTE:
            raise Reject(f"bad-lifecycle:{row[3]}")
        if row[4] != org:
            raise Reject("not-destination")
    for epc, row in rows:
        st.put("units", epc, (row[0], row[1], org, "in_progress", None))
    _event(ctx, [epc for epc, _ in rows])
    return b"ok"


def epcis_dispense(ctx: Ctx) -> bytes:
    rows = _units(ctx, ctx.tx["epcs"])
    _not_packed(ctx, ctx.tx["epcs"])
    commitment = ctx.tx.get("record_commitment")
    _need(commitment is None or is_commitment(commitment), "bad-commitment")
    for epc, row in rows:
        _need(row[2] == ctx.party.org, "not-custodian")
        _need(row[3] == "in_progress", f"bad-lifecycle:{row[3]}")
        _need(ctx.st.tables["lots"][row[1]][1] >= ctx.today, "expired")
        blocked = blocked_reason(ctx.st, epc, row[1])
        _need(blocked is None, blocked or "")
    for epc, row in rows:
        ctx.st.put("units", epc, (*row[:3], "dispensed", None))
    _event(ctx, ctx.tx["epcs"], commitment)
    return b"ok"


def epcis_destroy(ctx: Ctx) -> bytes:
    rows = _units(ctx, ctx.tx["epcs"])
    _not_packed(ctx, ctx.tx["epcs"])
    for _, row in rows:
        _need(row[2] == ctx.party.org, "not-custodian")
        _need(row[3] in MOVABLE, f"bad-lifecycle:{row[3]}")
    for epc, row in rows:
        ctx.st.put("units", epc, (*row[:3], "destroyed", None))
    _event(ctx, ctx.tx["epcs"], ctx.tx["reason"])
    return b"ok"


def product_verify(ctx: Ctx) -> bytes:
    tx = ctx.tx
    row = ctx.st.get("units", tx["epc"])
    if row is None:
        verdict = "unknown"
    elif row[1] != tx["lot"]:
        verdict = "mismatch:lot"
    elif ctx.st.tables["lots"][row[1]][1] != tx["expiry"]:
        verdict = "mismatch:expiry"
    else:
        blocked = blocked_reason(ctx.st, tx["epc"], row[1])
        verdict = "verified" + (f":{blocked}" if blocked else "")
    ctx.st.add_audit((ctx.height, ctx.index, ctx.party.id, "PRODUCT_VERIFY", tx["epc"],
                      verdict, "dscsa-verification"), None)
    return verdict.encode()


# == vaccination ==============================================================================

def immunization_administer(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    _patient(ctx, tx["patient"])
    epc = tx["epc"]
    row = st.get("units", epc)
    _need(row is not None, "unknown-epc")
    assert row is not None
    _need(row[2] == ctx.party.org, "not-custodian")
    _need(row[3] in HELD, f"bad-lifecycle:{row[3]}")
    _not_packed(ctx, (epc,))
    _need(st.tables["lots"][row[1]][1] >= ctx.today, "expired")
    blocked = blocked_reason(st, epc, row[1])
    _need(blocked is None, blocked or "")
    _need(is_commitment(tx["commitment"]), "bad-commitment")
    _need(st.get("records", tx["record_id"]) is None, "duplicate-record")
    st.put("units", epc, (*row[:3], "administered", None))
    st.put("records", tx["record_id"], (tx["patient"], ctx.party.org, "Immunization",
                                        (tx["commitment"],), ctx.pos))
    _event(ctx, (epc,), (tx["patient"], row[1], tx["record_id"]))
    return b"ok"


def adverse_event_report(ctx: Ctx) -> bytes:
    tx = ctx.tx
    _need(ctx.st.get("lots", tx["lot"]) is not None, "unknown-lot")
    _need(tx["severity"] in SEVERITIES, "not-a-code:severity")
    _need(is_commitment(tx["report_commitment"]), "bad-commitment")
    patient = tx.get("patient")
    if ctx.party.role == "patient":
        _need(patient is not None and _patient(ctx, patient)[0] == ctx.party.id,
              "not-own-patient")
    elif patient is not None:
        _patient(ctx, patient)
    report = f"ae-{ctx.height}-{ctx.index}"
    ctx.st.put("aefi", report, (tx["lot"], tx["severity"], patient, ctx.party.id, ctx.pos))
    if tx["severity"] in SERIOUS:  # above the threshold: the regulator must review the lot
        signals = ctx.st.tables["signals"]
        if not any(row[0] == tx["lot"] and row[4] == "open" for row in signals.values()):
            review_id = f"sig-{ctx.height}-{ctx.index}"
            ctx.st.put("signals", review_id, (tx["lot"], report, ctx.party.id, ctx.pos, "open",
                                              None, None))
            return f"ok:review:{review_id}".encode()
    return b"ok"


# == regulator ================================================================================

def _target_key(ctx: Ctx) -> str:
    tx = ctx.tx
    _need(("epc" in tx) != ("lot" in tx), "name-epc-or-lot")
    if "epc" in tx:
        _need(ctx.st.get("units", tx["epc"]) is not None, "unknown-epc")
        return "epc:" + tx["epc"]
    _need(ctx.st.get("lots", tx["lot"]) is not None, "unknown-lot")
    return "lot:" + tx["lot"]


def suspect_flag(ctx: Ctx) -> bytes:
    key = _target_key(ctx)
    _need(ctx.st.get("suspects", key) is None, "already-flagged")
    ctx.st.put("suspects", key, (ctx.tx["basis"], ctx.party.id, ctx.pos, ctx.now_ns))
    return b"ok"


def suspect_clear(ctx: Ctx) -> bytes:
    key = _target_key(ctx)
    _need(ctx.st.get("suspects", key) is not None, "not-flagged")
    ctx.st.put("suspects", key, None)
    return b"ok"


def illegitimate_notify(ctx: Ctx) -> bytes:
    tx = ctx.tx
    key = _target_key(ctx)
    flag = ctx.st.get("suspects", key)
    _need(flag is not None, "no-suspect-flag")
    assert flag is not None
    _need(tx["classification"] in ILLEGITIMATE_CLASSES, "not-a-code:classification")
    _need(ctx.st.get("incidents", tx["incident_id"]) is None, "duplicate-incident")
    compliant = ctx.now_ns - flag[3] <= NOTIFY_DEADLINE_NS
    ctx.st.put("incidents", tx["incident_id"], (key, tx["classification"], ctx.party.id,
                                                ctx.pos, compliant, "open"))
    return b"ok" if compliant else b"ok:late"


def notification_terminate(ctx: Ctx) -> bytes:
    row = ctx.st.get("incidents", ctx.tx["incident_id"])
    _need(row is not None, "unknown-incident")
    assert row is not None
    _need(row[5] == "open", "incident-closed")
    ctx.st.put("incidents", ctx.tx["incident_id"], (*row[:5], "terminated"))
    return b"ok"


def recall_issue(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    gtin = st.get("gtins", tx["gtin"])
    _need(gtin is not None, "unknown-gtin")
    assert gtin is not None
    if ctx.party.role == "manufacturer":
        _need(gtin[0] == ctx.party.org, "not-gtin-owner")
    _need(st.get("recalls", tx["recall_id"]) is None, "duplicate-recall")
    _need(tx["class"] in ("I", "II", "III"), "bad-field:class")
    lots = tx["lots"]
    _need(len(set(lots)) == len(lots) and all(type(x) is str for x in lots), "bad-field:lots")
    for lot in lots:
        row = st.get("lots", lot)
        _need(row is not None and row[0] == tx["gtin"], "unknown-lot")
    for lot in lots:
        row = st.tables["lots"][lot]
        if not row[3]:
            st.put("lots", lot, (*row[:3], tx["recall_id"]))
    st.put("recalls", tx["recall_id"], (tx["gtin"], tuple(sorted(lots)), tx["class"],
                                        ctx.party.id, ctx.pos, ctx.now_ns, "open"))
    return b"ok"


def on_hand(st: State, lots: tuple[str, ...], org: str) -> int:
    """Units of `lots` that `org` holds or has on its way to it (not yet used up)."""
    units = st.tables["units"]
    count = 0
    for lot in lots:
        for epc in st.lot_units.get(lot, ()):
            row = units[epc]
            if (row[2] == org and row[3] in MOVABLE) or (row[3] in EN_ROUTE
                                                          and row[4] == org):
                count += 1
    return count


def recall_ack(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    recall = st.get("recalls", tx["recall_id"])
    _need(recall is not None, "unknown-recall")
    assert recall is not None
    _need(recall[6] == "open", "recall-closed")
    key = f"{tx['recall_id']}|{ctx.party.org}"
    _need(st.get("acks", key) is None, "already-acked")
    _need(tx["on_hand"] >= 0, "bad-field:on_hand")
    ledger_count = on_hand(st, recall[1], ctx.party.org)
    st.put("acks", key, (ctx.party.id, tx["on_hand"], ledger_count, ctx.pos, ctx.now_ns))
    return b"ok" if ledger_count == tx["on_hand"] else f"ok:ledger-on-hand={ledger_count}".encode()


def recall_close(ctx: Ctx) -> bytes:
    recall = ctx.st.get("recalls", ctx.tx["recall_id"])
    _need(recall is not None, "unknown-recall")
    assert recall is not None
    _need(recall[6] == "open", "recall-closed")
    ctx.st.put("recalls", ctx.tx["recall_id"], (*recall[:6], "closed"))
    return b"ok"


def org_suspend(ctx: Ctx) -> bytes:
    org = ctx.tx["org"]
    _need(org in ctx.g.orgs, "unknown-org")
    _need(ctx.g.orgs[org] != "regulator", "cannot-suspend-regulator")
    _need(ctx.st.get("org_status", org) is None, "already-suspended")
    ctx.st.put("org_status", org, ("suspended", ctx.tx["reason"], ctx.pos))
    return b"ok"


def org_reinstate(ctx: Ctx) -> bytes:
    _need(ctx.st.get("org_status", ctx.tx["org"]) is not None, "not-suspended")
    ctx.st.put("org_status", ctx.tx["org"], None)
    return b"ok"


# == biometric identity (ISO/IEC 24745 renewable references) ==================================

def _check_subject(ctx: Ctx) -> str:
    subject = ctx.tx["subject"]
    owner, custodian = _patient(ctx, subject)
    if ctx.party.role == "patient":
        _need(owner == ctx.party.id, "not-own-patient")
    else:
        _need(custodian == ctx.party.org, "not-custodian")
    return subject


def biometric_enroll(ctx: Ctx) -> bytes:
    subject, tx = _check_subject(ctx), ctx.tx
    _need(is_commitment(tx["pi_commitment"]) and is_commitment(tx["ad_ref_hash"]),
          "bad-commitment")
    row = ctx.st.get("biometrics", subject)
    if row is not None:
        _need(row[2] == "revoked", "already-enrolled")
        _need(tx["template_version"] > row[1], "stale-template-version")
        _need(tx["pi_commitment"] != row[0], "pi-reused")
    ctx.st.put("biometrics", subject, (tx["pi_commitment"], tx["template_version"], "active",
                                       tx["ad_ref_hash"], ctx.pos))
    return b"ok"


def biometric_revoke(ctx: Ctx) -> bytes:
    subject = _check_subject(ctx)
    row = ctx.st.get("biometrics", subject)
    _need(row is not None and row[2] == "active", "not-enrolled")
    assert row is not None
    ctx.st.put("biometrics", subject, (row[0], row[1], "revoked", row[3], ctx.pos))
    return b"ok"


HANDLERS: dict[str, Callable[[Ctx], bytes]] = {
    "CONSENT_GRANT": consent_grant, "CONSENT_REVOKE": consent_revoke,
    "ACCESS_REQUEST": access_request, "BREAK_GLASS": break_glass,
    "BREAK_GLASS_REVIEW": break_glass_review,
    "RECORD_ANCHOR": record_anchor, "RECORD_AMEND": record_amend,
    "GTIN_REGISTER": gtin_register, "EPCIS_COMMISSION": epcis_commission,
    "EPCIS_SHIP": epcis_ship, "EPCIS_RECEIVE": epcis_receive, "EPCIS_DISPENSE": epcis_dispense,
    "EPCIS_DESTROY": epcis_destroy, "PRODUCT_VERIFY": product_verify,
    "IMMUNIZATION_ADMINISTER": immunization_administer,
    "ADVERSE_EVENT_REPORT": adverse_event_report,
    "SUSPECT_FLAG": suspect_flag, "SUSPECT_CLEAR": suspect_clear,
    "ILLEGITIMATE_NOTIFY": illegitimate_notify, "NOTIFICATION_TERMINATE": notification_terminate,
    "RECALL_ISSUE": recall_issue, "RECALL_ACK": recall_ack, "RECALL_CLOSE": recall_close,
    "ORG_SUSPEND": org_suspend, "ORG_REINSTATE": org_reinstate,
    "BIOMETRIC_ENROLL": biometric_enroll, "BIOMETRIC_REVOKE": biometric_revoke,
}
