"""The ledger's genesis: organisations, client identities with their role and organisation,
patient pseudonyms, GS1 company prefixes, and the calendar epoch of block time.

Why this exists: every replica must start from the same view of who is who. The consensus
membership (node/membership.py) says which keys exist and their role; the ledger also needs
each client's organisation (custody, custodianship of records) and the patients' pseudonyms.
`LedgerGenesis.from_membership` derives those deterministically, so a simulated run and a
real network built from the same genesis file agree; an explicit `affiliations` map overrides
the derivation for real deployments.

Affiliation rule (documented in docs/ledger.md): clinicians and patients belong to hospitals,
pharmacists to pharmacies (else hospitals), inspectors and auditors to regulators, each
round-robin in node order; manufacturer k and distributor k get their own trading-partner
orgs `mfr-k` and `dist-k` (they run no replica), as do insurer k (`ins-k`), researcher k
(`res-k`) and ethics board k (`irb-k`). Every patient has one pseudonym per hospital
and pharmacy (one per custodian, so orgs cannot link patients; docs/ledger.md, Identities
and roles).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from node.ledger.roles import LEDGER_ROLES, ROLE_ALIASES
from node.membership import Membership

__all__ = ["DEFAULT_EPOCH_NS", "LedgerGenesis", "Party", "pseudonym_for"]

#: Block timestamps in the simulator count from 0; block calendar time is epoch + timestamp.
DEFAULT_EPOCH_NS = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp()) * 1_000_000_000

_FIRST_PREFIX = 614141  # the example company prefix of GS1's standards (EPCIS 2.0)
#: Partner roles (issue 16) -> (org id prefix, org type): insurer k is `ins-k`, researcher k
#: `res-k` (a research institute), ethics board k `irb-k`; none runs a replica.
_PARTNER_ORGS = {"insurer": ("ins", "insurer"), "researcher": ("res", "research"),
                 "ethics_board": ("irb", "ethics")}


@dataclass(frozen=True, slots=True)
class Party:
    """A registered client identity: its role and organisation come from here, never a tx."""

    id: str
    role: str
    org: str


def pseudonym_for(patient: str, custodian: str) -> str:
    """The patient's pseudonym at `custodian` (stand-in for HMAC(custodian secret, MRN))."""
    digest = hashlib.sha256(f"medbft-pseudonym|{custodian}|{patient}".encode()).hexdigest()
    return "pp:" + digest[:20]


@dataclass(frozen=True)
class LedgerGenesis:
    orgs: Mapping[str, str]                       # org id -> org type
    parties: Mapping[str, Party]                  # client id -> party
    pseudonyms: Mapping[str, tuple[str, str]]     # pseudonym -> (patient id, custodian org)
    company_prefix: Mapping[str, str]             # manufacturer org -> GS1 company prefix
    epoch_ns: int = DEFAULT_EPOCH_NS
    _digest: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_digest", hashlib.sha256(self.to_json().encode()).digest())

    @property
    def digest(self) -> bytes:
        return self._digest

    def pseudonyms_of(self, patient: str) -> dict[str, str]:
        """custodian org -> pseudonym, for one patient identity."""
        return {org: p for p, (who, org) in sorted(self.pseudonyms.items()) if who == patient}

    def orgs_of_type(self, *types: str) -> list[str]:
        return sorted(o for o, t in self.orgs.items() if t in types)

    @classmethod
    def from_membership(cls, membership: Membership, epoch_ns: int = DEFAULT_EPOCH_NS,
                        affiliations: Mapping[str, str] | None = None) -> LedgerGenesis:
        """Derive the ledger genesis from the consensus membership (see the module doc)."""
        orgs = {m.id: m.role for m in membership.nodes}
        by_type = {t: [m.id for m in membership.nodes if m.role == t]
                   for t in ("hospital", "pharmacy", "regulator")}
        first = [membership.nodes[0].id] if membership.nodes else []
        homes = {
            "clinician": by_type["hospital"] or first,
            "patient": by_type["hospital"] or first,
            "pharmacist": by_type["pharmacy"] or by_type["hospital"] or first,
            "inspector": by_type["regulator"] or first,
            "auditor": by_type["regulator"] or first,
        }
        counts: dict[str, int] = {}
        parties: dict[str, Party] = {}
        prefixes: dict[str, str] = {}
        for member in membership.clients:
            role = ROLE_ALIASES.get(member.role, member.role)
            if role not in LEDGER_ROLES:
                continue  # e.g. key-value clients: unknown to the ledger, so denied everything
            k = counts[role] = counts.get(role, 0) + 1
            if affiliations and member.id in affiliations:
                org = affiliations[member.id]
                orgs.setdefault(org, role if role in ("manufacturer", "distributor")
                                else _PARTNER_ORGS[role][1] if role in _PARTNER_ORGS
                                else "hospital")
            elif role in ("manufacturer", "distributor"):
                org = f"{'mfr' if role == 'manufacturer' else 'dist'}-{k}"
                orgs[org] = role
            elif role in _PARTNER_ORGS:
                prefix, org_type = _PARTNER_ORGS[role]
                org = f"{prefix}-{k}"
                orgs[org] = org_type
            else:
                choices = homes[role]
                org = choices[(k - 1) % len(choices)] if choices else ""
            if orgs.get(org) == "manufacturer" and org not in prefixes:
                prefixes[org] = f"{_FIRST_PREFIX + len(prefixes):07d}"
            parties[member.id] = Party(member.id, role, org)
        custodians = sorted(o for o, t in orgs.items() if t in ("hospital", "pharmacy"))
        pseudonyms = {pseudonym_for(p.id, org): (p.id, org)
                      for p in parties.values() if p.role == "patient" for org in custodians}
        return cls(orgs, parties, pseudonyms, prefixes, epoch_ns)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace)."""
        return json.dumps({
            "orgs": dict(self.orgs),
            "parties": {p.id: [p.role, p.org] for p in self.parties.values()},
            "pseudonyms": {k: list(v) for k, v in self.pseudonyms.items()},
            "company_prefix": dict(self.company_prefix),
            "epoch_ns": self.epoch_ns,
        }, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LedgerGenesis:
        """Parse `to_json` output; raise ValueError if malformed."""
        try:
            d = json.loads(text)
            return cls(
                {str(k): str(v) for k, v in d["orgs"].items()},
                {str(k): Party(str(k), str(v[0]), str(v[1])) for k, v in d["parties"].items()},
                {str(k): (str(v[0]), str(v[1])) for k, v in d["pseudonyms"].items()},
                {str(k): str(v) for k, v in d["company_prefix"].items()},
                int(d["epoch_ns"]),
            )
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"malformed ledger genesis: {exc}") from exc
