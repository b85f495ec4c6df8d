"""Closed vocabularies and strict identifier patterns: what every string on the chain may be.

Why this exists: a guard on field *names* (txs.PHI_FIELDS) cannot stop personal data written
into a field whose name is innocent, such as a suspension `reason` holding a patient's name,
birth date and diagnosis. So no field on the chain is free text: every string field either
takes a code from a closed vocabulary (reasons, bases, classifications, purposes, ...) or
matches a strict pattern with a length bound (identifiers, pseudonyms, GS1 keys, dates,
commitments). `FIELD_RULES` maps each field name to its rule; txs.decode_tx applies it to
every string (and every list item) before a transaction may be ordered (admission, see
docs/security.md) and again when it executes. The vocabularies are documented in
docs/ledger.md#vocabularies.

Must not know: roles, state or time. Everything here is a constant or a pure function.
"""

from __future__ import annotations

import re

__all__ = [
    "ADJUDICATION_DECISIONS",
    "ADJUDICATION_REASONS",
    "CLAIM_TYPES",
    "CONSENT_ACTIONS",
    "DESTROY_REASONS",
    "FIELD_RULES",
    "ILLEGITIMATE_CLASSES",
    "PURPOSES",
    "RECALL_CLASSES",
    "RECALL_REASONS",
    "RESEARCH_MEASURES",
    "RESOURCE_TYPES",
    "RETURN_REASONS",
    "SEVERITIES",
    "SIGNAL_OUTCOMES",
    "SUSPECT_BASES",
    "SUSPEND_REASONS",
    "Rule",
    "check_value",
]

#: FHIR R4 resource types a record anchor (or a consent's data classes) may name.
RESOURCE_TYPES = frozenset({"Immunization", "Observation", "DocumentReference", "Condition",
                            "DiagnosticReport", "AllergyIntolerance", "MedicationDispense",
                            "MedicationRequest", "Procedure"})
#: FHIR Consent provision actions.
CONSENT_ACTIONS = frozenset({"access", "collect", "use", "disclose"})
#: HL7 v3 ActReason purposes of use.
PURPOSES = frozenset({"TREAT", "ETREAT", "PUBHLTH", "HRESCH", "HPAYMT", "HOPERAT"})
#: Why an organisation is suspended (ORG_SUSPEND.reason).
SUSPEND_REASONS = frozenset({"license-revoked", "license-expired", "compliance-investigation",
                             "security-incident", "counterfeit-involvement",
                             "regulator-order", "voluntary"})
#: Why a product is quarantined (SUSPECT_FLAG.basis): DSCSA suspect-product triggers.
SUSPECT_BASES = frozenset({"inspection", "duplicate-commission", "trading-partner-report",
                           "verification-mismatch", "packaging-anomaly", "cold-chain-excursion",
                           "adverse-event-signal", "regulator-alert"})
#: Why a lot is recalled (RECALL_ISSUE.reason).
RECALL_REASONS = frozenset({"contamination", "sterility", "potency", "mislabeling",
                            "packaging-defect", "particulate-matter", "stability",
                            "counterfeit", "adverse-events", "other"})
#: Why units are destroyed (EPCIS_DESTROY.reason), in the spirit of CBV 2.0 dispositions.
DESTROY_REASONS = frozenset({"expired", "damaged", "recalled", "counterfeit", "contaminated",
                             "returned-unsaleable", "regulator-order"})
#: DSCSA illegitimate-product classifications (ILLEGITIMATE_NOTIFY.classification).
ILLEGITIMATE_CLASSES = frozenset({"counterfeit", "diverted", "stolen", "adulterated",
                                  "fraudulent", "unfit"})
RECALL_CLASSES = frozenset({"I", "II", "III"})
SEVERITIES = frozenset({"mild", "moderate", "severe", "death"})
REVIEW_OUTCOMES = frozenset({"justified", "unjustified"})
BREAK_GLASS_REASONS = frozenset({"ETREAT", "BTG"})
ACCESS_SCOPES = frozenset({"content", "metadata"})
FHIR_VERSIONS = frozenset({"4.0.1"})
#: FHIR R4 Claim.type (http://terminology.hl7.org/CodeSystem/claim-type).
CLAIM_TYPES = frozenset({"institutional", "oral", "pharmacy", "professional", "vision"})
#: An insurer's decision on a claim (FHIR ClaimResponse item adjudication, simplified).
ADJUDICATION_DECISIONS = frozenset({"approve", "deny"})
#: Why (docs/ledger.md#claims): `covered` for an approval, the rest for a denial; each maps to
#: an X12 claim adjustment reason code (96 non-covered, 18 duplicate, 50 not medically
#: necessary, 16 missing information, 27 coverage expired, 242 out of network), and
#: `no-consent` to the patient's missing HPAYMT consent.
ADJUDICATION_REASONS = frozenset({"covered", "not-covered", "duplicate",
                                  "not-medically-necessary", "missing-information",
                                  "coverage-expired", "out-of-network", "no-consent"})
#: What a research query may count (RESEARCH_QUERY.measure): consenting patients with a
#: record of the type, or their records of the type.
RESEARCH_MEASURES = frozenset({"patients", "records"})
#: Why units go back upstream (EPCIS_RETURN.reason; CBV 2.0 bizStep `returning`).
RETURN_REASONS = frozenset({"recalled", "damaged", "expired", "overstock", "wrong-product",
                            "cold-chain-excursion", "quarantined"})
#: How the regulator closes an adverse-event signal review (AE_REVIEW_CLOSE.outcome).
SIGNAL_OUTCOMES = frozenset({"no-action", "monitoring", "label-change", "recall-requested"})

# Patterns (all anchored by fullmatch; each bounds the length).
_ID = r"[A-Za-z]{1,8}-[0-9]{1,12}(?:-[0-9]{1,6})?"                    # rec-12, bg-4-0
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_PARTY = r"[a-z][a-z0-9]{0,19}(?:-[a-z0-9]{1,12}){0,2}"                 # hospital-1, mfr-2
PATTERNS: dict[str, re.Pattern[str]] = {
    "id": re.compile(f"{_ID}|{_UUID}"),
    "party": re.compile(_PARTY),
    "grantee": re.compile(f"{_PARTY}|role:(?:clinician|pharmacist|insurer|researcher)"),
    "pseudonym": re.compile(r"pp:[0-9a-f]{20}"),
    # SGTIN EPC URI; the serial is numeric as in SGTIN-96 (at most 12 digits: 38 bits).
    "epc": re.compile(r"urn:epc:id:sgtin:[0-9]{6,12}\.[0-9]{1,7}\.[0-9]{1,12}"),
    "gtin": re.compile(r"[0-9]{14}"),
    # GS1 AI (10) batch/lot, restricted to upper-case letters, digits and '-'.
    "lot": re.compile(r"[A-Z0-9][A-Z0-9-]{0,19}"),
    "date": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    "datetime": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                           r"(?:\.[0-9]{1,3})?(?:Z|[+-][0-9]{2}:[0-9]{2})"),
    "commitment": re.compile(r"sha256:[0-9a-f]{64}"),
    "event_hash": re.compile(r"ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0"),
    "biz_tx": re.compile(r"urn:epcglobal:cbv:bt:[0-9]{13}:[A-Z0-9-]{1,20}"),
    "vaccine_code": re.compile(r"[0-9]{1,3}"),                           # CDC CVX code
    # SSCC EPC URI of a case or pallet (GS1 TDS): company prefix + serial reference = 17
    # digits (checked in txs.py), numeric.
    "sscc": re.compile(r"urn:epc:id:sscc:[0-9]{6,12}\.[0-9]{5,11}"),
    # A temperature in degrees Celsius with at most one decimal (EPCIS 2.0 sensorReport value,
    # uom CEL): -99.9 .. 99.9.
    "celsius": re.compile(r"-?[0-9]{1,2}(?:\.[0-9])?"),
}

Rule = frozenset[str] | str
"""A closed vocabulary (frozenset of codes) or the name of a pattern in `PATTERNS`."""

#: Every string field of every kind (and the items of list fields) -> its rule.
FIELD_RULES: dict[str, Rule] = {
    "consent_id": "id", "record_id": "id", "review_id": "id", "incident_id": "id",
    "recall_id": "id", "claim_id": "id", "study_id": "id", "query_id": "id",
    "patient": "pseudonym", "subject": "pseudonym",
    "grantee": "grantee", "to": "party", "org": "party", "researcher": "party",
    "parent": "sscc", "parents": "sscc", "temp_min": "celsius", "temp_max": "celsius",
    "reading": "celsius", "record_ids": "id", "claim_commitment": "commitment",
    "protocol_commitment": "commitment", "claim_type": CLAIM_TYPES,
    "decision": ADJUDICATION_DECISIONS, "measure": RESEARCH_MEASURES,
    "epc": "epc", "epcs": "epc", "gtin": "gtin", "lot": "lot", "lots": "lot",
    "expiry": "date", "start": "datetime", "end": "datetime",
    "commitment": "commitment", "doc_commitment": "commitment", "new_commitment": "commitment",
    "prev_commitment": "commitment", "report_commitment": "commitment",
    "record_commitment": "commitment", "pi_commitment": "commitment",
    "ad_ref_hash": "commitment", "event_hash": "event_hash", "biz_tx": "biz_tx",
    "vaccine_code": "vaccine_code",
    "actions": CONSENT_ACTIONS, "purposes": PURPOSES, "purpose": PURPOSES,
    "data_classes": RESOURCE_TYPES, "resource_type": RESOURCE_TYPES,
    "fhir_version": FHIR_VERSIONS, "scope": ACCESS_SCOPES, "reason_code": BREAK_GLASS_REASONS,
    "outcome": REVIEW_OUTCOMES, "severity": SEVERITIES, "basis": SUSPECT_BASES,
    "classification": ILLEGITIMATE_CLASSES, "class": RECALL_CLASSES,
}
#: Fields whose rule depends on the kind (the same name, another vocabulary).
KIND_FIELD_RULES: dict[tuple[str, str], Rule] = {
    ("ORG_SUSPEND", "reason"): SUSPEND_REASONS,
    ("RECALL_ISSUE", "reason"): RECALL_REASONS,
    ("EPCIS_DESTROY", "reason"): DESTROY_REASONS,
    ("EPCIS_RETURN", "reason"): RETURN_REASONS,
    ("CLAIM_ADJUDICATE", "reason_code"): ADJUDICATION_REASONS,
    ("AE_REVIEW_CLOSE", "outcome"): SIGNAL_OUTCOMES,
}
#: Rejection reasons kept from before the vocabularies (tests and docs name them).
_PATTERN_REASONS = {"commitment": "bad-commitment", "event_hash": "bad-event-hash"}


def check_value(kind: str, field: str, value: str) -> str | None:
    """None if `value` is allowed in `field` of a `kind` transaction, else the rule it breaks:
    `not-a-code:<field>` (outside a closed vocabulary: free text), `bad-field:<field>`
    (pattern), `bad-commitment`, `bad-event-hash`, or `unchecked-field:<field>` (a string
    field with no rule: refused, so that a new field cannot open a free-text channel)."""
    rule = KIND_FIELD_RULES.get((kind, field)) or FIELD_RULES.get(field)
    if rule is None:
        return f"unchecked-field:{field}"
    if isinstance(rule, frozenset):
        return None if value in rule else f"not-a-code:{field}"
    if PATTERNS[rule].fullmatch(value) is None:
        return _PATTERN_REASONS.get(rule, f"bad-field:{field}")
    return None
