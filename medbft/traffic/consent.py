"""Consent and access transactions: grants, revocations, access requests, break-glass access
and its review, biometric enrolment.

Why this exists: a patient decides who may see the records anchored under its pseudonyms
(a FHIR R4 Consent, kept off-chain behind a salted commitment), and everyone else asks: a
clinician requests access for treatment, breaks the glass in an emergency (which the
regulator's inspector must then review), an inspector reads metadata for public health.
The ledger permits or denies; the traffic only asks sensible questions, some of which the
ledger will deny (that is the point of the consent-race flow).

What it must not know: who may call a builder, and when (the coordinator,
medbft/traffic/ledger.py), nor how records are anchored (medbft/traffic/care.py).
"""

from __future__ import annotations

from node.ledger import documents as doc
from node.ledger.txs import commitment, encode_tx

from .world import Pending, TrafficState

__all__ = ["Consent", "grant_consent"]


def grant_consent(s: TrafficState, cid: str, custodian: str, grantee: str, *,
                  purpose: str = "TREAT", action: str = "access", days: int = 180) -> Pending:
    """CONSENT_GRANT by patient `cid` of its record at `custodian` to `grantee`, for one
    purpose and action (treatment: TREAT/access; payment: HPAYMT/disclose; research:
    HRESCH/use), valid from a day ago for `days` days."""
    pseudonym = s.pseudonyms_of(cid)[custodian]
    consent_id = s.new_id("consent")
    start = doc.iso_time(s.calendar_ns - 86_400 * 10**9, millis=False)
    end = doc.iso_time(s.calendar_ns + days * 86_400 * 10**9, millis=False)
    resource = doc.fhir_consent(consent_id, cid, custodian, grantee, start, end, s.calendar_ns)
    resource["provision"]["purpose"][0]["code"] = purpose
    resource["provision"]["action"][0]["coding"][0]["code"] = action

    def ok(_: bytes) -> None:
        s.w.consents.setdefault(cid, []).append((consent_id, pseudonym, grantee))
        if purpose != "TREAT":
            s.w.consent_purpose[consent_id] = purpose

    return Pending(encode_tx("CONSENT_GRANT", consent_id=consent_id, patient=pseudonym,
                             grantee=grantee, actions=[action], purposes=[purpose],
                             period={"start": start, "end": end},
                             doc_commitment=s.salted(resource, consent_id)),
                   "CONSENT_GRANT", ok)


class Consent:
    """Builders of the consent and access transactions, on the shared traffic state."""

    def __init__(self, state: TrafficState) -> None:
        self.s = state

    # -- the patient's consents ---------------------------------------------------------------

    def grant_tx(self, cid: str, custodian: str, grantee: str) -> Pending:
        """CONSENT_GRANT by patient `cid` of its record at `custodian` to `grantee` (an org)."""
        return grant_consent(self.s, cid, custodian, grantee)

    def grant(self, cid: str) -> Pending:
        s = self.s
        mine = s.pseudonyms_of(cid)
        custodian = s.pick(sorted(mine))
        grantees = [o for o in s.custodians if o != custodian] or [custodian]
        return self.grant_tx(cid, custodian, s.pick(grantees))

    def revoke_tx(self, cid: str, consent_id: str) -> Pending:
        w = self.s.w
        items = w.consents.get(cid, [])
        w.consents[cid] = [c for c in items if c[0] != consent_id]
        return Pending(encode_tx("CONSENT_REVOKE", consent_id=consent_id), "CONSENT_REVOKE")

    def revoke(self, cid: str) -> Pending:
        return self.revoke_tx(cid, self.s.pick(self.s.w.consents[cid])[0])

    def own_access(self, cid: str) -> Pending:
        s = self.s
        pseudonym = s.pick(sorted(s.pseudonyms_of(cid).values()))
        return Pending(encode_tx("ACCESS_REQUEST", patient=pseudonym, purpose="TREAT"),
                       "ACCESS_REQUEST")

    # -- access by others ---------------------------------------------------------------------

    def access(self, org: str) -> Pending:
        """A custodian's access request for treatment: a record anchored elsewhere, or a
        patient's pseudonym at its own organisation."""
        s = self.s
        others = sorted(o for o, recs in s.w.records.items() if recs and o != org)
        if others and s.rng.random() < 0.6:
            record_id, pseudonym, _ = s.pick(s.w.records[s.pick(others)])
            return Pending(encode_tx("ACCESS_REQUEST", patient=pseudonym, purpose="TREAT",
                                     record_id=record_id), "ACCESS_REQUEST")
        pseudonym = s.pseudonyms_of(s.pick(s.patients))[org]
        return Pending(encode_tx("ACCESS_REQUEST", patient=pseudonym, purpose="TREAT"),
                       "ACCESS_REQUEST")

    def break_glass(self) -> Pending:
        s = self.s
        patient = s.pick(s.patients)
        pseudonym = s.pick(sorted(s.pseudonyms_of(patient).values()))

        def ok(result: bytes) -> None:
            s.w.reviews.append(result.decode().rsplit(":", 1)[1])

        return Pending(encode_tx("BREAK_GLASS", patient=pseudonym, reason_code="ETREAT"),
                       "BREAK_GLASS", ok)

    def review(self) -> Pending:
        review_id = self.s.w.reviews.pop(0)
        return Pending(encode_tx("BREAK_GLASS_REVIEW", review_id=review_id,
                                 outcome="justified"), "BREAK_GLASS_REVIEW")

    def metadata_access(self) -> Pending:
        s = self.s
        pseudonym = s.pick(sorted(s.pseudonyms_of(s.pick(s.patients)).values()))
        return Pending(encode_tx("ACCESS_REQUEST", patient=pseudonym, purpose="PUBHLTH",
                                 scope="metadata"), "ACCESS_REQUEST")

    # -- biometrics ---------------------------------------------------------------------------

    def enroll(self, mine: list[str]) -> Pending:
        s = self.s
        pseudonym = s.pick(mine)
        version = abs(s.w.biometrics.get(pseudonym, 0)) + 1
        if s.w.biometrics.get(pseudonym, 0) > 0:   # enrolled: renew = revoke first
            return self.unenroll([pseudonym])
        pi = commitment({"pi": s.rng.randbytes(16).hex()}, b"")
        ad = commitment({"ad": s.rng.randbytes(16).hex()}, b"")

        def ok(_: bytes) -> None:
            s.w.biometrics[pseudonym] = version
            s.w.bio_refs[pseudonym] = (pi, ad, version)

        return Pending(encode_tx("BIOMETRIC_ENROLL", subject=pseudonym, pi_commitment=pi,
                                 template_version=version, ad_ref_hash=ad),
                       "BIOMETRIC_ENROLL", ok)

    def unenroll(self, mine: list[str]) -> Pending:
        s = self.s
        enrolled = [p for p in mine if s.w.biometrics.get(p, 0) > 0]
        pseudonym = s.pick(enrolled)

        def ok(_: bytes) -> None:
            s.w.biometrics[pseudonym] = -s.w.biometrics[pseudonym]

        return Pending(encode_tx("BIOMETRIC_REVOKE", subject=pseudonym), "BIOMETRIC_REVOKE",
                       ok)
