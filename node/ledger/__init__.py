"""The healthcare ledger: the deterministic state machine that PBFT replicas execute.

Why this exists: it is what hospitals, pharmacies and regulators agree on (issue #4):
anchored medical-record commitments and consents, audited access decisions, drug custody from
manufacturer to patient, recalls, and biometric identity commitments. See docs/ledger.md.

Public surface (everything else is private to the package):
- `Ledger(genesis)`: the StateMachine (`execute`, `digest`, `snapshot`, `restore`);
  `Executions`: blocks one ledger of a simulation executed, replayed by the others;
- `LedgerGenesis`, `Party`: who is who (roles come from here, never from a transaction);
- `encode_tx(kind, **fields)`: the canonical bytes a client signs; `commitment`,
  `epcis_event_hash`: the on-chain stand-ins for off-chain FHIR / EPCIS documents;
- `KINDS`, `PERMISSIONS`, `CLIENT_ROLES`: the transaction kinds and the permission matrix;
- queries: `trace`, `recall_exposure`, `access_log`, `active_consents`, `audit_entries`,
  `claims`, `studies`, `cases`, `excursions`, `verify_record`, `verify_chain`; results
  files: `save_ledger`, `load_ledger`;
- `CheckedLedger`, `check_ledger`: the invariants of docs/ledger.md#invariants, after every
  block.
"""

from node import _native

_native.activate(__name__, __path__)

from node.ledger.genesis import LedgerGenesis, Party  # noqa: E402
from node.ledger.invariants import CheckedLedger, check_ledger  # noqa: E402
from node.ledger.ledger import Executions, Ledger  # noqa: E402
from node.ledger.queries import (  # noqa: E402
    access_log,
    active_consents,
    audit_entries,
    cases,
    claims,
    excursions,
    load_ledger,
    recall_exposure,
    save_ledger,
    studies,
    trace,
    verify_chain,
    verify_record,
)
from node.ledger.roles import CLIENT_ROLES, KINDS, PERMISSIONS  # noqa: E402
from node.ledger.txs import commitment, encode_tx, epcis_event_hash  # noqa: E402

__all__ = [
    "CLIENT_ROLES",
    "KINDS",
    "PERMISSIONS",
    "CheckedLedger",
    "Executions",
    "Ledger",
    "LedgerGenesis",
    "Party",
    "access_log",
    "active_consents",
    "audit_entries",
    "cases",
    "check_ledger",
    "claims",
    "commitment",
    "encode_tx",
    "epcis_event_hash",
    "excursions",
    "load_ledger",
    "recall_exposure",
    "save_ledger",
    "studies",
    "trace",
    "verify_chain",
    "verify_record",
]
