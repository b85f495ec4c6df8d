"""The scripted stories of issue 16's flows: an insurance claim, a research study, a cold-chain
excursion, each a chain of transactions at `workload.event_at` on top of the background
traffic.

Why this exists: each story shows one rule of the ledger at work, at a known time, and
records every step's result in `traffic.story` (summary.json `ledger.story`):
- `insurance-claim`: a patient is verified biometrically at the point of care, consents to
  payment, and the hospital's claim is paid; a second claim is submitted, the patient revokes
  the consent before the insurer decides, and the payment is refused (`no-consent`) and
  denied; then the patient renews the biometric reference: re-enrolling the old identifier
  is refused (`pi-reused`), and the old reference no longer verifies
  (`stale-template-version`);
- `research-study`: an ethics board approves a study; its researcher asks for a count after
  each patient consents to research, and the answers stay suppressed until the cohort
  reaches the study's minimum; one revocation later the count shrinks again;
- `cold-chain-excursion`: a sensor reading above the lot's range quarantines the lot; a
  dispensing attempt from it is refused (`quarantined`), a verification shows the
  quarantine, a serious adverse-event report opens a regulator review, and the custodians
  return the lot's stock upstream (background traffic).

What it must not know: how transactions are submitted (medbft/traffic/workload.py schedules
`script()` and drains `traffic.followups`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from node.ledger.txs import commitment, encode_tx

from .care import Care
from .logistics import Logistics
from .partners import Partners
from .stories import Script, StoryTraffic
from .supply import SupplyChain
from .world import Pending

__all__ = ["PartnerStories"]

Step = tuple[str, str, Callable[[], Pending | None]]
"""(label, identity, builder): the builder runs when the step is due (None: skip it)."""


class PartnerTraffic(StoryTraffic, Protocol):
    """What these stories need besides `StoryTraffic`: the partners' and logistics builders."""

    @property
    def partners(self) -> Partners: ...
    @property
    def logistics(self) -> Logistics: ...
    @property
    def care(self) -> Care: ...
    @property
    def supply(self) -> SupplyChain: ...


class PartnerStories:
    """The scripted part of the insurance-claim, research-study and cold-chain flows."""

    def __init__(self, traffic: PartnerTraffic) -> None:
        self.t = traffic
        self.g = traffic.g

    def _first(self, *roles: str) -> str | None:
        return next((p for p, party in sorted(self.g.parties.items()) if party.role in roles),
                    None)

    def script(self) -> list[tuple[int, Script]]:
        stories = {"insurance-claim": self.claim, "research-study": self.research,
                   "cold-chain-excursion": self.cold_chain}
        story = stories.get(self.t.flow)
        return [] if story is None else [(self.t.event_at_ns, story)]

    # -- one step after another ---------------------------------------------------------------

    def chain(self, steps: list[Step], log: list[dict[str, Any]]) -> list[tuple[str, Pending]]:
        """Submit `steps` one after another, each once the previous one's result is known;
        every result goes into `log`."""

        def run(k: int) -> list[tuple[str, Pending]]:
            while k < len(steps):
                label, cid, build = steps[k]
                pending = build()
                if pending is None:
                    log.append({"step": label, "skipped": True})
                    k += 1
                    continue
                pending.on_ok = self._then(pending.on_ok, label, cid, log, k, run)
                pending.on_fail = self._then(pending.on_fail, label, cid, log, k, run)
                return [(cid, pending)]
            return []

        return run(0)

    def _then(self, inner: Callable[[bytes], None], label: str, cid: str,
              log: list[dict[str, Any]], k: int,
              run: Callable[[int], list[tuple[str, Pending]]]) -> Callable[[bytes], None]:
        def done(result: bytes) -> None:
            inner(result)
            log.append({"step": label, "by": cid, "result": result.decode(),
                        "at_s": self.t.now_ns / 1e9})
            self.t.followups.extend(run(k + 1))
        return done

    # -- insurance claim ----------------------------------------------------------------------

    def claim(self) -> list[tuple[str, Pending]]:
        t, p = self.t, self.t.partners
        patient, clinician = self._first("patient"), self._first("clinician")
        insurer = self._first("insurer")
        if patient is None or clinician is None or insurer is None:
            t.story["claim_skipped"] = "needs a patient, a clinician and an insurer"
            return []
        org, payer = self.g.parties[clinician].org, self.g.parties[insurer].org
        pseudonym = self.g.pseudonyms_of(patient)[org]
        old = (commitment({"pi": f"{pseudonym}|1"}, b""), commitment({"ad": "1"}, b""), 1)
        new = (commitment({"pi": f"{pseudonym}|2"}, b""), commitment({"ad": "2"}, b""), 2)
        story: dict[str, Any] = {"patient": pseudonym, "provider": org, "insurer": payer,
                                 "steps": []}
        t.story["claim"] = story
        ids: dict[str, str] = {}

        def enrol(ref: tuple[str, str, int]) -> Pending:
            return Pending(encode_tx("BIOMETRIC_ENROLL", subject=pseudonym, pi_commitment=ref[0],
                                     template_version=ref[2], ad_ref_hash=ref[1]),
                           "BIOMETRIC_ENROLL")

        def anchor(key: str) -> Pending:
            ids[key] = t.new_id("rec")
            resource = {"resourceType": "Procedure", "id": ids[key], "status": "completed",
                        "subject": {"reference": f"Patient/{pseudonym}"},
                        "code": {"coding": [{"system": "http://snomed.info/sct",
                                             "code": "80146002"}]}}
            return Pending(encode_tx("RECORD_ANCHOR", record_id=ids[key], patient=pseudonym,
                                     resource_type="Procedure",
                                     commitment=t.partners.s.salted(resource, ids[key]),
                                     fhir_version="4.0.1"), "RECORD_ANCHOR")

        def consent() -> Pending:
            pending = p.consent_tx(patient, org, payer, "HPAYMT", "disclose")
            ids["consent"] = pending.op.decode().split('"consent_id":"')[1].split('"')[0]
            pending.on_ok = lambda _: None   # the story's own: background never revokes it
            return pending

        def bill(key: str) -> Pending:
            ids["claim-" + key] = t.new_id("claim")
            return Pending(encode_tx("CLAIM_SUBMIT", claim_id=ids["claim-" + key],
                                     patient=pseudonym, to=payer, claim_type="professional",
                                     record_ids=[ids[key]], amount=125_000,
                                     claim_commitment=commitment({"claim": ids[key]}, b"")),
                           "CLAIM_SUBMIT")

        def decide(key: str, approve: bool, reason: str) -> Pending:
            return Pending(encode_tx("CLAIM_ADJUDICATE", claim_id=ids["claim-" + key],
                                     decision="approve" if approve else "deny",
                                     reason_code=reason), "CLAIM_ADJUDICATE")

        steps: list[Step] = [
            ("enrol-biometric", patient, lambda: enrol(old)),
            ("verify-identity", clinician, lambda: p.verify_tx(pseudonym, True, old)),
            ("anchor-procedure", clinician, lambda: anchor("r1")),
            ("consent-to-payment", patient, consent),
            ("submit-claim", clinician, lambda: bill("r1")),
            ("pay-claim", insurer, lambda: decide("r1", True, "covered")),
            ("anchor-follow-up", clinician, lambda: anchor("r2")),
            ("submit-second-claim", clinician, lambda: bill("r2")),
            ("revoke-payment-consent", patient, lambda: Pending(
                encode_tx("CONSENT_REVOKE", consent_id=ids["consent"]), "CONSENT_REVOKE")),
            ("pay-second-claim", insurer, lambda: decide("r2", True, "covered")),
            ("deny-second-claim", insurer, lambda: decide("r2", False, "no-consent")),
            ("revoke-biometric", patient, lambda: Pending(
                encode_tx("BIOMETRIC_REVOKE", subject=pseudonym), "BIOMETRIC_REVOKE")),
            ("re-enrol-old-identifier", patient, lambda: enrol((old[0], new[1], 2))),
            ("renew-biometric", patient, lambda: enrol(new)),
            ("verify-old-reference", clinician, lambda: p.verify_tx(pseudonym, True, old)),
            ("verify-renewed", clinician, lambda: p.verify_tx(pseudonym, True, new)),
        ]
        return self.chain(steps, story["steps"])

    # -- research study -----------------------------------------------------------------------

    def research(self) -> list[tuple[str, Pending]]:
        t, p = self.t, self.t.partners
        board, researcher = self._first("ethics_board"), self._first("researcher")
        if board is None or researcher is None or not t.patients:
            t.story["research_skipped"] = "needs an ethics board, a researcher and patients"
            return []
        org = self.g.parties[researcher].org
        story: dict[str, Any] = {"researcher": researcher, "steps": []}
        t.story["research"] = story
        granted: list[str] = []

        def consent(patient: str) -> Pending | None:
            custodian = self._records_at(patient)
            if custodian is None:
                return None
            pending = p.consent_tx(patient, custodian, org, "HRESCH", "use")
            granted.append(pending.op.decode().split('"consent_id":"')[1].split('"')[0])
            pending.on_ok = lambda _: None   # the story's own: background never revokes it
            return pending

        def ask() -> Pending:
            return p.query_tx(researcher, "Observation", "patients")

        steps: list[Step] = [("approve-study", board,
                              lambda: p.study_tx(board, researcher, ("Observation",))),
                             ("query", researcher, ask)]
        for patient in t.patients:
            steps += [("consent:" + patient, patient, self._bind(consent, patient)),
                      ("query", researcher, ask)]
        steps += [("query-records", researcher,
                   lambda: p.query_tx(researcher, "Observation", "records")),
                  ("revoke-one", t.patients[0], lambda: Pending(
                      encode_tx("CONSENT_REVOKE", consent_id=granted[0]), "CONSENT_REVOKE")
                   if granted else None),
                  ("query-after-revocation", researcher, ask)]
        return self.chain(steps, story["steps"])

    @staticmethod
    def _bind(build: Callable[[str], Pending | None], arg: str) -> Callable[[], Pending | None]:
        return lambda: build(arg)

    def _records_at(self, patient: str) -> str | None:
        """The hospital holding most of the patient's anchored records (Observations: the
        clients' view), or None."""
        w, mine = self.t.w, self.g.pseudonyms_of(patient)
        counts = {org: sum(1 for r in w.records.get(org, []) if r[1] == pp)
                  for org, pp in mine.items() if self.g.orgs[org] == "hospital"}
        best = max(sorted(counts), key=lambda o: counts[o], default=None)
        return best if best is not None and counts[best] else None

    # -- cold chain ---------------------------------------------------------------------------

    def cold_chain(self) -> list[tuple[str, Pending]]:
        t, lg = self.t, self.t.logistics
        w = t.w
        holders = [(org, lot) for org in t.custodians for lot in lg.warm_lots(org)]
        if not holders:
            t.story["cold_chain_skipped"] = "no custodian held a lot with a storage range"
            return []
        held = {pair: sum(1 for e in w.stock.get(pair[0], []) if w.lot_of[e] == pair[1])
                for pair in holders}
        org, lot = max(sorted(held), key=lambda pair: held[pair])
        reporter = self._member(org)
        clinician = self._first("clinician")
        if reporter is None:
            return []
        story: dict[str, Any] = {"lot": lot, "reported_by": reporter, "steps": []}
        t.story["cold_chain"] = story

        def unit() -> str | None:
            return next((e for e in w.stock.get(org, []) if w.lot_of[e] == lot), None)

        def dispense() -> Pending | None:
            epc = unit()
            return None if epc is None else t.supply.dispense(org, epc)

        def verify() -> Pending | None:
            epc = unit()
            return None if epc is None else Pending(encode_tx(
                "PRODUCT_VERIFY", epc=epc, lot=lot, expiry=w.lots[lot][1]), "PRODUCT_VERIFY")

        def report() -> Pending:
            def opened(result: bytes) -> None:
                if result.startswith(b"ok:review:"):
                    w.signals.append(result.decode().rsplit(":", 1)[1])

            return Pending(encode_tx("ADVERSE_EVENT_REPORT", lot=lot, severity="severe",
                                     report_commitment=commitment({"ae": lot}, b"")),
                           "ADVERSE_EVENT_REPORT", opened)

        steps: list[Step] = [
            ("excursion", reporter, lambda: lg.excursion_tx(org, lot, "12.4")),
            ("dispense-attempt", reporter, dispense),
            ("verify-unit", reporter, verify),
        ]
        if clinician is not None:
            steps.append(("serious-adverse-event", clinician, report))
        return self.chain(steps, story["steps"])

    def _member(self, org: str) -> str | None:
        """A pharmacist or clinician of `org` (its first, in id order)."""
        return next((p for p, party in sorted(self.g.parties.items())
                     if party.org == org and party.role in ("pharmacist", "clinician")), None)
