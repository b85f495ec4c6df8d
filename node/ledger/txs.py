"""Transactions on the wire: canonical JSON, the per-kind schema, the no-PHI guard, and the
commitment formats that stand in for off-chain documents.

Why this exists: a transaction is signed bytes, so it must have exactly one encoding (canonical
JSON: sorted keys, no whitespace, ASCII), and nothing may reach the rules before its shape is
known. The guard runs first and rejects any field that would carry personal data or a raw
biometric vector (invariant 6 of docs/ledger.md#invariants); then the schema rejects unknown
fields and wrong types; then every string must be a code of a closed vocabulary or match a
strict identifier pattern (vocab.py), so no field can carry free text. `admissible(op)` is the
same check as a yes/no answer: replicas run it before a request is ordered (admission,
docs/security.md), so a refused transaction never reaches a block or a disk. Off-chain
documents (FHIR R4 resources, EPCIS 2.0 events) appear on the chain only as commitments:
`sha256:<hex>` of salt + canonical JSON for records, and an EPCIS event hash
`ni:///sha-256;<hex>?ver=CBV2.0` for events.

Must not know: roles, state or time. Every check here is a pure function of the bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import OrderedDict
from typing import Any

from node.ledger.canonical import CanonicalJson
from node.ledger.vocab import check_value

__all__ = [
    "MAX_EPCS",
    "MAX_INT",
    "MAX_TX_BYTES",
    "PHI_FIELDS",
    "SCHEMA",
    "TxError",
    "admissible",
    "canonical",
    "commitment",
    "decode_tx",
    "encode_tx",
    "epcis_event_hash",
    "gtin_check_digit",
    "gtin_of",
    "is_commitment",
    "is_event_hash",
]

MAX_TX_BYTES = 8192
MAX_EPCS = 100
MAX_TEXT = 128
MAX_VECTOR = 16  # a list of more numbers than this looks like a raw biometric vector
MAX_INT = 2**31 - 1  # integer fields (counts, versions) lie in [0, MAX_INT]

#: Field names (compared lower-case, without '_' or '-') that would carry personal data.
PHI_FIELDS = frozenset({
    "name", "given", "family", "birthdate", "dob", "dateofbirth", "address", "telecom",
    "phone", "email", "ssn", "mrn", "gender", "photo", "template", "biometrictemplate",
    "minutiae", "features", "featurevector", "iris", "fingerprint", "faceimage", "rawbiometric",
})

_S, _I, _L, _D = str, int, list, dict
#: kind -> (required {field: type}, optional {field: type}); "kind" itself is implicit.
SCHEMA: dict[str, tuple[dict[str, type], dict[str, type]]] = {
    "CONSENT_GRANT": ({"consent_id": _S, "patient": _S, "grantee": _S, "actions": _L,
                       "purposes": _L, "period": _D, "doc_commitment": _S},
                      {"data_classes": _L}),
    "CONSENT_REVOKE": ({"consent_id": _S}, {}),
    "ACCESS_REQUEST": ({"patient": _S, "purpose": _S}, {"record_id": _S, "scope": _S}),
    "BREAK_GLASS": ({"patient": _S, "reason_code": _S}, {}),
    "BREAK_GLASS_REVIEW": ({"review_id": _S, "outcome": _S}, {}),
    "RECORD_ANCHOR": ({"record_id": _S, "patient": _S, "resource_type": _S, "commitment": _S,
                       "fhir_version": _S}, {}),
    "RECORD_AMEND": ({"record_id": _S, "prev_commitment": _S, "new_commitment": _S}, {}),
    "GTIN_REGISTER": ({"gtin": _S}, {}),
    "EPCIS_COMMISSION": ({"gtin": _S, "epcs": _L, "lot": _S, "expiry": _S, "event_hash": _S},
                         {}),
    "EPCIS_SHIP": ({"epcs": _L, "to": _S, "event_hash": _S}, {"biz_tx": _S}),
    "EPCIS_RECEIVE": ({"epcs": _L, "event_hash": _S}, {"biz_tx": _S}),
    "EPCIS_DISPENSE": ({"epcs": _L, "event_hash": _S}, {"record_commitment": _S}),
    "EPCIS_DESTROY": ({"epcs": _L, "event_hash": _S, "reason": _S}, {}),
    "PRODUCT_VERIFY": ({"epc": _S, "lot": _S, "expiry": _S}, {}),
    "IMMUNIZATION_ADMINISTER": ({"record_id": _S, "patient": _S, "epc": _S,
                                 "vaccine_code": _S, "commitment": _S}, {}),
    "ADVERSE_EVENT_REPORT": ({"lot": _S, "severity": _S, "report_commitment": _S},
                             {"patient": _S}),
    "SUSPECT_FLAG": ({"basis": _S}, {"epc": _S, "lot": _S}),
    "SUSPECT_CLEAR": ({}, {"epc": _S, "lot": _S}),
    "ILLEGITIMATE_NOTIFY": ({"incident_id": _S, "classification": _S}, {"epc": _S, "lot": _S}),
    "NOTIFICATION_TERMINATE": ({"incident_id": _S}, {}),
    "RECALL_ISSUE": ({"recall_id": _S, "gtin": _S, "lots": _L, "class": _S, "reason": _S}, {}),
    "RECALL_ACK": ({"recall_id": _S, "on_hand": _I}, {}),
    "RECALL_CLOSE": ({"recall_id": _S}, {}),
    "ORG_SUSPEND": ({"org": _S, "reason": _S}, {}),
    "ORG_REINSTATE": ({"org": _S}, {}),
    "BIOMETRIC_ENROLL": ({"subject": _S, "pi_commitment": _S, "template_version": _I,
                          "ad_ref_hash": _S}, {}),
    "BIOMETRIC_REVOKE": ({"subject": _S}, {}),
    # issue 16: claims, research, biometric verification, aggregation, returns, cold chain
    "BIOMETRIC_VERIFY": ({"subject": _S, "pi_commitment": _S, "template_version": _I,
                          "ad_ref_hash": _S}, {}),
    "CLAIM_SUBMIT": ({"claim_id": _S, "patient": _S, "to": _S, "claim_type": _S,
                      "record_ids": _L, "claim_commitment": _S}, {"epcs": _L, "amount": _I}),
    "CLAIM_ADJUDICATE": ({"claim_id": _S, "decision": _S, "reason_code": _S}, {}),
    "STUDY_APPROVE": ({"study_id": _S, "researcher": _S, "protocol_commitment": _S,
                       "data_classes": _L, "min_cohort": _I}, {}),
    "RESEARCH_QUERY": ({"query_id": _S, "study_id": _S, "resource_type": _S, "measure": _S},
                       {}),
    "EPCIS_AGGREGATE": ({"parent": _S, "epcs": _L, "event_hash": _S}, {}),
    "EPCIS_DISAGGREGATE": ({"parent": _S, "event_hash": _S}, {}),
    "EPCIS_RETURN": ({"epcs": _L, "to": _S, "event_hash": _S, "reason": _S}, {}),
    "COLD_CHAIN_EXCURSION": ({"lot": _S, "reading": _S, "event_hash": _S}, {}),
    "AE_REVIEW_CLOSE": ({"review_id": _S, "outcome": _S}, {}),
}
# A case moves with its serials: shipping and receiving name units (`epcs`), cases
# (`parents`, SSCCs aggregated by EPCIS_AGGREGATE) or both; a commissioning may state the
# lot's storage range (both ends, degrees Celsius) for the cold-chain check.
SCHEMA["EPCIS_SHIP"] = ({"to": _S, "event_hash": _S}, {"epcs": _L, "parents": _L, "biz_tx": _S})
SCHEMA["EPCIS_RECEIVE"] = ({"event_hash": _S}, {"epcs": _L, "parents": _L, "biz_tx": _S})
SCHEMA["EPCIS_COMMISSION"][1].update({"temp_min": _S, "temp_max": _S})
_UNITS_OR_CASES = frozenset({"EPCIS_SHIP", "EPCIS_RECEIVE"})

#: Every field name of every kind: the only names a rejection reason may echo (a reason is
#: logged, counted and served; an unknown name is the submitter's free text).
KNOWN_FIELDS = frozenset({key for req, opt in SCHEMA.values() for key in (*req, *opt)}
                         | {"start", "end"})

_ENCODER = CanonicalJson(allow_nan=False)
_COMMITMENT_RE = re.compile(r"sha256:[0-9a-f]{64}")
_EVENT_HASH_RE = re.compile(r"ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0")
_SGTIN_RE = re.compile(r"urn:epc:id:sgtin:([0-9]{6,12})\.([0-9]{1,7})\.([!-~]{1,20})")


class TxError(ValueError):
    """The transaction is rejected before the rules; `reason` is the short result text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical(obj: Any) -> str:
    """Canonical JSON text: sorted keys, no whitespace, ASCII only."""
    return _ENCODER.encode(obj)


def encode_tx(kind: str, **fields: Any) -> bytes:
    """The canonical bytes of a transaction (what a client signs and submits)."""
    return _ENCODER.encode({"kind": kind, **fields}).encode()


#: How many transactions' verdicts `decode_tx` remembers (oldest forgotten first): at most
#: CHECKED_KEPT * MAX_TX_BYTES = 32 MiB of op bytes, and their decodings.
CHECKED_KEPT = 4096
# op bytes -> the reason it is refused, or its decoding if it is valid. Both are pure
# functions of the bytes, so remembering them changes speed, never results; every replica of
# a simulated run (one process) checks a transaction at admission and again at execution, so
# this turns 2n checks and decodings per transaction into one. A hit returns a copy (`_fresh`):
# each caller gets its own dict, never one shared with another replica.
_checked: OrderedDict[bytes, str | dict[str, Any]] = OrderedDict()
_UNSEEN: Any = object()


def _fresh(tx: dict[str, Any]) -> dict[str, Any]:
    """A copy of a valid transaction that shares no mutable part with it: its values are
    strings, ints, lists of strings and (CONSENT_GRANT.period) a dict of strings, as
    _check_schema and _check_values require, so copying each list and dict suffices."""
    return {key: value.copy() if type(value) is list or type(value) is dict else value
            for key, value in tx.items()}


def decode_tx(op: bytes) -> dict[str, Any]:
    """Parse and check a transaction's shape; raise TxError with the reason if it is bad.

    Order: size, JSON, canonical form, personal-data guard, kind, schema, values
    (vocabularies and patterns).
    """
    if len(op) > MAX_TX_BYTES:  # checked first: never remember an oversized op
        raise TxError("too-large")
    verdict = _checked.get(op, _UNSEEN)
    if type(verdict) is dict:
        return _fresh(verdict)
    if verdict is not _UNSEEN:
        raise TxError(verdict)
    try:
        tx = _decode_and_check(op)
    except TxError as exc:
        _remember(op, exc.reason)
        raise
    _remember(op, _fresh(tx))
    return tx


def _remember(op: bytes, verdict: str | dict[str, Any]) -> None:
    if len(_checked) >= CHECKED_KEPT:
        _checked.popitem(last=False)
    _checked[op] = verdict


def _decode_and_check(op: bytes) -> dict[str, Any]:
    try:
        tx = json.loads(op)
    except (ValueError, UnicodeDecodeError):
        raise TxError("malformed") from None
    if type(tx) is not dict or type(tx.get("kind")) is not str:
        raise TxError("malformed")
    if _ENCODER.encode(tx).encode() != op:
        raise TxError("non-canonical")
    _guard_phi(tx, 0)
    schema = SCHEMA.get(tx["kind"])
    if schema is None:
        raise TxError("unknown-kind")
    _check_schema(tx, *schema)
    if tx["kind"] in _UNITS_OR_CASES and "epcs" not in tx and "parents" not in tx:
        raise TxError("missing-field:epcs")
    _check_values(tx)
    return tx


def admissible(op: bytes) -> str | None:
    """None if `op` may be ordered, else the name of the rule that refuses it (the reason
    decode_tx would give). A pure function of the bytes: every honest replica answers the same,
    so it can refuse a request before ordering and a PRE-PREPARE that carries one."""
    try:
        decode_tx(op)
    except TxError as exc:
        return exc.reason
    return None


def _check_values(tx: dict[str, Any]) -> None:
    """Every string (and list item, and the consent period's two times) against its rule."""
    kind = tx["kind"]
    for key, value in tx.items():
        if key == "kind":
            continue
        kind_of = type(value)
        if kind_of is str:
            _check_string(kind, key, value)
        elif kind_of is list:
            if not all(type(item) is str for item in value):
                raise TxError(f"bad-field:{key}")
            if len(set(value)) != len(value):
                raise TxError(f"bad-field:{key}")
            for item in value:
                _check_string(kind, key, item)
        elif kind_of is dict:  # CONSENT_GRANT.period, the only dict field
            if sorted(value) != ["end", "start"] or not all(
                    type(v) is str for v in value.values()):
                raise TxError("bad-period")
            for sub in ("start", "end"):
                if check_value(kind, sub, value[sub]) is not None:
                    raise TxError("bad-period")
        elif kind_of is int and not 0 <= value <= MAX_INT:
            raise TxError(f"bad-field:{key}")


def _check_string(kind: str, key: str, value: str) -> None:
    broken = check_value(kind, key, value)
    if broken is not None:
        raise TxError(broken)
    if key in ("epc", "epcs") and gtin_of(value) is None:
        raise TxError(f"bad-field:{key}")
    if key == "gtin" and gtin_check_digit(value[:13]) != value[13]:
        raise TxError("bad-field:gtin")
    if key in ("parent", "parents") and len(value) != 34:  # prefix + serial ref: 17 digits
        raise TxError(f"bad-field:{key}")


def _guard_phi(obj: dict[str, Any], depth: int) -> None:
    if depth > 3:
        raise TxError("malformed")
    for key, value in obj.items():
        if key.lower().replace("_", "").replace("-", "") in PHI_FIELDS:
            raise TxError(f"phi-field:{key}")
        kind = type(value)
        if kind is dict:
            _guard_phi(value, depth + 1)
        elif kind is list and len(value) > MAX_VECTOR and all(
                type(v) in (int, float) for v in value):
            raise TxError(f"phi-vector:{key}" if key in KNOWN_FIELDS else "phi-vector")


def _check_schema(tx: dict[str, Any], required: dict[str, type],
                  optional: dict[str, type]) -> None:
    for key, value in tx.items():
        if key == "kind":
            continue
        want = required.get(key) or optional.get(key)
        if want is None:  # the key itself is the submitter's text: never echo it
            raise TxError(f"unknown-field:{key}" if key in KNOWN_FIELDS else "unknown-field")
        if type(value) is not want:
            raise TxError(f"bad-field:{key}")
        if want is str and not 0 < len(value) <= MAX_TEXT:  # type: ignore[arg-type]
            raise TxError(f"bad-field:{key}")
        if want is list and not 0 < len(value) <= MAX_EPCS:  # type: ignore[arg-type]
            raise TxError(f"bad-field:{key}")
    for key in required:
        if key not in tx:
            raise TxError(f"missing-field:{key}")


def is_commitment(value: object) -> bool:
    return type(value) is str and _COMMITMENT_RE.fullmatch(value) is not None


def is_event_hash(value: object) -> bool:
    return type(value) is str and _EVENT_HASH_RE.fullmatch(value) is not None


def commitment(resource: dict[str, Any], salt: bytes) -> str:
    """The salted commitment of an off-chain document: sha256(salt || canonical JSON).

    A fresh random salt per record stops brute-forcing low-entropy fields.
    """
    return "sha256:" + hashlib.sha256(salt + canonical(resource).encode()).hexdigest()


def epcis_event_hash(event: dict[str, Any]) -> str:
    """A content hash of one EPCIS 2.0 event in the CBV 2.0 event-hash-ID format.

    Simplification (docs/ledger.md): the pre-hash string is the event's canonical JSON with
    `eventID` and `recordTime` removed, not CBV 2.0's property-ordered text; the format and the
    property (equal events hash equal, whoever computes it) are the same.
    """
    body = {k: v for k, v in event.items() if k not in ("eventID", "recordTime")}
    return "ni:///sha-256;" + hashlib.sha256(canonical(body).encode()).hexdigest() + "?ver=CBV2.0"


def gtin_check_digit(digits13: str) -> str:
    """The GS1 mod-10 check digit of the first 13 digits of a GTIN-14 (weights 3, 1, 3, ...
    from the left)."""
    total = 3 * sum(map(int, digits13[0::2])) + sum(map(int, digits13[1::2]))
    return str((10 - total % 10) % 10)


def gtin_of(epc: str) -> str | None:
    """The GTIN-14 an SGTIN EPC URI names (`urn:epc:id:sgtin:CP.IR.SERIAL`), or None."""
    match = _SGTIN_RE.fullmatch(epc)
    if match is None:
        return None
    return _gtin(match[1], match[2])


@functools.lru_cache(maxsize=4096)
def _gtin(prefix: str, item: str) -> str | None:
    """The GTIN-14 of a company prefix and item reference (every unit of a product shares
    them: remembered, since each transaction names several units)."""
    if len(prefix) + len(item) != 13:
        return None
    body = item[0] + prefix + item[1:]
    return body + gtin_check_digit(body)
