"""Stories: the scripted transactions of the named flows (a recall, a counterfeit, consent
races), on top of the background traffic.

Why this exists: teachers need stories that happen at a known time. At `workload.event_at`
a vaccine-recall flow recalls a lot (preferring one already given to patients and, among
those, the one with the most doses still in stock); a counterfeit flow has a pharmacist
re-commission a serial that already exists (the inspector then flags it and notifies); a
consent-race flow grants consents, then races a revocation against an access request,
alternating which goes first. What each step did is recorded in `traffic.story`
(medbft/apps.py reports it with what the ledger shows).

What it must not know: how transactions are submitted (medbft/traffic/workload.py schedules
`script()` and drains `traffic.followups`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from node.ledger import documents as doc
from node.ledger.genesis import LedgerGenesis
from node.ledger.txs import encode_tx

from .consent import Consent
from .supply import SupplyChain
from .world import Pending, World

__all__ = ["Script", "Stories", "StoryTraffic"]

Script = Callable[[], list[tuple[str, Pending]]]


class StoryTraffic(Protocol):
    """What the stories read and write of the ledger traffic (medbft/traffic/ledger.py's
    `LedgerTraffic` is one): the genesis and world, the flow and its clock, the builders of
    recalls and consents, and where results go (`story`, `followups`)."""

    @property
    def g(self) -> LedgerGenesis: ...
    @property
    def w(self) -> World: ...
    @property
    def flow(self) -> str: ...
    @property
    def event_at_ns(self) -> int: ...
    @property
    def duration_ns(self) -> int: ...
    @property
    def now_ns(self) -> int: ...
    @property
    def calendar_ns(self) -> int: ...
    @property
    def patients(self) -> list[str]: ...
    @property
    def custodians(self) -> list[str]: ...
    @property
    def supply(self) -> SupplyChain: ...
    @property
    def consent(self) -> Consent: ...
    @property
    def story(self) -> dict[str, Any]: ...
    @property
    def followups(self) -> list[tuple[str, Pending]]: ...
    def new_id(self, prefix: str) -> str: ...
    def event_hash(self, event: dict[str, Any]) -> str: ...


class Stories:
    """The scripted part of a named flow: what happens at `event_at`, and what follows.

    `script()` gives (time, builder) pairs for the workload to schedule; a builder returns the
    (identity, transaction) pairs to submit then, each on a session of its own. Follow-ups
    that depend on a result (the inspector's flag after a counterfeit is caught, the race
    after a consent is granted) are queued in `traffic.followups`.
    """

    RACE_EVERY_NS = 400_000_000

    def __init__(self, traffic: StoryTraffic) -> None:
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
        return [(issuer, self.t.supply.recall_tx(lot))]

    def counterfeit(self) -> list[tuple[str, Pending]]:
        w, t = self.t.w, self.t
        forger = self._first("pharmacist") or self._first("distributor")
        if forger is None or not w.known_epcs:
            t.story["counterfeit_skipped"] = "no pharmacist or no serial known at event_at"
            return []
        org = self.g.parties[forger].org
        mine = [*w.stock.get(org, ()), *w.held.get(org, ())]
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
                       event_hash=t.event_hash(event))
        return [(forger, Pending(op, "EPCIS_COMMISSION", caught, caught, valid=False))]

    def flag(self, epc: str, story: dict[str, Any]) -> Pending:
        def ok(_: bytes) -> None:
            story["flagged_s"] = self.t.now_ns / 1e9
            incident = self.t.new_id("incident")
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
        grant = t.consent.grant_tx(patient, custodian, grantee)
        consent_id = grant.op.decode().split('"consent_id":"')[1].split('"')[0]
        pseudonym = self.g.pseudonyms_of(patient)[custodian]
        entry = {"race": k, "consent_id": consent_id, "patient": pseudonym,
                 "requester": clinician, "revoke_submitted_first": k % 2 == 0}
        t.story.setdefault("races", []).append(entry)

        def granted(_: bytes) -> None:
            revoke = (patient, t.consent.revoke_tx(patient, consent_id))
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
