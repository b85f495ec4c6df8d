"""Realistic ledger traffic: what each simulated client identity submits next, given what has
committed so far.

Why this exists: researchers need workloads instead of no-ops, and teachers need stories.
`LedgerTraffic` keeps a model of the world *as the clients know it* (updated only from
accepted results), and asks each identity, by its role, what it can do now: a manufacturer
registers its GTIN, commissions lots and ships them; distributors receive and ship on;
pharmacies and hospitals receive, dispense, administer and anchor records; patients grant and
revoke consents; clinicians request access; the regulator reviews break-glass accesses and
closes recalls. Kinds are picked with `workload.mix` weights (or the flow's defaults); a
share `workload.invalid` of the transactions is deliberately bad (unauthorised, carrying
personal data, naming unknown serials, stale, non-canonical). Named flows add a scripted
story at `workload.event_at`: a recall, a counterfeit, consent races.

Off-chain payloads are real EPCIS 2.0 events and FHIR R4 resources (node/ledger/documents.py);
only their hashes and salted commitments go into the transactions. They are kept in
`offchain` so a run can save them and `medbft ledger verify` can check them.

Determinism: one seeded `random.Random`; every choice iterates sorted collections.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.ledger import documents as doc
from node.ledger.genesis import LedgerGenesis
from node.ledger.roles import PERMISSIONS
from node.ledger.txs import commitment, encode_tx, epcis_event_hash, gtin_check_digit

__all__ = ["FLOWS", "LedgerTraffic", "Pending"]

SUPPLY = {"GTIN_REGISTER": 50.0, "EPCIS_COMMISSION": 2.0, "EPCIS_SHIP": 4.0,
          "EPCIS_RECEIVE": 8.0, "EPCIS_DISPENSE": 3.0, "IMMUNIZATION_ADMINISTER": 3.0,
          "PRODUCT_VERIFY": 0.5, "RECALL_ACK": 8.0, "RECALL_CLOSE": 2.0, "SUSPECT_FLAG": 0.05,
          "SUSPECT_CLEAR": 1.0, "ADVERSE_EVENT_REPORT": 0.1, "RECALL_ISSUE": 0.02}
CLINICAL = {"RECORD_ANCHOR": 3.0, "RECORD_AMEND": 1.0, "ACCESS_REQUEST": 4.0,
            "CONSENT_GRANT": 2.0, "CONSENT_REVOKE": 0.7, "BREAK_GLASS": 0.2,
            "BREAK_GLASS_REVIEW": 3.0, "BIOMETRIC_ENROLL": 0.3, "BIOMETRIC_REVOKE": 0.1}
#: Named flows -> default kind weights (a scenario's `workload.mix` replaces them).
FLOWS: dict[str, dict[str, float]] = {
    "mixed": {**SUPPLY, **CLINICAL},
    "supply-chain": dict(SUPPLY),
    "clinical": dict(CLINICAL),
    "vaccine-recall": {**SUPPLY, **CLINICAL, "IMMUNIZATION_ADMINISTER": 6.0,
                       "RECALL_ISSUE": 0.0},
    "counterfeit": {**SUPPLY, **CLINICAL, "RECALL_ISSUE": 0.0, "SUSPECT_FLAG": 0.0},
    "consent-race": {**SUPPLY, **CLINICAL, "CONSENT_GRANT": 0.0, "CONSENT_REVOKE": 0.0,
                     "RECALL_ISSUE": 0.0},
    "regulator-crash": {**SUPPLY, **CLINICAL, "BREAK_GLASS": 1.5, "RECALL_ISSUE": 0.0},
}
LOT_SIZE = 12
MAX_CONSENTS = 4  # a patient keeps a handful of consents in force, then revokes
SHIP_MAX = 6
MAX_INVALID_KIND = {"manufacturer": "BREAK_GLASS", "distributor": "RECORD_ANCHOR",
                    "pharmacist": "RECALL_CLOSE", "clinician": "GTIN_REGISTER",
                    "patient": "EPCIS_SHIP", "inspector": "CONSENT_GRANT"}

Build = Callable[[], "Pending"]


@dataclass
class Pending:
    """A transaction on its way: its bytes, and what the world learns if it is accepted."""

    op: bytes
    kind: str
    on_ok: Callable[[bytes], None] = lambda result: None
    on_fail: Callable[[bytes], None] = lambda result: None
    valid: bool = True


@dataclass
class _World:
    gtin: dict[str, str] = field(default_factory=dict)              # mfr org -> gtin (done)
    gtin_pending: set[str] = field(default_factory=set)
    lots: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # lot -> gtin, exp, org
    lot_of: dict[str, str] = field(default_factory=dict)             # epc -> lot
    stock: dict[str, list[str]] = field(default_factory=dict)        # org -> movable epcs
    inbound: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    held: dict[str, list[str]] = field(default_factory=dict)         # org -> dispensed epcs
    recalled: set[str] = field(default_factory=set)
    recalls: dict[str, tuple[tuple[str, ...], set[str], set[str]]] = field(default_factory=dict)
    exposure: dict[str, set[str]] = field(default_factory=dict)      # lot -> orgs that held it
    administered: dict[str, int] = field(default_factory=dict)       # lot -> doses given
    records: dict[str, list[list[str]]] = field(default_factory=dict)  # org -> [id, pp, commit]
    consents: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    reviews: list[str] = field(default_factory=list)
    suspects: list[tuple[str, str]] = field(default_factory=list)     # (field, value)
    biometrics: dict[str, int] = field(default_factory=dict)          # pseudonym -> version>0
    known_epcs: list[str] = field(default_factory=list)


class LedgerTraffic:
    """Generates the next transaction of each identity; learns from accepted results."""

    def __init__(self, genesis: LedgerGenesis, rng: random.Random, *, flow: str = "mixed",
                 mix: dict[str, float] | None = None, invalid: float = 0.0,
                 event_at_ns: int | None = None, duration_ns: int = 0,
                 keep_documents: int = 20_000) -> None:
        self.g = genesis
        self.rng = rng
        self.flow = flow
        self.weights = dict(mix) if mix is not None else dict(FLOWS[flow])
        self.invalid = invalid
        self.event_at_ns = event_at_ns if event_at_ns is not None else duration_ns // 2
        self.duration_ns = duration_ns
        self.w = _World()
        self.now_ns = 0
        self.ids = 0
        self.pending: dict[tuple[str, int], Pending] = {}
        self.offchain: dict[str, Any] = {"records": {}, "events": {}}
        self.keep_documents = keep_documents
        self.story: dict[str, Any] = {}
        self.followups: list[tuple[str, Pending]] = []
        self.patients = sorted(p for p, party in genesis.parties.items()
                               if party.role == "patient")
        self.custodians = genesis.orgs_of_type("hospital", "pharmacy")

    # -- interface for medbft/traffic/workload.py -----------------------------------------

    def next_op(self, cid: str, session: int, now_ns: int) -> bytes | None:
        """The next transaction of `cid` (None: nothing to do now, ask again later)."""
        self.now_ns = now_ns
        party = self.g.parties.get(cid)
        if party is None:
            return None
        options = [(kind, build) for kind, build in self._options(cid, party.role, party.org)
                   if self.weights.get(kind, 0.0) > 0]
        if not options:  # nothing sensible to do now: idle (and no invalid one either)
            return None
        pending = None
        if self.invalid and self.rng.random() < self.invalid:
            pending = self._invalid(cid)
        if pending is None:
            weights = [self.weights[kind] for kind, _ in options]
            pending = self.rng.choices(options, weights)[0][1]()
        self.pending[(cid, session)] = pending
        return pending.op

    def on_result(self, cid: str, session: int, result: bytes) -> None:
        pending = self.pending.pop((cid, session), None)
        if pending is None:
            return
        if result.startswith((b"ok", b"permit")):
            pending.on_ok(result)
        else:
            pending.on_fail(result)

    def submit_scripted(self, cid: str, session: int, pending: Pending) -> bytes:
        self.pending[(cid, session)] = pending
        return pending.op

    # -- helpers ------------------------------------------------------------------------------

    @property
    def calendar_ns(self) -> int:
        return self.g.epoch_ns + self.now_ns

    def _id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}-{self.ids}"

    def _pick(self, items: list[Any]) -> Any:
        return items[self.rng.randrange(len(items))]

    def _salted(self, resource: dict[str, Any], key: str) -> str:
        salt = self.rng.randbytes(16)
        if len(self.offchain["records"]) < self.keep_documents:
            self.offchain["records"][key] = {"resource": resource, "salt": salt.hex()}
        return commitment(resource, salt)

    def _event_hash(self, event: dict[str, Any]) -> str:
        value = epcis_event_hash(event)
        if len(self.offchain["events"]) < self.keep_documents:
            self.offchain["events"][value] = event
        return value

    def _options(self, cid: str, role: str, org: str) -> list[tuple[str, Build]]:
        w, out = self.w, []
        stock = [e for e in w.stock.get(org, []) if w.lot_of[e] not in w.recalled]
        if role == "manufacturer":
            if org not in w.gtin:
                if org not in w.gtin_pending:
                    out.append(("GTIN_REGISTER", lambda: self._gtin_register(org)))
                return out
            out.append(("EPCIS_COMMISSION", lambda: self._commission(org)))
            if any(self._own_lots(org)):
                out.append(("RECALL_ISSUE", lambda: self._recall(cid, org)))
        if role in ("manufacturer", "distributor", "pharmacist", "clinician"):
            if stock and role != "pharmacist" and role != "clinician":
                out.append(("EPCIS_SHIP", lambda: self._ship(org, stock)))
            if w.inbound.get(org):
                out.append(("EPCIS_RECEIVE", lambda: self._receive(org)))
            if w.known_epcs:
                out.append(("PRODUCT_VERIFY", lambda: self._verify()))
            acks = [r for r, (lots, exposed, acked) in sorted(w.recalls.items())
                    if org in exposed and org not in acked]
            if acks:
                out.append(("RECALL_ACK", lambda: self._recall_ack(org, acks[0])))
        if role in ("pharmacist", "clinician"):
            out += self._care_options(cid, role, org, stock)
        if role == "patient":
            out += self._patient_options(cid)
        if role == "inspector":
            out += self._inspector_options()
        return out

    def _care_options(self, cid: str, role: str, org: str,
                      stock: list[str]) -> list[tuple[str, Build]]:
        w, out = self.w, []
        held = [e for e in w.held.get(org, []) if w.lot_of[e] not in w.recalled]
        if stock:
            out.append(("EPCIS_DISPENSE", lambda: self._dispense(org, stock)))
        if (stock or held) and self.patients:
            out.append(("IMMUNIZATION_ADMINISTER",
                        lambda: self._administer(cid, org, held or stock)))
        if self.patients and self.g.orgs.get(org) in ("hospital", "pharmacy"):
            out.append(("RECORD_ANCHOR", lambda: self._anchor(cid, role, org)))
            if w.records.get(org):
                out.append(("RECORD_AMEND", lambda: self._amend(org)))
            out.append(("ACCESS_REQUEST", lambda: self._access(cid, org)))
            if role == "clinician":
                out.append(("BREAK_GLASS", lambda: self._break_glass()))
        if role == "clinician" and w.lots:
            out.append(("ADVERSE_EVENT_REPORT", lambda: self._adverse()))
        return out

    def _patient_options(self, cid: str) -> list[tuple[str, Build]]:
        out: list[tuple[str, Build]] = []
        if len(self.w.consents.get(cid, ())) < MAX_CONSENTS:
            out.append(("CONSENT_GRANT", lambda: self._grant(cid)))
        if self.w.consents.get(cid):
            out.append(("CONSENT_REVOKE", lambda: self._revoke(cid)))
        out.append(("ACCESS_REQUEST", lambda: self._own_access(cid)))
        mine = sorted(self.g.pseudonyms_of(cid).values())
        if mine:
            out.append(("BIOMETRIC_ENROLL", lambda: self._enroll(mine)))
            if any(self.w.biometrics.get(p, 0) > 0 for p in mine):
                out.append(("BIOMETRIC_REVOKE", lambda: self._unenroll(mine)))
        return out

    def _inspector_options(self) -> list[tuple[str, Build]]:
        w, out = self.w, []
        if w.reviews:
            out.append(("BREAK_GLASS_REVIEW", lambda: self._review()))
        closable = [r for r, (_, exposed, acked) in sorted(w.recalls.items())
                    if exposed <= acked]
        if closable:
            out.append(("RECALL_CLOSE", lambda: self._recall_close(closable[0])))
        if w.suspects:
            out.append(("SUSPECT_CLEAR", lambda: self._suspect_clear()))
        if len(w.lots) > len(w.suspects):
            out.append(("SUSPECT_FLAG", lambda: self._suspect_flag()))
        if self.patients:
            out.append(("ACCESS_REQUEST", lambda: self._metadata_access()))
        return out

    # -- supply chain -------------------------------------------------------------------------

    def _gtin_register(self, org: str) -> Pending:
        body = "0" + self.g.company_prefix[org] + "00001"
        gtin = body + gtin_check_digit(body)
        self.w.gtin_pending.add(org)

        def ok(_: bytes) -> None:
            self.w.gtin[org] = gtin

        return Pending(encode_tx("GTIN_REGISTER", gtin=gtin), "GTIN_REGISTER", ok,
                       lambda _: self.w.gtin_pending.discard(org))

    def _own_lots(self, org: str) -> list[str]:
        return [lot for lot, (_, _, o) in sorted(self.w.lots.items())
                if o == org and lot not in self.w.recalled]

    def _commission(self, org: str) -> Pending:
        gtin, prefix = self.w.gtin[org], self.g.company_prefix[org]
        lot = f"LOT-{prefix}-{self.ids + 1}"
        expiry = doc.iso_time(self.calendar_ns + 400 * 86_400 * 10**9)[:10]
        epcs = [doc.sgtin(prefix, "000001", self._id("s")[2:]) for _ in range(LOT_SIZE)]
        event = doc.epcis_event("EPCIS_COMMISSION", self.g, org, epcs, self.calendar_ns,
                                lot=lot, expiry=expiry)

        def ok(_: bytes) -> None:
            self.w.lots[lot] = (gtin, expiry, org)
            self.w.exposure.setdefault(lot, set()).add(org)
            for e in epcs:
                self.w.lot_of[e] = lot
            self.w.stock.setdefault(org, []).extend(epcs)
            self.w.known_epcs.extend(epcs[:2])

        return Pending(encode_tx("EPCIS_COMMISSION", gtin=gtin, epcs=epcs, lot=lot,
                                 expiry=expiry, event_hash=self._event_hash(event)),
                       "EPCIS_COMMISSION", ok)

    def _take(self, pool: list[str], count: int) -> list[str]:
        taken = pool[:count]
        del pool[:count]
        return taken

    def _ship(self, org: str, stock: list[str]) -> Pending:
        kinds = ("distributor", "pharmacy", "hospital") if self.g.orgs[org] == "manufacturer" \
            else ("pharmacy", "hospital")
        targets = [o for o in self.g.orgs_of_type(*kinds) if o != org]
        to = self._pick(targets)
        lot = self.w.lot_of[stock[0]]
        epcs = [e for e in stock if self.w.lot_of[e] == lot][:self.rng.randint(1, SHIP_MAX)]
        pool = self.w.stock[org]
        for e in epcs:
            pool.remove(e)
        biz = f"urn:epcglobal:cbv:bt:{doc.org_prefix(self.g, org)}000005:DES-{self.ids + 1}"
        event = doc.epcis_event("EPCIS_SHIP", self.g, org, epcs, self.calendar_ns, to=to,
                                biz_tx=biz)

        def ok(_: bytes) -> None:
            self.w.inbound.setdefault(to, []).append(tuple(epcs))
            self.w.exposure.setdefault(lot, set()).add(to)

        return Pending(encode_tx("EPCIS_SHIP", epcs=epcs, to=to, biz_tx=biz,
                                 event_hash=self._event_hash(event)), "EPCIS_SHIP", ok,
                       lambda _: pool.extend(epcs))

    def _receive(self, org: str) -> Pending:
        epcs = list(self.w.inbound[org].pop(0))
        event = doc.epcis_event("EPCIS_RECEIVE", self.g, org, epcs, self.calendar_ns)

        def ok(_: bytes) -> None:
            self.w.stock.setdefault(org, []).extend(epcs)

        return Pending(encode_tx("EPCIS_RECEIVE", epcs=epcs, event_hash=self._event_hash(event)),
                       "EPCIS_RECEIVE", ok,
                       lambda _: self.w.inbound[org].append(tuple(epcs)))

    def _dispense(self, org: str, stock: list[str]) -> Pending:
        epc = stock[0]
        self.w.stock[org].remove(epc)
        event = doc.epcis_event("EPCIS_DISPENSE", self.g, org, [epc], self.calendar_ns)
        pool = self.w.held.setdefault(org, [])
        return Pending(encode_tx("EPCIS_DISPENSE", epcs=[epc],
                                 event_hash=self._event_hash(event)),
                       "EPCIS_DISPENSE", lambda _: pool.append(epc),
                       lambda _: self.w.stock[org].append(epc))

    def _administer(self, cid: str, org: str, pool: list[str]) -> Pending:
        epc = pool[0]
        source = self.w.held[org] if epc in self.w.held.get(org, []) else self.w.stock[org]
        source.remove(epc)
        patient = self._pick(self.patients)
        pseudonym = self.g.pseudonyms_of(patient)[self._pick(self.custodians)]
        lot = self.w.lot_of[epc]
        _gtin, expiry, mfr = self.w.lots[lot]
        record_id = self._id("imm")
        resource = doc.fhir_immunization(record_id, patient, lot, expiry, epc, mfr, cid,
                                         self.calendar_ns)

        def ok(_: bytes) -> None:
            self.w.administered[lot] = self.w.administered.get(lot, 0) + 1

        return Pending(encode_tx("IMMUNIZATION_ADMINISTER", record_id=record_id,
                                 patient=pseudonym, epc=epc, vaccine_code="140",
                                 commitment=self._salted(resource, record_id)),
                       "IMMUNIZATION_ADMINISTER", ok, lambda _: source.append(epc))

    def _verify(self) -> Pending:
        epc = self._pick(self.w.known_epcs)
        lot = self.w.lot_of[epc]
        return Pending(encode_tx("PRODUCT_VERIFY", epc=epc, lot=lot,
                                 expiry=self.w.lots[lot][1]), "PRODUCT_VERIFY")

    def _recall(self, cid: str, org: str) -> Pending:
        lots = self._own_lots(org)
        lot = max(lots, key=lambda x: (self.w.administered.get(x, 0), x))
        return self.recall_tx(lot)

    def recall_tx(self, lot: str) -> Pending:
        """RECALL_ISSUE of `lot` (class I); on commit, custodians that held it must ack."""
        recall_id = self._id("recall")
        self.w.recalled.add(lot)

        def ok(_: bytes) -> None:
            self.w.recalls[recall_id] = ((lot,), set(self.w.exposure.get(lot, ())), set())
            self.story.setdefault("recalls", []).append(
                {"recall_id": recall_id, "lot": lot, "committed_s": self.now_ns / 1e9})

        return Pending(encode_tx("RECALL_ISSUE", recall_id=recall_id, gtin=self.w.lots[lot][0],
                                 lots=[lot], reason="contamination", **{"class": "I"}),
                       "RECALL_ISSUE", ok, lambda _: self.w.recalled.discard(lot))

    def _recall_ack(self, org: str, recall_id: str) -> Pending:
        lots, _exposed, acked = self.w.recalls[recall_id]
        on_hand = sum(1 for e in self.w.stock.get(org, []) if self.w.lot_of[e] in lots)
        on_hand += sum(1 for s in self.w.inbound.get(org, []) for e in s
                       if self.w.lot_of[e] in lots)
        acked.add(org)
        return Pending(encode_tx("RECALL_ACK", recall_id=recall_id, on_hand=on_hand),
                       "RECALL_ACK", on_fail=lambda _: acked.discard(org))

    def _recall_close(self, recall_id: str) -> Pending:
        lots, exposed, acked = self.w.recalls.pop(recall_id)

        def ok(_: bytes) -> None:
            for entry in self.story.get("recalls", []):
                if entry["recall_id"] == recall_id:
                    entry["closed_s"] = self.now_ns / 1e9

        def failed(_: bytes) -> None:
            self.w.recalls.setdefault(recall_id, (lots, exposed, acked))

        return Pending(encode_tx("RECALL_CLOSE", recall_id=recall_id), "RECALL_CLOSE", ok,
                       failed)

    def _suspect_flag(self) -> Pending:
        flagged = {value for _, value in self.w.suspects}
        lot = self._pick(sorted(x for x in self.w.lots if x not in flagged))
        entry = ("lot", lot)
        self.w.suspects.append(entry)

        def failed(_: bytes) -> None:
            if entry in self.w.suspects:
                self.w.suspects.remove(entry)

        return Pending(encode_tx("SUSPECT_FLAG", lot=lot, basis="inspection"), "SUSPECT_FLAG",
                       on_fail=failed)

    def _suspect_clear(self) -> Pending:
        key, value = self.w.suspects.pop(0)
        return Pending(encode_tx("SUSPECT_CLEAR", **{key: value}), "SUSPECT_CLEAR")

    def _adverse(self) -> Pending:
        lot = self._pick(sorted(self.w.lots))
        report_id = self._id("ae")
        report = {"resourceType": "AdverseEvent", "id": report_id, "actuality": "actual",
                  "date": doc.iso_time(self.calendar_ns, millis=False),
                  "suspectEntity": [{"instance": {"display": lot}}]}
        return Pending(encode_tx("ADVERSE_EVENT_REPORT", lot=lot, severity="mild",
                                 report_commitment=self._salted(report, report_id)),
                       "ADVERSE_EVENT_REPORT")

    # -- clinical -----------------------------------------------------------------------------

    def _anchor(self, cid: str, role: str, org: str) -> Pending:
        patient = self._pick(self.patients)
        pseudonym = self.g.pseudonyms_of(patient)[org]
        record_id = self._id("rec")
        if role == "pharmacist":
            gtin = next(iter(sorted(self.w.gtin.values())), "00614141000012")
            resource = doc.fhir_medication_dispense(record_id, patient, "n/a", gtin,
                                                    self.calendar_ns)
            resource_type = "MedicationDispense"
        else:
            value = round(90 + self.rng.random() * 60, 1)
            resource = doc.fhir_observation(record_id, patient, "8480-6", value, "mm[Hg]",
                                            self.calendar_ns)
            resource_type = "Observation"
        commit = self._salted(resource, record_id)

        def ok(_: bytes) -> None:
            self.w.records.setdefault(org, []).append([record_id, pseudonym, commit])

        return Pending(encode_tx("RECORD_ANCHOR", record_id=record_id, patient=pseudonym,
                                 resource_type=resource_type, commitment=commit,
                                 fhir_version="4.0.1"), "RECORD_ANCHOR", ok)

    def _amend(self, org: str) -> Pending:
        entry = self._pick(self.w.records[org])
        record_id, _, prev = entry
        resource = {"resourceType": "Observation", "id": record_id, "status": "amended",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}}
        new = self._salted(resource, f"{record_id}@{self.ids}")

        def ok(_: bytes) -> None:
            entry[2] = new

        return Pending(encode_tx("RECORD_AMEND", record_id=record_id, prev_commitment=prev,
                                 new_commitment=new), "RECORD_AMEND", ok)

    def _access(self, cid: str, org: str) -> Pending:
        others = sorted(o for o, recs in self.w.records.items() if recs and o != org)
        if others and self.rng.random() < 0.6:
            record_id, pseudonym, _ = self._pick(self.w.records[self._pick(others)])
            return Pending(encode_tx("ACCESS_REQUEST", patient=pseudonym, purpose="TREAT",
                                     record_id=record_id), "ACCESS_REQUEST")
        pseudonym = self.g.pseudonyms_of(self._pick(self.patients))[org]
        return Pending(encode_tx("ACCESS_REQUEST", patient=pseudonym, purpose="TREAT"),
                       "ACCESS_REQUEST")

    def _break_glass(self) -> Pending:
        patient = self._pick(self.patients)
        pseudonym = self._pick(sorted(self.g.pseudonyms_of(patient).values()))

        def ok(result: bytes) -> None:
            self.w.reviews.append(result.decode().rsplit(":", 1)[1])

        return Pending(encode_tx("BREAK_GLASS", patient=pseudonym, reason_code="ETREAT"),
                       "BREAK_GLASS", ok)

    def _review(self) -> Pending:
        review_id = self.w.reviews.pop(0)
        return Pending(encode_tx("BREAK_GLASS_REVIEW", review_id=review_id,
                                 outcome="justified"), "BREAK_GLASS_REVIEW")

    def _metadata_access(self) -> Pending:
        pseudonym = self._pick(sorted(self.g.pseudonyms_of(self._pick(self.patients)).values()))
        return Pending(encode_tx("ACCESS_REQUEST", patient=pseudonym, purpose="PUBHLTH",
                                 scope="metadata"), "ACCESS_REQUEST")

    def grant_tx(self, cid: str, custodian: str, grantee: str) -> Pending:
        """CONSENT_GRANT by patient `cid` of its record at `custodian` to `grantee` (an org)."""
        pseudonym = self.g.pseudonyms_of(cid)[custodian]
        consent_id = self._id("consent")
        start = doc.iso_time(self.calendar_ns - 86_400 * 10**9, millis=False)
        end = doc.iso_time(self.calendar_ns + 180 * 86_400 * 10**9, millis=False)
        resource = doc.fhir_consent(consent_id, cid, custodian, grantee, start, end,
                                    self.calendar_ns)

        def ok(_: bytes) -> None:
            self.w.consents.setdefault(cid, []).append((consent_id, pseudonym, grantee))

        return Pending(encode_tx("CONSENT_GRANT", consent_id=consent_id, patient=pseudonym,
                                 grantee=grantee, actions=["access"], purposes=["TREAT"],
                                 period={"start": start, "end": end},
                                 doc_commitment=self._salted(resource, consent_id)),
                       "CONSENT_GRANT", ok)

    def _grant(self, cid: str) -> Pending:
        mine = self.g.pseudonyms_of(cid)
        custodian = self._pick(sorted(mine))
        grantees = [o for o in self.custodians if o != custodian] or [custodian]
        return self.grant_tx(cid, custodian, self._pick(grantees))

    def revoke_tx(self, cid: str, consent_id: str) -> Pending:
        items = self.w.consents.get(cid, [])
        self.w.consents[cid] = [c for c in items if c[0] != consent_id]
        return Pending(encode_tx("CONSENT_REVOKE", consent_id=consent_id), "CONSENT_REVOKE")

    def _revoke(self, cid: str) -> Pending:
        return self.revoke_tx(cid, self._pick(self.w.consents[cid])[0])

    def _own_access(self, cid: str) -> Pending:
        pseudonym = self._pick(sorted(self.g.pseudonyms_of(cid).values()))
        return Pending(encode_tx("ACCESS_REQUEST", patient=pseudonym, purpose="TREAT"),
                       "ACCESS_REQUEST")

    def _enroll(self, mine: list[str]) -> Pending:
        pseudonym = self._pick(mine)
        version = abs(self.w.biometrics.get(pseudonym, 0)) + 1
        if self.w.biometrics.get(pseudonym, 0) > 0:   # enrolled: renew = revoke first
            return self._unenroll([pseudonym])
        pi = commitment({"pi": self.rng.randbytes(16).hex()}, b"")
        ad = commitment({"ad": self.rng.randbytes(16).hex()}, b"")

        def ok(_: bytes) -> None:
            self.w.biometrics[pseudonym] = version

        return Pending(encode_tx("BIOMETRIC_ENROLL", subject=pseudonym, pi_commitment=pi,
                                 template_version=version, ad_ref_hash=ad),
                       "BIOMETRIC_ENROLL", ok)

    def _unenroll(self, mine: list[str]) -> Pending:
        enrolled = [p for p in mine if self.w.biometrics.get(p, 0) > 0]
        pseudonym = self._pick(enrolled)

        def ok(_: bytes) -> None:
            self.w.biometrics[pseudonym] = -self.w.biometrics[pseudonym]

        return Pending(encode_tx("BIOMETRIC_REVOKE", subject=pseudonym), "BIOMETRIC_REVOKE",
                       ok)

    # -- invalid and unauthorised transactions ------------------------------------------------

    def _invalid(self, cid: str) -> Pending | None:
        party = self.g.parties[cid]
        menu = ["phi", "non-canonical"]
        if party.role in MAX_INVALID_KIND:
            menu.append("unauthorised")
        if party.role in ("manufacturer", "distributor", "pharmacist", "clinician"):
            menu.append("unknown-serial")
        if party.role == "auditor":
            return None
        choice = self._pick(menu)
        pseudonym = (min(self.g.pseudonyms) if self.g.pseudonyms else "pp:none")
        if choice == "phi":
            op = encode_tx("ACCESS_REQUEST", patient=pseudonym, purpose="TREAT",
                           birthDate="1974-12-25")
        elif choice == "non-canonical":
            op = b'{"kind": "PRODUCT_VERIFY", "epc": "x", "lot": "x", "expiry": "x"}'
        elif choice == "unknown-serial":
            op = encode_tx("EPCIS_SHIP", epcs=["urn:epc:id:sgtin:9999999.000001.0"],
                           to=self.custodians[0] if self.custodians else "none",
                           event_hash=epcis_event_hash({"bogus": self.ids}))
        else:
            op = self._unauthorised(party.role, pseudonym)
        return Pending(op, "invalid", valid=False)

    def _unauthorised(self, role: str, pseudonym: str) -> bytes:
        kind = MAX_INVALID_KIND[role]
        assert role not in PERMISSIONS[kind]
        if kind == "BREAK_GLASS":
            return encode_tx(kind, patient=pseudonym, reason_code="ETREAT")
        if kind == "RECORD_ANCHOR":
            return encode_tx(kind, record_id=self._id("x"), patient=pseudonym,
                             resource_type="Observation", fhir_version="4.0.1",
                             commitment=commitment({"x": 1}, b""))
        if kind == "RECALL_CLOSE":
            return encode_tx(kind, recall_id="recall-0")
        if kind == "GTIN_REGISTER":
            return encode_tx(kind, gtin="00614141000012")
        if kind == "EPCIS_SHIP":
            return encode_tx(kind, epcs=["urn:epc:id:sgtin:0614141.000001.1"], to="x",
                             event_hash=epcis_event_hash({"x": 1}))
        return encode_tx(kind, consent_id=self._id("x"), patient=pseudonym, grantee="x",
                         actions=["access"], purposes=["TREAT"],
                         period={"start": "2025-01-01T00:00:00Z",
                                 "end": "2026-01-01T00:00:00Z"},
                         doc_commitment=commitment({"x": 1}, b""))


# -- stories: scripted transactions of the named flows ----------------------------------------

Script = Callable[[], list[tuple[str, Pending]]]


class Stories:
    """The scripted part of a named flow: what happens at `event_at`, and what follows.

    `script()` gives (time, builder) pairs for the workload to schedule; a builder returns the
    (identity, transaction) pairs to submit then, each on a session of its own. Follow-ups
    that depend on a result (the inspector's flag after a counterfeit is caught, the race
    after a consent is granted) are queued in `traffic.followups`.
    """

    RACE_EVERY_NS = 400_000_000

    def __init__(self, traffic: LedgerTraffic) -> None:
        self.t = traffic
        self.g = traffic.g

    def _first(self, role: str) -> str | None:
        return next((p for p, party in sorted(self.g.parties.items()) if party.role == role),
                    None)

    def script(self) -> list[tuple[int, Script]]:
        t = self.t
        at = t.event_at_ns
        if t.flow == "vaccine-recall":
            return [(at, self.recall)]
        if t.flow == "counterfeit":
            return [(at, self.counterfeit)]
        if t.flow == "consent-race":
            times = range(at, max(at + 1, t.duration_ns - self.RACE_EVERY_NS),
                          self.RACE_EVERY_NS)
            return [(when, self._race_at(k)) for k, when in enumerate(times)]
        return []

    def recall(self) -> list[tuple[str, Pending]]:
        w = self.t.w
        in_stock = {lot: 0 for lot in w.lots}
        for pool in list(w.stock.values()) + list(w.held.values()):
            for e in pool:
                in_stock[w.lot_of[e]] += 1
        lots = sorted((lot for lot in w.lots if lot not in w.recalled),
                      key=lambda lot: (not w.administered.get(lot), -in_stock[lot],
                                       -w.administered.get(lot, 0), lot))
        if not lots:
            self.t.story["recall_skipped"] = "no lot commissioned before event_at"
            return []
        lot = lots[0]
        issuer = next((p for p, party in sorted(self.g.parties.items())
                       if party.role == "manufacturer" and party.org == w.lots[lot][2]),
                      None) or self._first("inspector")
        if issuer is None:
            return []
        self.t.story["recall_submitted_s"] = self.t.now_ns / 1e9
        return [(issuer, self.t.recall_tx(lot))]

    def counterfeit(self) -> list[tuple[str, Pending]]:
        w, t = self.t.w, self.t
        forger = self._first("pharmacist") or self._first("distributor")
        if forger is None or not w.known_epcs:
            t.story["counterfeit_skipped"] = "no pharmacist or no serial known at event_at"
            return []
        org = self.g.parties[forger].org
        mine = [e for e in w.stock.get(org, []) + w.held.get(org, [])]
        epc = (mine or w.known_epcs)[0]
        lot = w.lot_of[epc]
        gtin, expiry, _ = w.lots[lot]
        event = doc.epcis_event("EPCIS_COMMISSION", self.g, org, [epc], t.calendar_ns,
                                lot=lot, expiry=expiry)
        story = t.story.setdefault("counterfeit", {"forger": forger, "epc": epc,
                                                   "submitted_s": t.now_ns / 1e9})

        def caught(result: bytes) -> None:
            story["result"] = result.decode()
            story["caught_s"] = t.now_ns / 1e9
            inspector = self._first("inspector")
            if inspector is not None:
                t.followups.append((inspector, self.flag(epc, story)))

        op = encode_tx("EPCIS_COMMISSION", gtin=gtin, epcs=[epc], lot=lot, expiry=expiry,
                       event_hash=t._event_hash(event))
        return [(forger, Pending(op, "EPCIS_COMMISSION", caught, caught, valid=False))]

    def flag(self, epc: str, story: dict[str, Any]) -> Pending:
        def ok(_: bytes) -> None:
            story["flagged_s"] = self.t.now_ns / 1e9
            incident = self.t._id("incident")
            self.t.followups.append((self._first("inspector") or "", Pending(
                encode_tx("ILLEGITIMATE_NOTIFY", incident_id=incident, epc=epc,
                          classification="counterfeit"), "ILLEGITIMATE_NOTIFY",
                lambda r: story.update(notified_s=self.t.now_ns / 1e9, incident=incident))))

        return Pending(encode_tx("SUSPECT_FLAG", epc=epc, basis="duplicate-commission"),
                       "SUSPECT_FLAG", ok)

    def _race_at(self, k: int) -> Script:
        return lambda: self.race(k)

    def race(self, k: int) -> list[tuple[str, Pending]]:
        t = self.t
        patients = t.patients
        hospitals = self.g.orgs_of_type("hospital")
        clinicians = [p for p, party in sorted(self.g.parties.items())
                      if party.role in ("clinician", "pharmacist")]
        if not patients or not clinicians:
            t.story["race_skipped"] = "needs a patient and a clinician"
            return []
        patient = patients[k % len(patients)]
        clinician = clinicians[k % len(clinicians)]
        grantee = self.g.parties[clinician].org
        custodian = next((o for o in hospitals + t.custodians if o != grantee), grantee)
        grant = t.grant_tx(patient, custodian, grantee)
        consent_id = grant.op.decode().split('"consent_id":"')[1].split('"')[0]
        pseudonym = self.g.pseudonyms_of(patient)[custodian]
        entry = {"race": k, "consent_id": consent_id, "patient": pseudonym,
                 "requester": clinician, "revoke_submitted_first": k % 2 == 0}
        t.story.setdefault("races", []).append(entry)

        def granted(_: bytes) -> None:
            revoke = (patient, t.revoke_tx(patient, consent_id))
            access = (clinician, Pending(
                encode_tx("ACCESS_REQUEST", patient=pseudonym, purpose="TREAT"),
                "ACCESS_REQUEST", lambda r: entry.update(access=r.decode()),
                lambda r: entry.update(access=r.decode())))
            t.followups.extend([revoke, access] if k % 2 == 0 else [access, revoke])

        recorded = grant.on_ok

        def both(result: bytes) -> None:
            recorded(result)
            granted(result)

        grant.on_ok = both
        return [(patient, grant)]


def _script(traffic: LedgerTraffic) -> list[tuple[int, Script]]:
    return Stories(traffic).script()


LedgerTraffic.script = _script  # type: ignore[attr-defined]
