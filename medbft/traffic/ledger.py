"""Realistic ledger traffic: what each simulated client identity submits next, given what has
committed so far.

Why this exists: researchers need workloads instead of no-ops, and teachers need stories.
`LedgerTraffic` keeps a model of the world *as the clients know it* (medbft/traffic/world.py,
updated only from accepted results), and asks each identity, by its role, what it can do
now: a manufacturer registers its GTIN, commissions lots and ships them; distributors
receive and ship on; pharmacies and hospitals receive, dispense, administer and anchor
records; patients grant and revoke consents; clinicians request access; the regulator
reviews break-glass accesses and closes recalls. Kinds are picked with `workload.mix`
weights (or the flow's defaults, `FLOWS`); a share `workload.invalid` of the transactions
is deliberately bad. Named flows add a scripted story at `workload.event_at`.

The transactions themselves are built by domain: supply.py (GTINs, lots, shipping,
receiving, dispensing, recalls), care.py (administration, record anchors), consent.py
(consents, access requests, break glass), invalid.py (deliberately bad ones), stories.py
(the named flows' scripts). Off-chain payloads are real EPCIS 2.0 events and FHIR R4
resources (node/ledger/documents.py); only their hashes and salted commitments go into the
transactions. They are kept in `offchain` so a run can save them and `medbft ledger verify`
can check them.

What it must not know: how requests are submitted and sessions kept (the workload,
medbft/traffic/workload.py, calls `next_op`, `on_result`, `script` and drains `followups`).
Determinism: one seeded `random.Random`; every choice iterates sorted collections, and the
options of a role are listed in a fixed order (the weighted pick depends on it).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

from node.ledger.genesis import LedgerGenesis

from .care import Care
from .consent import Consent
from .invalid import InvalidTxs
from .logistics import Logistics
from .partner_stories import PartnerStories
from .partners import Partners
from .stories import Script, Stories
from .supply import COLD_RANGE, SupplyChain
from .world import Build, Pending, TrafficState

__all__ = ["FLOWS", "LedgerTraffic"]

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
    # issue 16: the partners' stories (their kinds appear in no other flow)
    "insurance-claim": {**SUPPLY, **CLINICAL, "RECALL_ISSUE": 0.0, "CLAIM_SUBMIT": 2.0,
                        "CLAIM_ADJUDICATE": 4.0, "BIOMETRIC_ENROLL": 0.0,
                        "BIOMETRIC_REVOKE": 0.0},
    "research-study": {**SUPPLY, **CLINICAL, "RECALL_ISSUE": 0.0, "RESEARCH_QUERY": 0.5,
                       "BIOMETRIC_VERIFY": 0.5},
    "cold-chain-excursion": {**SUPPLY, **CLINICAL, "RECALL_ISSUE": 0.0, "SUSPECT_FLAG": 0.0,
                             "SUSPECT_CLEAR": 0.3, "EPCIS_AGGREGATE": 2.0,
                             "EPCIS_DISAGGREGATE": 4.0, "EPCIS_RETURN": 3.0,
                             "AE_REVIEW_CLOSE": 2.0},
}
#: The kinds issue 16 added: the generator offers them (and the payment and research
#: consents, storage ranges and cases behind them) only when the flow or mix weighs one.
PARTNER_KINDS = ("AE_REVIEW_CLOSE", "BIOMETRIC_VERIFY", "CLAIM_ADJUDICATE", "CLAIM_SUBMIT",
                 "COLD_CHAIN_EXCURSION", "EPCIS_AGGREGATE", "EPCIS_DISAGGREGATE",
                 "EPCIS_RETURN", "RESEARCH_QUERY", "STUDY_APPROVE")
MAX_CONSENTS = 4  # a patient keeps a handful of consents in force, then revokes
SUPPLY_ROLES = ("manufacturer", "distributor", "pharmacist", "clinician")
#: Roles `_options` offers nothing and `InvalidTxs` no bad transaction: they act only in
#: scripted stories (tests/test_traffic_idle.py checks that next_op never has one for them).
NEVER_ACTING_ROLES = ("auditor",)


class LedgerTraffic(TrafficState):
    """Generates the next transaction of each identity; learns from accepted results."""

    def __init__(self, genesis: LedgerGenesis, rng: random.Random, *, flow: str = "mixed",
                 mix: dict[str, float] | None = None, invalid: float = 0.0,
                 event_at_ns: int | None = None, duration_ns: int = 0,
                 keep_documents: int = 20_000, recall_news: str | None = None) -> None:
        super().__init__(genesis, rng, keep_documents=keep_documents)
        self.flow = flow
        self.weights = dict(mix) if mix is not None else dict(FLOWS[flow])
        self.invalid = invalid
        self.event_at_ns = event_at_ns if event_at_ns is not None else duration_ns // 2
        self.duration_ns = duration_ns
        #: "committed": custodians stop using a recalled lot only once its recall commits
        #: (the ledger is their only news); otherwise as soon as it is submitted.
        self.recall_news = recall_news or "submitted"
        self.pending: dict[tuple[str, int], Pending] = {}
        #: Requests the replicas refused at admission (never ordered), by rule.
        self.refused: dict[str, int] = {}
        self.supply = SupplyChain(self)
        self.care = Care(self)
        self.consent = Consent(self)
        self.bad = InvalidTxs(self)
        self.partners = Partners(self)
        self.logistics = Logistics(self)
        self.partners_on = any(self.weights.get(k, 0.0) > 0 for k in PARTNER_KINDS)
        #: Storage range of commissioned lots (°C): only in the cold-chain flow or mix.
        self.storage_range = COLD_RANGE if (flow == "cold-chain-excursion" or self.weights.get(
            "COLD_CHAIN_EXCURSION", 0.0) > 0) else None

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
            pending = self.bad.build(cid)
        if pending is None:
            weights = [self.weights[kind] for kind, _ in options]
            pending = self.rng.choices(options, weights)[0][1]()
        self.pending[(cid, session)] = pending
        return pending.op

    def never_acts(self, cid: str) -> bool:
        """True if `next_op` can never have a transaction for `cid` in this run: an unknown
        identity, or a role with no option here and no invalid transaction (the auditor, who
        reads the ledger and acts only in scripted stories). The workload then stops asking."""
        party = self.g.parties.get(cid)
        return party is None or party.role in NEVER_ACTING_ROLES

    def on_result(self, cid: str, session: int, result: bytes,
                  now_ns: int | None = None) -> None:
        """`cid`'s request of `session` was answered with `result` at `now_ns` (the time its
        outcome is noted at: a recall's commit or close, say; without it, the time of the last
        `next_op`)."""
        if now_ns is not None:
            self.now_ns = now_ns
        pending = self.pending.pop((cid, session), None)
        if pending is None:
            return
        if result.startswith(b"refused:"):
            rule = result[8:].decode(errors="replace")
            self.refused[rule] = self.refused.get(rule, 0) + 1
        if result.startswith((b"ok", b"permit")):
            pending.on_ok(result)
        else:
            pending.on_fail(result)

    def submit_scripted(self, cid: str, session: int, pending: Pending) -> bytes:
        self.pending[(cid, session)] = pending
        return pending.op

    def script(self) -> list[tuple[int, Script]]:
        """The named flow's scripted story: (time, builder) pairs (see stories.py)."""
        return Stories(self).script() + PartnerStories(self).script()

    # -- what each role can do now ------------------------------------------------------------
    # Stock is read lazily: a request needs the first movable unit (or the first few of one
    # lot), and scanning every unit an organisation ever held made each request cost O(run).

    def _live(self, pool: Iterable[str]) -> Iterator[str]:
        """The units of `pool` that may still move (their lot is not recalled), in order."""
        w = self.w
        return (e for e in pool if w.lot_of[e] not in w.recalled)

    def _first_live(self, pool: Iterable[str]) -> str | None:
        return next(self._live(pool), None)

    def _options(self, cid: str, role: str, org: str) -> list[tuple[str, Build]]:
        w, sc, out = self.w, self.supply, []
        stock: Iterable[str] = w.stock.get(org, ())
        first = self._first_live(stock)
        if role == "manufacturer":
            if org not in w.gtin:
                if org not in w.gtin_pending:
                    out.append(("GTIN_REGISTER", lambda: sc.gtin_register(org)))
                return out
            out.append(("EPCIS_COMMISSION", lambda: sc.commission(org, self.storage_range)))
            if sc.has_own_lot(org):
                out.append(("RECALL_ISSUE", lambda: sc.recall(org)))
        if role in SUPPLY_ROLES:
            if first is not None and role != "pharmacist" and role != "clinician":
                out.append(("EPCIS_SHIP", lambda: sc.ship(org, self._live(stock))))
            if w.inbound.get(org):
                out.append(("EPCIS_RECEIVE", lambda: sc.receive(org)))
            if w.known_epcs:
                out.append(("PRODUCT_VERIFY", lambda: sc.verify()))
            acks = [r for r, (lots, exposed, acked) in sorted(w.recalls.items())
                    if org in exposed and org not in acked]
            if acks:
                out.append(("RECALL_ACK", lambda: sc.recall_ack(org, acks[0])))
        if role in ("pharmacist", "clinician"):
            out += self._care_options(cid, role, org, first)
        if role == "patient":
            out += self._patient_options(cid)
        if role == "inspector":
            out += self._inspector_options()
        if self.partners_on:
            out += self._partner_options(cid, role, org)
        return out

    def _on(self, kind: str) -> bool:
        return self.weights.get(kind, 0.0) > 0

    def _partner_options(self, cid: str, role: str, org: str) -> list[tuple[str, Build]]:
        """Issue 16's kinds, each only when the flow or mix weighs it (then by role)."""
        w, p, lg, out = self.w, self.partners, self.logistics, []
        if role == "patient" and self._on("CLAIM_SUBMIT") and p.insurers \
                and len(w.consents.get(cid, ())) < MAX_CONSENTS and not any(
                    w.consent_purpose.get(c[0]) == "HPAYMT" for c in w.consents.get(cid, ())):
            out.append(("CONSENT_GRANT", lambda: p.payment_consent(cid)))
        if role in ("clinician", "pharmacist"):
            if self._on("CLAIM_SUBMIT") and p.insurers and p.billable(org):
                out.append(("CLAIM_SUBMIT", lambda: p.claim(org, role)))
            if self._on("BIOMETRIC_VERIFY") and p.verifiable(org):
                out.append(("BIOMETRIC_VERIFY", lambda: p.verify(org)))
        if role == "insurer" and any(ins == org for _, ins in w.claims):
            out.append(("CLAIM_ADJUDICATE", lambda: p.adjudicate(cid)))
        if role == "ethics_board" and p.unapproved():
            out.append(("STUDY_APPROVE", lambda: p.study_tx(cid, p.unapproved()[0])))
        if role == "researcher" and cid in w.studies:
            out.append(("RESEARCH_QUERY", lambda: p.query(cid)))
        if role in SUPPLY_ROLES:
            out += self._logistics_options(role, org)
        if role == "inspector" and w.signals:
            out.append(("AE_REVIEW_CLOSE", lambda: lg.close_review()))
        return out

    def _logistics_options(self, role: str, org: str) -> list[tuple[str, Build]]:
        w, lg, out = self.w, self.logistics, []
        shipper = role in ("manufacturer", "distributor")
        if shipper and self._on("EPCIS_AGGREGATE") and len(lg.packable(org)) > 1:
            out.append(("EPCIS_AGGREGATE", lambda: lg.pack(org)))
        if w.cases.get(org):
            if shipper:
                out.append(("EPCIS_SHIP", lambda: lg.ship_case(org)))
            if role != "manufacturer":
                out.append(("EPCIS_DISAGGREGATE", lambda: lg.unpack(org)))
        if w.inbound_cases.get(org):
            out.append(("EPCIS_RECEIVE", lambda: lg.receive_case(org)))
        if role != "manufacturer" and self._on("EPCIS_RETURN") and lg.returnable(org):
            out.append(("EPCIS_RETURN", lambda: lg.return_units(org)))
        if self._on("COLD_CHAIN_EXCURSION") and lg.warm_lots(org):
            out.append(("COLD_CHAIN_EXCURSION", lambda: lg.excursion(org)))
        return out

    def _care_options(self, cid: str, role: str, org: str,
                      first: str | None) -> list[tuple[str, Build]]:
        w, care, consent, out = self.w, self.care, self.consent, []
        held = self._first_live(w.held.get(org, []))
        if first is not None:
            out.append(("EPCIS_DISPENSE", lambda: self.supply.dispense(org, first)))
        dose = held if held is not None else first
        if dose is not None and self.patients:
            out.append(("IMMUNIZATION_ADMINISTER", lambda: care.administer(cid, org, dose)))
        if self.patients and self.g.orgs.get(org) in ("hospital", "pharmacy"):
            out.append(("RECORD_ANCHOR", lambda: care.anchor(role, org)))
            if w.records.get(org):
                out.append(("RECORD_AMEND", lambda: care.amend(org)))
            out.append(("ACCESS_REQUEST", lambda: consent.access(org)))
            if role == "clinician":
                out.append(("BREAK_GLASS", lambda: consent.break_glass()))
        if role == "clinician" and w.lots:
            out.append(("ADVERSE_EVENT_REPORT", lambda: care.adverse()))
        return out

    def _patient_options(self, cid: str) -> list[tuple[str, Build]]:
        consent, out = self.consent, []
        if len(self.w.consents.get(cid, ())) < MAX_CONSENTS:
            out.append(("CONSENT_GRANT", lambda: consent.grant(cid)))
        if self.w.consents.get(cid):
            out.append(("CONSENT_REVOKE", lambda: consent.revoke(cid)))
        out.append(("ACCESS_REQUEST", lambda: consent.own_access(cid)))
        mine = sorted(self.pseudonyms_of(cid).values())
        if mine:
            out.append(("BIOMETRIC_ENROLL", lambda: consent.enroll(mine)))
            if any(self.w.biometrics.get(p, 0) > 0 for p in mine):
                out.append(("BIOMETRIC_REVOKE", lambda: consent.unenroll(mine)))
        return out

    def _inspector_options(self) -> list[tuple[str, Build]]:
        w, sc, consent, out = self.w, self.supply, self.consent, []
        if w.reviews:
            out.append(("BREAK_GLASS_REVIEW", lambda: consent.review()))
        closable = [r for r, (_, exposed, acked) in sorted(w.recalls.items())
                    if exposed <= acked]
        if closable:
            out.append(("RECALL_CLOSE", lambda: sc.recall_close(closable[0])))
        if w.suspects:
            out.append(("SUSPECT_CLEAR", lambda: sc.suspect_clear()))
        if len(w.lots) > len(w.suspects):
            out.append(("SUSPECT_FLAG", lambda: sc.suspect_flag()))
        if self.patients:
            out.append(("ACCESS_REQUEST", lambda: consent.metadata_access()))
        return out
