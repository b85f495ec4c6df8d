"""Traffic of the partners issue 16 added: payment and research consents, insurance claims and
their adjudication, ethics approval of studies, aggregate research queries, and biometric
verification at the point of care.

Why this exists: claims and research are where consent purposes other than treatment matter.
A patient consents to disclose its care to its insurer for payment (`HPAYMT`) or to a
researcher for research (`HRESCH`); a hospital or pharmacy bills the insurer for records it
anchored (a FHIR R4 Claim behind a salted commitment, naming record ids only) and the insurer
pays or denies (a ClaimResponse); an ethics board approves a researcher's study (a
ResearchStudy) and the researcher asks for counts; a clinician verifies a patient against
the enrolled biometric reference (the fuzzy extractor runs on the device; the ledger sees a
commitment to the reproduced identifier). These builders run only in the flows that ask for
these kinds (`workload.flow` insurance-claim or research-study, or a `mix` naming them).

What it must not know: who may call a builder, and when (the coordinator,
medbft/traffic/ledger.py).
"""

from __future__ import annotations

from node.ledger import documents as doc
from node.ledger.txs import commitment, encode_tx

from .consent import grant_consent
from .world import Pending, TrafficState

__all__ = ["DENY_REASONS", "Partners"]

#: Why the simulated insurers deny a claim now and then.
DENY_REASONS = ("not-covered", "not-medically-necessary", "missing-information")
APPROVE_SHARE = 0.85
GENUINE_SHARE = 0.9   # a verification by the patient themself (else an impostor's probe)
STUDY_MIN_COHORT = 5
STUDY_CLASSES = ("Immunization", "Observation")


class Partners:
    """Builders of the claims, research and verification transactions."""

    def __init__(self, state: TrafficState) -> None:
        self.s = state
        self.insurers = state.g.orgs_of_type("insurer")
        self.research_orgs = state.g.orgs_of_type("research")

    # -- consents for payment and research ----------------------------------------------------

    def consent_tx(self, cid: str, custodian: str, grantee: str, purpose: str,
                   action: str) -> Pending:
        """CONSENT_GRANT by patient `cid` of its record at `custodian` to `grantee`, for one
        purpose and action (payment: HPAYMT/disclose, research: HRESCH/use), for a year."""
        return grant_consent(self.s, cid, custodian, grantee, purpose=purpose, action=action,
                             days=365)

    def payment_consent(self, cid: str) -> Pending:
        s = self.s
        custodian = s.pick(sorted(s.pseudonyms_of(cid)))
        return self.consent_tx(cid, custodian, s.pick(self.insurers), "HPAYMT", "disclose")

    # -- claims -------------------------------------------------------------------------------

    def billable(self, org: str) -> list[tuple[list[str], str]]:
        """(record entry, insurer) pairs `org` may bill: its records not yet billed whose
        patient has a payment consent the clients know of."""
        w = self.s.w
        payers: dict[str, str] = {}
        for items in w.consents.values():
            for consent_id, pseudonym, grantee in items:
                if w.consent_purpose.get(consent_id) == "HPAYMT":
                    payers.setdefault(pseudonym, grantee)
        return [(entry, payers[entry[1]]) for entry in w.records.get(org, [])
                if entry[0] not in w.claimed and entry[1] in payers]

    def claim(self, org: str, role: str) -> Pending:
        s = self.s
        entry, insurer = s.pick(self.billable(org))
        record_id, pseudonym, _ = entry
        claim_id = s.new_id("claim")
        claim_type = "pharmacy" if role == "pharmacist" else "professional"
        amount = 2_000 + s.rng.randrange(48_000)
        resource = doc.fhir_claim(claim_id, pseudonym, org, insurer, claim_type, [record_id],
                                  amount, s.calendar_ns)
        s.w.claimed.add(record_id)

        def ok(_: bytes) -> None:
            s.w.claims.append((claim_id, insurer))

        return Pending(encode_tx("CLAIM_SUBMIT", claim_id=claim_id, patient=pseudonym,
                                 to=insurer, claim_type=claim_type, record_ids=[record_id],
                                 amount=amount, claim_commitment=s.salted(resource, claim_id)),
                       "CLAIM_SUBMIT", ok, lambda _: s.w.claimed.discard(record_id))

    def adjudicate_tx(self, cid: str, claim_id: str, approve: bool, reason: str) -> Pending:
        """CLAIM_ADJUDICATE; a payment the ledger refuses for want of consent becomes a denial
        with reason `no-consent` (a follow-up by the same insurer)."""
        s = self.s
        insurer = s.g.parties[cid].org
        response = doc.fhir_claim_response(claim_id, insurer, approve, reason, s.calendar_ns)
        s.salted(response, f"{claim_id}-r")

        def failed(result: bytes) -> None:
            if approve and result == b"rejected:no-consent":
                s.followups.append((cid, self.adjudicate_tx(cid, claim_id, False,
                                                            "no-consent")))

        return Pending(encode_tx("CLAIM_ADJUDICATE", claim_id=claim_id,
                                 decision="approve" if approve else "deny",
                                 reason_code=reason), "CLAIM_ADJUDICATE", on_fail=failed)

    def adjudicate(self, cid: str) -> Pending:
        s = self.s
        org = s.g.parties[cid].org
        claim_id = next(c for c, insurer in s.w.claims if insurer == org)
        s.w.claims.remove((claim_id, org))
        approve = s.rng.random() < APPROVE_SHARE
        reason = "covered" if approve else s.pick(list(DENY_REASONS))
        return self.adjudicate_tx(cid, claim_id, approve, reason)

    # -- research -----------------------------------------------------------------------------

    def study_tx(self, board: str, researcher: str,
                 classes: tuple[str, ...] = STUDY_CLASSES,
                 minimum: int = STUDY_MIN_COHORT) -> Pending:
        s = self.s
        study_id = s.new_id("study")
        resource = doc.fhir_research_study(study_id, s.g.parties[researcher].org, board,
                                           list(classes), s.calendar_ns)

        def ok(_: bytes) -> None:
            s.w.studies[researcher] = (study_id, classes)

        return Pending(encode_tx("STUDY_APPROVE", study_id=study_id, researcher=researcher,
                                 protocol_commitment=s.salted(resource, study_id),
                                 data_classes=list(classes), min_cohort=minimum),
                       "STUDY_APPROVE", ok)

    def unapproved(self) -> list[str]:
        return [p for p, party in sorted(self.s.g.parties.items())
                if party.role == "researcher" and p not in self.s.w.studies]

    def query_tx(self, cid: str, resource: str, measure: str) -> Pending:
        study_id, _ = self.s.w.studies[cid]
        return Pending(encode_tx("RESEARCH_QUERY", query_id=self.s.new_id("query"),
                                 study_id=study_id, resource_type=resource, measure=measure),
                       "RESEARCH_QUERY")

    def query(self, cid: str) -> Pending:
        s = self.s
        _, classes = s.w.studies[cid]
        return self.query_tx(cid, s.pick(list(classes)), s.pick(["patients", "records"]))

    # -- biometric verification ---------------------------------------------------------------

    def verifiable(self, org: str) -> list[str]:
        """Enrolled pseudonyms whose custodian is `org` (its clinicians verify them)."""
        w, g = self.s.w, self.s.g
        return [p for p in sorted(w.bio_refs)
                if w.biometrics.get(p, 0) > 0 and g.pseudonyms[p][1] == org]

    def verify_tx(self, pseudonym: str, genuine: bool,
                  reference: tuple[str, str, int] | None = None) -> Pending:
        """BIOMETRIC_VERIFY: the device's PI* is the enrolled one for the patient themself
        (`genuine`), a fresh one for an impostor; `reference` overrides the reference used."""
        s = self.s
        pi, ad, version = reference or s.w.bio_refs[pseudonym]
        probe = pi if genuine else commitment({"pi": s.rng.randbytes(16).hex()}, b"")
        return Pending(encode_tx("BIOMETRIC_VERIFY", subject=pseudonym, pi_commitment=probe,
                                 template_version=version, ad_ref_hash=ad), "BIOMETRIC_VERIFY")

    def verify(self, org: str) -> Pending:
        s = self.s
        return self.verify_tx(s.pick(self.verifiable(org)), s.rng.random() < GENUINE_SHARE)
