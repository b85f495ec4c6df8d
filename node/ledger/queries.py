"""Read-only questions about a ledger (the queries of docs/ledger.md), and saving/loading a
final ledger.

Why this exists: the point of the shared ledger is the answers: where a serialised unit has
been (trace), who is exposed when a lot is recalled (units in stock per custodian, patients
who received it), who looked at a patient's data (access log), which consents are in force,
whether an off-chain document is the one anchored, and whether the chain is intact. The CLI
(`medbft ledger`) and tests call these functions; they never change the ledger.

Costs on a ledger of N transactions: trace O(events of the unit), recall exposure O(units of
the lot), access log O(entries of the patient), active consents O(consents of the patient),
verify record O(1), chain integrity O(N) (it rehashes everything). See bench/ledger.py.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node.ledger.genesis import LedgerGenesis
from node.ledger.ledger import Ledger
from node.ledger.rules import blocked_reason
from node.ledger.state import _ENC, State, _row_hash
from node.ledger.txs import commitment

__all__ = [
    "DIGESTS_FILE",
    "LEDGER_FILE",
    "access_log",
    "active_consents",
    "audit_entries",
    "cases",
    "claims",
    "excursions",
    "load_ledger",
    "recall_exposure",
    "save_ledger",
    "studies",
    "trace",
    "verify_chain",
    "verify_record",
]

LEDGER_FILE = "ledger.json"
DIGESTS_FILE = "ledger_digests.json"


def _iso(ledger: Ledger, ts_ns: int) -> str:
    moment = datetime.fromtimestamp((ledger.genesis.epoch_ns + ts_ns) / 1e9, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _block_time(ledger: Ledger, height: int) -> str:
    return _iso(ledger, ledger.state.blocks.entries[height - 1][2])


def trace(ledger: Ledger, epc: str) -> dict[str, Any] | None:
    """The full custody chain of one serialised unit, or None if the ledger never saw it."""
    st = ledger.state
    row = st.get("units", epc)
    if row is None:
        return None
    events = []
    for n in st.trace_idx.get(epc, ()):
        height, index, kind, org, _, detail, event_hash = st.events.entries[n]
        item = {"height": height, "index": index, "time": _block_time(ledger, height),
                "event": kind, "by": org, "event_hash": event_hash}
        if kind in ("EPCIS_SHIP", "EPCIS_RETURN"):
            item["to"] = detail
        elif kind in ("EPCIS_AGGREGATE", "EPCIS_DISAGGREGATE"):
            item["case"] = detail
        elif kind == "IMMUNIZATION_ADMINISTER":
            item["patient"], item["record_id"] = detail[0], detail[2]
        events.append(item)
    alerts = [{"incident": k, "by": v[2], "height": v[3][0]}
              for k, v in sorted(st.tables["incidents"].items())
              if v[0] == "epc:" + epc and v[5] == "alert"]
    case = st.tables["case_of"].get(epc)
    return {"epc": epc, "gtin": row[0], "lot": row[1], "custodian": row[2],
            "disposition": row[3], "in_transit_to": row[4],
            **({"in_case": case[0]} if case else {}),
            "blocked": blocked_reason(st, epc, row[1]), "events": events,
            "counterfeit_alerts": alerts}


def recall_exposure(ledger: Ledger, lot: str) -> dict[str, Any] | None:
    """Where a lot's units are (stock per custodian, in transit, used up) and the patient
    pseudonyms who received one; None if the lot is unknown."""
    st = ledger.state
    lot_row = st.get("lots", lot)
    if lot_row is None:
        return None
    in_stock: dict[str, int] = {}
    in_transit: dict[str, int] = {}
    used: dict[str, dict[str, int]] = {}
    for epc in st.lot_units.get(lot, ()):
        _, _, custodian, disposition, dest = st.tables["units"][epc]
        if disposition in ("active", "in_progress"):
            in_stock[custodian] = in_stock.get(custodian, 0) + 1
        elif disposition in ("in_transit", "returned"):
            in_transit[dest] = in_transit.get(dest, 0) + 1
        else:
            by = used.setdefault(disposition, {})
            by[custodian] = by.get(custodian, 0) + 1
    patients = []
    for n in st.lot_patients.get(lot, ()):
        height, _index, _, org, epcs, detail, _ = st.events.entries[n]
        patients.append({"patient": detail[0], "epc": epcs[0], "record_id": detail[2],
                         "by": org, "height": height, "time": _block_time(ledger, height)})
    recall = st.get("recalls", lot_row[3]) if lot_row[3] else None
    return {"lot": lot, "gtin": lot_row[0], "expiry": lot_row[1], "manufacturer": lot_row[2],
            "recall": None if recall is None else {
                "recall_id": lot_row[3], "class": recall[2], "status": recall[6],
                "issued_height": recall[4][0]},
            "units": len(st.lot_units.get(lot, ())),
            "in_stock": dict(sorted(in_stock.items())),
            "in_transit_to": dict(sorted(in_transit.items())),
            "used": {k: dict(sorted(v.items())) for k, v in sorted(used.items())},
            "patients": patients}


def _pseudonyms(ledger: Ledger, patient: str) -> list[str]:
    if patient.startswith("pp:"):
        return [patient]
    return sorted(ledger.genesis.pseudonyms_of(patient).values())


def _entry(ledger: Ledger, n: int) -> dict[str, Any]:
    height, index, actor, action, target, decision, rule = ledger.state.audit.entries[n]
    return {"n": n, "height": height, "index": index, "time": _block_time(ledger, height),
            "actor": actor, "action": action, "target": target, "decision": decision,
            "rule": rule}


def access_log(ledger: Ledger, patient: str) -> list[dict[str, Any]]:
    """Every audit entry about a patient (by identity id or pseudonym), in ledger order."""
    st = ledger.state
    numbers = sorted(n for p in _pseudonyms(ledger, patient)
                     for n in st.audit_of_patient.get(p, ()))
    return [_entry(ledger, n) for n in numbers]


def audit_entries(ledger: Ledger, reader: str) -> list[dict[str, Any]]:
    """The audit log as `reader` may read it (the last row of
    docs/ledger.md#permission-matrix): regulator inspectors and auditors read all of it;
    everyone else reads their own entries (patients: also those about them). Unknown readers
    read nothing."""
    party = ledger.genesis.parties.get(reader)
    st = ledger.state
    if party is None:
        return []
    if party.role in ("inspector", "auditor"):
        return [_entry(ledger, n) for n in range(len(st.audit.entries))]
    own = set(st.audit_of_actor.get(reader, ()))
    if party.role == "patient":
        own.update(e["n"] for e in access_log(ledger, reader))
    return [_entry(ledger, n) for n in sorted(own)]


def active_consents(ledger: Ledger, patient: str, at_ns: int | None = None
                    ) -> list[dict[str, Any]]:
    """Consents in force for a patient at block time `at_ns` (default: the last block)."""
    st = ledger.state
    if at_ns is None:
        at_ns = st.blocks.entries[-1][2] if st.blocks.entries else 0
    now = ledger.genesis.epoch_ns + at_ns
    out = []
    for pseudonym in _pseudonyms(ledger, patient):
        for cid in st.consents_of.get(pseudonym, ()):
            row = st.tables["consents"][cid]
            if row[8] is None and row[5] <= now < row[6]:
                out.append({"consent_id": cid, "patient": row[0], "grantee": row[1],
                            "actions": list(row[2]), "purposes": list(row[3]),
                            "data_classes": list(row[4]), "granted_height": row[7][0]})
    return out


def _consent_live(ledger: Ledger, cid: str | None, pseudonym: str, purpose: str, action: str,
                  pos: tuple[int, int]) -> bool:
    """Whether consent `cid` of `pseudonym` covered `purpose` and `action` at block position
    `pos` (granted before, not revoked before, its period holding that block's time):
    recomputed from the consent's own row, independently of the rule that cited it."""
    st = ledger.state
    row = st.tables["consents"].get(cid or "")
    if row is None or row[0] != pseudonym or action not in row[2] or purpose not in row[3]:
        return False
    if not tuple(row[7]) < pos or (row[8] is not None and tuple(row[8]) < pos):
        return False
    now = ledger.genesis.epoch_ns + st.blocks.entries[pos[0] - 1][2]
    return bool(row[5] <= now < row[6])


def claims(ledger: Ledger, claim_id: str | None = None) -> list[dict[str, Any]]:
    """Insurance claims (all, or one), in ledger order: what was billed, by whom, to which
    payer, the decision and, for a paid claim, the consent it was paid under and whether that
    consent was in force at the payment (`consent_in_force_at_payment`, recomputed from the
    consent)."""
    st = ledger.state
    out = []
    for cid, row in sorted(st.tables["claims"].items(), key=lambda kv: tuple(kv[1][10])):
        if claim_id is not None and cid != claim_id:
            continue
        item: dict[str, Any] = {
            "claim_id": cid, "patient": row[0], "submitter": row[1], "provider": row[2],
            "insurer": row[3], "record_ids": list(row[4]), "epcs": list(row[5]),
            "amount": row[6], "claim_type": row[7], "status": row[11],
            "submitted_height": row[10][0], "time": _block_time(ledger, row[10][0]),
            "consent_at_submission": row[9]}
        if row[11] != "submitted":
            item.update(reason_code=row[12], adjudicator=row[13],
                        adjudicated_height=row[15][0])
        if row[11] == "approved":
            item["consent_at_payment"] = row[14]
            item["consent_in_force_at_payment"] = _consent_live(
                ledger, row[14], row[0], "HPAYMT", "disclose", tuple(row[15]))
        out.append(item)
    return out


def studies(ledger: Ledger) -> list[dict[str, Any]]:
    """Approved studies and every research answer under them: the cohort each answer was
    computed over, the study's minimum, and whether the count was released or suppressed."""
    st = ledger.state
    answers: dict[str, list[dict[str, Any]]] = {}
    for qid, row in sorted(st.tables["research"].items(), key=lambda kv: tuple(kv[1][7])):
        answers.setdefault(row[0], []).append({
            "query_id": qid, "researcher": row[1], "resource_type": row[2], "measure": row[3],
            "cohort": row[4], "min_cohort": row[5], "released": row[6] is not None,
            "value": row[6], "height": row[7][0]})
    return [{"study_id": sid, "researcher": row[0], "research_org": row[1],
             "approved_by": row[2], "protocol_commitment": row[3],
             "data_classes": list(row[4]), "min_cohort": row[5], "approved_height": row[6][0],
             "status": row[7], "answers": answers.get(sid, [])}
            for sid, row in sorted(st.tables["studies"].items())]


def cases(ledger: Ledger, parent: str | None = None) -> list[dict[str, Any]]:
    """Cases (SSCCs), in the order they were packed, and where their units are now."""
    st = ledger.state
    out = []
    for sscc, row in sorted(st.tables["cases"].items(), key=lambda kv: tuple(kv[1][3])):
        if parent is not None and sscc != parent:
            continue
        places = sorted({tuple(st.tables["units"][e][2:]) for e in row[1]},
                        key=lambda p: (p[0], p[1], p[2] or ""))
        out.append({"case": sscc, "packed_by": row[0], "units": list(row[1]),
                    "status": row[2], "packed_height": row[3][0],
                    "unpacked_height": row[4][0] if row[4] else None,
                    "where": [{"custodian": c, "disposition": d, "to": t}
                              for c, d, t in places]})
    return out


def excursions(ledger: Ledger, lot: str | None = None) -> list[dict[str, Any]]:
    """Cold-chain excursions (all, or of one lot): the reading against the lot's range, who
    reported it, whether it quarantined the lot, and whether the lot is still blocked."""
    st = ledger.state
    out = []
    for key, row in sorted(st.tables["excursions"].items(),
                           key=lambda kv: (kv[1][7][0], kv[1][7][1])):
        if lot is not None and row[0] != lot:
            continue
        out.append({"excursion": key, "lot": row[0], "reading_c": row[1] / 10,
                    "range_c": [row[2] / 10, row[3] / 10], "by": row[4], "org": row[5],
                    "event_hash": row[6], "height": row[7][0],
                    "time": _block_time(ledger, row[7][0]), "quarantined_lot": row[8],
                    "lot_quarantined_now": "lot:" + row[0] in st.tables["suspects"]})
    return out


def verify_record(ledger: Ledger, record_id: str, resource: dict[str, Any],
                  salt: bytes) -> dict[str, Any]:
    """Does this off-chain FHIR resource (with its salt) match the anchored commitment?"""
    row = ledger.state.get("records", record_id)
    if row is None:
        return {"record_id": record_id, "ok": False, "reason": "unknown-record"}
    value = commitment(resource, salt)
    versions = list(row[3])
    if value == versions[-1]:
        return {"record_id": record_id, "ok": True, "version": len(versions)}
    if value in versions:
        return {"record_id": record_id, "ok": False, "reason": "superseded",
                "version": versions.index(value) + 1, "latest": len(versions)}
    return {"record_id": record_id, "ok": False, "reason": "mismatch"}


def verify_chain(ledger: Ledger) -> dict[str, Any]:
    """Chain integrity, recomputed from scratch: block hashes and links, the audit and event
    hash chains, the multiset digest of the tables, and the last block's state digest."""
    st = ledger.state
    problems: list[str] = []
    prev = bytes(32)
    for i, entry in enumerate(st.blocks.entries):
        header, stated = entry[:-1], entry[-1]
        if header[0] != i + 1 or header[3] != prev.hex():
            problems.append(f"block {i + 1}: broken link to the previous block")
        prev = hashlib.sha256(_ENC.encode(header).encode()).digest()
        if prev.hex() != stated:
            problems.append(f"block {i + 1}: hash does not match its header")
    for name in ("audit", "events", "blocks"):
        chain = getattr(st, name)
        if chain.recompute() != chain.head:
            problems.append(f"{name} log: hash chain does not match its head")
    acc = 0
    for table, rows in st.tables.items():
        for key, value in rows.items():
            acc += _row_hash(table, key, value)
    if acc & ((1 << 512) - 1) != st.acc:
        problems.append("tables: multiset digest does not match the rows")
    if st.blocks.entries:
        probe = State()
        probe.acc, probe.events, probe.audit = st.acc, st.events, st.audit
        probe.blocks.head = st.blocks.recompute(len(st.blocks.entries) - 1)
        saved, ledger.state = ledger.state, probe
        try:
            if ledger.state_digest().hex() != st.blocks.entries[-1][5]:
                problems.append("last block: state digest does not match the state")
        finally:
            ledger.state = saved
    return {"ok": not problems, "blocks": len(st.blocks.entries),
            "audit_entries": len(st.audit.entries), "events": len(st.events.entries),
            "problems": problems}


def save_ledger(directory: str | Path, ledger: Ledger, digests: dict[str, str]) -> None:
    """Write `ledger.json` (genesis + snapshot of one replica) and `ledger_digests.json`."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    text = ('{"genesis":' + ledger.genesis.to_json() + ',"snapshot":'
            + ledger.snapshot().decode() + "}\n")
    (out / LEDGER_FILE).write_text(text)
    (out / DIGESTS_FILE).write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n")


def load_ledger(directory: str | Path) -> Ledger:
    """Load the ledger a run saved; raise OSError if missing, ValueError if malformed."""
    path = Path(directory)
    path = path / LEDGER_FILE if path.is_dir() else path
    data = json.loads(path.read_text())
    genesis = LedgerGenesis.from_json(json.dumps(data["genesis"]))
    ledger = Ledger(genesis)
    ledger.restore(_ENC.encode(data["snapshot"]).encode())
    return ledger
