"""Helpers for the ledger tests: a small genesis and a hand-driven ledger.

Why this exists: the permission-matrix, rules and query tests build ledgers by hand, one
transaction per block, without PBFT in the way (signatures are the replica's job; the ledger
trusts `Request.client`). Every block is checked against the ledger's invariants as it lands.
"""

from __future__ import annotations

from typing import Any

from node.ledger import CheckedLedger, Ledger, LedgerGenesis, encode_tx, epcis_event_hash
from node.ledger.genesis import pseudonym_for
from node.membership import Member, Membership
from node.messages import Request
from node.statemachine import BlockInfo

SECOND = 1_000_000_000
DAY = 86_400 * SECOND
NODES = (("hospital-1", "hospital"), ("hospital-2", "hospital"), ("pharmacy-1", "pharmacy"),
         ("regulator-1", "regulator"))
CLIENTS = (("manufacturer-1", "manufacturer"), ("distributor-1", "distributor"),
           ("pharmacist-1", "pharmacist"), ("clinician-1", "clinician"),
           ("clinician-2", "clinician"), ("patient-1", "patient"), ("patient-2", "patient"),
           ("inspector-1", "inspector"), ("auditor-1", "auditor"), ("insurer-1", "insurer"),
           ("researcher-1", "researcher"), ("ethics_board-1", "ethics_board"))
ROLE_ACTOR = {"manufacturer": "manufacturer-1", "distributor": "distributor-1",
              "pharmacist": "pharmacist-1", "clinician": "clinician-1", "patient": "patient-1",
              "inspector": "inspector-1", "auditor": "auditor-1", "insurer": "insurer-1",
              "researcher": "researcher-1", "ethics_board": "ethics_board-1"}
GTIN = "00614141000012"          # indicator 0, prefix 0614141, item 00001, check digit 2


def membership(extra: tuple[tuple[str, str], ...] = ()) -> Membership:
    return Membership(tuple(Member(i, r, b"k") for i, r in NODES),
                      tuple(Member(i, r, b"k") for i, r in CLIENTS + extra))


def genesis(extra: tuple[tuple[str, str], ...] = ()) -> LedgerGenesis:
    """The test genesis; `extra` adds (client id, role) identities after the usual ones."""
    return LedgerGenesis.from_membership(membership(extra))


def pp(patient: str, org: str) -> str:
    return pseudonym_for(patient, org)


def epc(serial: int) -> str:
    return f"urn:epc:id:sgtin:0614141.000001.{serial}"


def ev(tag: str) -> str:
    return epcis_event_hash({"tag": tag})


def sha(tag: str) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(tag.encode()).hexdigest()


class Harness:
    """One ledger, one transaction per block (or several with `block`), invariants checked."""

    def __init__(self, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.registry: dict[int, dict[str, str]] = {}
        self.ledger = Ledger(genesis(extra))
        self.checked = CheckedLedger(self.ledger, "h", self.registry)
        self.ts = 0
        self.seq = 0
        self.counter = 0

    def request(self, who: str, kind: str, **fields: Any) -> Request:
        self.counter += 1
        return Request(encode_tx(kind, **fields), self.counter, who, 0, b"")

    def block(self, *requests: Request, advance_ns: int = SECOND) -> list[str]:
        self.ts += advance_ns
        self.seq += 1
        out = self.checked.execute(list(requests), BlockInfo(self.seq, 0, self.ts))
        assert self.checked.violations == [], self.checked.violations
        return [r.decode() for r in out]

    def tx(self, who: str, kind: str, **fields: Any) -> str:
        return self.block(self.request(who, kind, **fields))[0]

    # -- common flows ---------------------------------------------------------------------

    def commission(self, serials: list[int], lot: str = "LOT-A1",
                   expiry: str = "2026-12-31", **storage: str) -> str:
        """Commission `serials` of `lot`; `storage` may give temp_min and temp_max (°C)."""
        if self.ledger.state.get("gtins", GTIN) is None:
            assert self.tx("manufacturer-1", "GTIN_REGISTER", gtin=GTIN) == "ok"
        return self.tx("manufacturer-1", "EPCIS_COMMISSION", gtin=GTIN,
                       epcs=[epc(s) for s in serials], lot=lot, expiry=expiry,
                       event_hash=ev(f"c{serials}"), **storage)

    def ship(self, who: str, serials: list[int], to: str) -> str:
        return self.tx(who, "EPCIS_SHIP", epcs=[epc(s) for s in serials], to=to,
                       event_hash=ev(f"s{serials}{to}"))

    def receive(self, who: str, serials: list[int]) -> str:
        return self.tx(who, "EPCIS_RECEIVE", epcs=[epc(s) for s in serials],
                       event_hash=ev(f"r{serials}{who}"))

    def to_pharmacy(self, serials: list[int]) -> None:
        """Commission serials and move them manufacturer -> distributor -> pharmacy-1."""
        assert self.commission(serials) == "ok"
        assert self.ship("manufacturer-1", serials, "dist-1") == "ok"
        assert self.receive("distributor-1", serials) == "ok"
        assert self.ship("distributor-1", serials, "pharmacy-1") == "ok"
        assert self.receive("pharmacist-1", serials) == "ok"

    def grant(self, patient: str, org: str, grantee: str, consent_id: str = "c-1",
              start: str = "2025-01-01T00:00:00Z", end: str = "2026-01-01T00:00:00Z",
              actions: tuple[str, ...] = ("access",), purposes: tuple[str, ...] = ("TREAT",),
              ) -> str:
        return self.tx(patient, "CONSENT_GRANT", consent_id=consent_id,
                       patient=pp(patient, org), grantee=grantee, actions=list(actions),
                       purposes=list(purposes), period={"start": start, "end": end},
                       doc_commitment=sha(consent_id))

    def anchor(self, who: str, patient: str, org: str, record_id: str = "r-1",
               resource_type: str = "Observation", commitment: str | None = None) -> str:
        return self.tx(who, "RECORD_ANCHOR", record_id=record_id, patient=pp(patient, org),
                       resource_type=resource_type, commitment=commitment or sha(record_id),
                       fhir_version="4.0.1")


def sscc(serial: int) -> str:
    """An SSCC EPC URI under the example prefix 0614141 (17 digits: prefix + serial ref)."""
    return f"urn:epc:id:sscc:0614141.{serial:010d}"
