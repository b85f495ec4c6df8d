"""Off-chain documents: EPCIS 2.0 ObjectEvents and FHIR R4 resources, shaped as the standards'
own examples (docs/ledger.md#off-chain-formats), whose hashes or salted commitments go on
the chain.

Why this exists: clients (the simulated workload, `medbft load`) must produce the documents a
real hospital or wholesaler would, so that what the chain commits to is realistic and a
record can later be verified against its commitment. The ledger never sees these documents.

Identifiers: SGTIN/SGLN/PGLN URNs use the organisation's GS1 company prefix (manufacturers:
from the genesis; other orgs: a stand-in prefix derived from the org's position).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from node.ledger.genesis import LedgerGenesis

__all__ = [
    "EPCIS_CONTEXT", "epcis_document", "epcis_event", "fhir_consent", "fhir_immunization",
    "fhir_medication_dispense", "fhir_observation", "iso_time", "org_prefix", "sgtin",
]

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
_BIZ_STEP = {
    "EPCIS_COMMISSION": ("ADD", "commissioning", "active"),
    "EPCIS_SHIP": ("OBSERVE", "shipping", "in_transit"),
    "EPCIS_RECEIVE": ("OBSERVE", "receiving", "in_progress"),
    "EPCIS_DISPENSE": ("OBSERVE", "dispensing", "dispensed"),
    "EPCIS_DESTROY": ("DELETE", "destroying", "destroyed"),
}


def iso_time(calendar_ns: int, millis: bool = True) -> str:
    moment = datetime.fromtimestamp(calendar_ns // 1_000_000 / 1000, tz=UTC)
    text = moment.isoformat(timespec="milliseconds" if millis else "seconds")
    return text.replace("+00:00", "Z")


def org_prefix(genesis: LedgerGenesis, org: str) -> str:
    """The GS1 company prefix of `org` (7 digits)."""
    if org in genesis.company_prefix:
        return genesis.company_prefix[org]
    return f"{4012345 + sorted(genesis.orgs).index(org):07d}" if org in genesis.orgs \
        else "4000000"


def sgtin(prefix: str, item_ref: str, serial: int | str) -> str:
    return f"urn:epc:id:sgtin:{prefix}.{item_ref}.{serial}"


def epcis_event(kind: str, genesis: LedgerGenesis, org: str, epcs: list[str],
                calendar_ns: int, *, to: str | None = None, lot: str | None = None,
                expiry: str | None = None, biz_tx: str | None = None) -> dict[str, Any]:
    """One EPCIS 2.0 ObjectEvent for a supply-chain transaction kind."""
    action, step, disposition = _BIZ_STEP[kind]
    prefix = org_prefix(genesis, org)
    location = {"id": f"urn:epc:id:sgln:{prefix}.00001.0"}
    event: dict[str, Any] = {
        "type": "ObjectEvent", "eventTime": iso_time(calendar_ns),
        "eventTimeZoneOffset": "+00:00", "epcList": list(epcs), "action": action,
        "bizStep": step, "disposition": disposition, "readPoint": location,
    }
    if kind != "EPCIS_SHIP":
        event["bizLocation"] = location
    if lot is not None and action == "ADD":  # ilmd only with ADD (EPCIS-JSON-Schema anyOf)
        event["ilmd"] = {"cbvmda:lotNumber": lot, "cbvmda:itemExpirationDate": expiry}
    if biz_tx is not None:
        event["bizTransactionList"] = [{"type": "desadv", "bizTransaction": biz_tx}]
    if to is not None:
        event["sourceList"] = [{"type": "owning_party",
                                "source": f"urn:epc:id:pgln:{prefix}.00000"}]
        event["destinationList"] = [{"type": "owning_party", "destination":
                                     f"urn:epc:id:pgln:{org_prefix(genesis, to)}.00000"}]
    return event


def epcis_document(events: list[dict[str, Any]], calendar_ns: int) -> dict[str, Any]:
    return {"@context": [EPCIS_CONTEXT], "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": iso_time(calendar_ns), "epcisBody": {"eventList": events}}


def fhir_immunization(record_id: str, patient_ref: str, lot: str, expiry: str, epc: str,
                      manufacturer: str, performer: str, calendar_ns: int,
                      vaccine_code: str = "140") -> dict[str, Any]:
    """FHIR R4 Immunization (required: status, vaccineCode, patient, occurrence[x]); the unit's
    SGTIN goes in a project-local identifier (R4 has no element for it)."""
    return {
        "resourceType": "Immunization", "id": record_id, "status": "completed",
        "identifier": [{"system": "urn:medbft:sgtin", "value": epc}],
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx",
                                    "code": vaccine_code}]},
        "patient": {"reference": f"Patient/{patient_ref}"},
        "occurrenceDateTime": iso_time(calendar_ns, millis=False), "primarySource": True,
        "manufacturer": {"reference": f"Organization/{manufacturer}"},
        "lotNumber": lot, "expirationDate": expiry,
        "performer": [{"actor": {"reference": f"Practitioner/{performer}"}}],
        "protocolApplied": [{"doseNumberPositiveInt": 1}],
    }


def fhir_observation(record_id: str, patient_ref: str, code: str, value: float, unit: str,
                     calendar_ns: int) -> dict[str, Any]:
    """FHIR R4 Observation (a vital sign) with a LOINC code."""
    return {
        "resourceType": "Observation", "id": record_id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                            "observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient_ref}"},
        "effectiveDateTime": iso_time(calendar_ns, millis=False),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                          "code": unit},
    }


def fhir_medication_dispense(record_id: str, patient_ref: str, epc: str, gtin: str,
                             calendar_ns: int) -> dict[str, Any]:
    return {
        "resourceType": "MedicationDispense", "id": record_id, "status": "completed",
        "identifier": [{"system": "urn:medbft:sgtin", "value": epc}],
        "medicationCodeableConcept": {"coding": [{"system": "urn:oid:1.3.160",
                                                  "code": gtin}]},
        "subject": {"reference": f"Patient/{patient_ref}"},
        "whenHandedOver": iso_time(calendar_ns, millis=False),
    }


def fhir_consent(consent_id: str, patient_ref: str, custodian: str, grantee: str,
                 start: str, end: str, calendar_ns: int) -> dict[str, Any]:
    """FHIR R4 Consent: patient-privacy scope, OPTIN, one permit provision."""
    code = "http://terminology.hl7.org/CodeSystem/"
    return {
        "resourceType": "Consent", "id": consent_id, "status": "active",
        "scope": {"coding": [{"system": code + "consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_ref}"},
        "dateTime": iso_time(calendar_ns, millis=False),
        "performer": [{"reference": f"Patient/{patient_ref}"}],
        "organization": [{"reference": f"Organization/{custodian}"}],
        "policyRule": {"coding": [{"system": code + "v3-ActCode", "code": "OPTIN"}]},
        "provision": {
            "type": "permit", "period": {"start": start, "end": end},
            "actor": [{"role": {"coding": [{"system": code + "v3-ParticipationType",
                                            "code": "PRCP"}]},
                       "reference": {"reference": f"Organization/{grantee}"}}],
            "action": [{"coding": [{"system": code + "consentaction", "code": "access"}]}],
            "purpose": [{"system": code + "v3-ActReason", "code": "TREAT"}],
        },
    }
