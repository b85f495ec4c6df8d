"""Deliberately invalid transactions: unauthorised, carrying personal data, naming unknown
serials, non-canonical.

Why this exists: a ledger is also measured by what it refuses. A share `workload.invalid`
of the traffic is bad on purpose: a role submitting a kind it is not permitted
(node/ledger/roles.py), a request carrying personal data (a record anchor with a name and a
birth date, a suspension whose reason is a patient's story), a shipment of a serial nobody
commissioned, JSON that is not in canonical form. Personal data and non-canonical JSON are
refused at admission (never ordered: `refused:<rule>`, docs/security.md); the rest are
ordered and rejected by the rules at execution (`rejected:<reason>`).

What it must not know: the world model beyond the genesis (an invalid transaction teaches
the clients nothing, so its `Pending` has no callbacks).
"""

from __future__ import annotations

from node.ledger.roles import PERMISSIONS
from node.ledger.txs import commitment, encode_tx, epcis_event_hash

from .world import Pending, TrafficState

__all__ = ["MAX_INVALID_KIND", "InvalidTxs"]

#: Each role -> a kind it is not permitted to submit.
MAX_INVALID_KIND = {"manufacturer": "BREAK_GLASS", "distributor": "RECORD_ANCHOR",
                    "pharmacist": "RECALL_CLOSE", "clinician": "GTIN_REGISTER",
                    "patient": "EPCIS_SHIP", "inspector": "CONSENT_GRANT",
                    # issue 16's partners: a payer anchoring a record, a researcher granting
                    # consent in a patient's name, an ethics board breaking the glass
                    "insurer": "RECORD_ANCHOR", "researcher": "CONSENT_GRANT",
                    "ethics_board": "BREAK_GLASS"}


class InvalidTxs:
    """Builds a bad transaction for an identity, on the shared traffic state."""

    def __init__(self, state: TrafficState) -> None:
        self.s = state

    def build(self, cid: str) -> Pending | None:
        """A bad transaction of `cid` (None: the auditor submits none)."""
        s = self.s
        party = s.g.parties[cid]
        menu = ["phi", "non-canonical"]
        if party.role in MAX_INVALID_KIND:
            menu.append("unauthorised")
        if party.role in ("manufacturer", "distributor", "pharmacist", "clinician"):
            menu.append("unknown-serial")
        if party.role == "auditor":
            return None
        choice = s.pick(menu)
        pseudonym = (min(s.g.pseudonyms) if s.g.pseudonyms else "pp:" + "0" * 20)
        if choice == "phi":
            op = self.phi(pseudonym)
        elif choice == "non-canonical":
            op = b'{"kind": "PRODUCT_VERIFY", "epc": "x", "lot": "x", "expiry": "x"}'
        elif choice == "unknown-serial":
            op = encode_tx("EPCIS_SHIP", epcs=["urn:epc:id:sgtin:9999999.000001.0"],
                           to=s.custodians[0] if s.custodians else "hospital-1",
                           event_hash=epcis_event_hash({"bogus": s.ids}))
        else:
            op = self.unauthorised(party.role, pseudonym)
        return Pending(op, "invalid", valid=False)

    def phi(self, pseudonym: str) -> bytes:
        """Personal data on its way to the chain: in a field named for it, or as free text."""
        s = self.s
        way = s.rng.randrange(3)
        if way == 0:
            return encode_tx("RECORD_ANCHOR", record_id=s.new_id("rec"), patient=pseudonym,
                             resource_type="Observation", fhir_version="4.0.1",
                             commitment=commitment({"x": 1}, b""), name="Peter Chalmers",
                             birthDate="1974-12-25")
        if way == 1:
            return encode_tx("ORG_SUSPEND", org=s.custodians[0] if s.custodians else
                             "hospital-1", reason="Peter Chalmers, born 1974-12-25, MRN 12345: "
                             "HIV+, records leaked")
        return encode_tx("ACCESS_REQUEST", patient=pseudonym, purpose="TREAT",
                         birthDate="1974-12-25")

    def unauthorised(self, role: str, pseudonym: str) -> bytes:
        kind = MAX_INVALID_KIND[role]
        assert role not in PERMISSIONS[kind]
        if kind == "BREAK_GLASS":
            return encode_tx(kind, patient=pseudonym, reason_code="ETREAT")
        if kind == "RECORD_ANCHOR":
            return encode_tx(kind, record_id=self.s.new_id("x"), patient=pseudonym,
                             resource_type="Observation", fhir_version="4.0.1",
                             commitment=commitment({"x": 1}, b""))
        if kind == "RECALL_CLOSE":
            return encode_tx(kind, recall_id="recall-0")
        if kind == "GTIN_REGISTER":
            return encode_tx(kind, gtin="00614141000012")
        if kind == "EPCIS_SHIP":
            return encode_tx(kind, epcs=["urn:epc:id:sgtin:0614141.000001.1"],
                             to=self.s.custodians[0] if self.s.custodians else "hospital-1",
                             event_hash=epcis_event_hash({"x": 1}))
        return encode_tx(kind, consent_id=self.s.new_id("x"), patient=pseudonym,
                         grantee=self.s.custodians[0] if self.s.custodians else "hospital-1",
                         actions=["access"], purposes=["TREAT"],
                         period={"start": "2025-01-01T00:00:00Z",
                                 "end": "2026-01-01T00:00:00Z"},
                         doc_commitment=commitment({"x": 1}, b""))
