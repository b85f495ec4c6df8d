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
    "EPCIS_CONTEXT", "epcis_aggregation_event", "epcis_document", "epcis_event",
    "epcis_sensor_event", "fhir_claim", "fhir_claim_response", "fhir_consent",
    "fhir_immunization", "fhir_medication_dispense", "fhir_observation",
    "fhir_research_study", "iso_time", "org_prefix", "sgtin", "sscc",
]

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
_BIZ_STEP = {
    "EPCIS_COMMISSION": ("ADD", "commissioning", "active"),
    "EPCIS_SHIP": ("OBSERVE", "shipping", "in_transit"),
    "EPCIS_RECEIVE": ("OBSERVE", "receiving", "in_progress"),
    "EPCIS_DISPENSE": ("OBSERVE", "dispensing", "dispensed"),
    "EPCIS_DESTROY": ("DELETE", "destroying", "destroyed"),
    "EPCIS_RETURN": ("OBSERVE", "returning", "returned"),
}
_CODES = "http://terminology.hl7.org/CodeSystem/"


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


def sscc(prefix: str, serial_ref: int) -> str:
    """An SSCC EPC URI (a case or pallet): company prefix + serial reference, 17 digits."""
    return f"urn:epc:id:sscc:{prefix}.{serial_ref:0{17 - len(prefix)}d}"


def epcis_event(kind: str, genesis: LedgerGenesis, org: str, epcs: list[str],
                calendar_ns: int, *, to: str | None = None, lot: str | None = None,
                expiry: str | None = None, biz_tx: str | None = None,
                storage: tuple[str, str] | None = None) -> dict[str, Any]:
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
        if storage is not None:  # project-local ILMD extension: the lot's storage range (°C)
            event["ilmd"]["ext:storageTempMinCEL"], event["ilmd"]["ext:storageTempMaxCEL"] \
                = float(storage[0]), float(storage[1])
    if biz_tx is not None:
        event["bizTransactionList"] = [{"type": "desadv", "bizTransaction": biz_tx}]
    if to is not None:
        event["sourceList"] = [{"type": "owning_party",
                                "source": f"urn:epc:id:pgln:{prefix}.00000"}]
        event["destinationList"] = [{"type": "owning_party", "destination":
                                     f"urn:epc:id:pgln:{org_prefix(genesis, to)}.00000"}]
    return event


def epcis_aggregation_event(genesis: LedgerGenesis, org: str, parent: str, epcs: list[str],
                            calendar_ns: int, pack: bool = True) -> dict[str, Any]:
    """EPCIS 2.0 AggregationEvent: units packed into (ADD, bizStep packing) or unpacked from
    (DELETE, unpacking) a case named by its SSCC."""
    location = {"id": f"urn:epc:id:sgln:{org_prefix(genesis, org)}.00001.0"}
    return {"type": "AggregationEvent", "eventTime": iso_time(calendar_ns),
            "eventTimeZoneOffset": "+00:00", "parentID": parent, "childEPCs": list(epcs),
            "action": "ADD" if pack else "DELETE",
            "bizStep": "packing" if pack else "unpacking", "disposition": "in_progress",
            "readPoint": location, "bizLocation": location}


def epcis_sensor_event(genesis: LedgerGenesis, org: str, lot_epcs: list[str],
                       calendar_ns: int, reading: str, storage: tuple[str, str]
                       ) -> dict[str, Any]:
    """EPCIS 2.0 ObjectEvent (bizStep inspecting) with a sensorElementList: one temperature
    sensorReport outside the lot's range (gs1:Temperature, uom CEL)."""
    location = {"id": f"urn:epc:id:sgln:{org_prefix(genesis, org)}.00001.0"}
    return {"type": "ObjectEvent", "eventTime": iso_time(calendar_ns),
            "eventTimeZoneOffset": "+00:00", "epcList": list(lot_epcs), "action": "OBSERVE",
            "bizStep": "inspecting", "disposition": "non_sellable_other",
            "readPoint": location, "bizLocation": location,
            "sensorElementList": [{
                "sensorMetadata": {"time": iso_time(calendar_ns)},
                "sensorReport": [{"type": "gs1:Temperature", "value": float(reading),
                                  "uom": "CEL", "minValue": float(storage[0]),
                                  "maxValue": float(storage[1])}]}]}


def fhir_claim(claim_id: str, patient_ref: str, provider: str, insurer: str, claim_type: str,
               record_ids: list[str], amount: int | None, calendar_ns: int) -> dict[str, Any]:
    """FHIR R4 Claim (required: status, type, use, patient, created, provider, priority,
    insurance); the billed records are supportingInfo references, never their content."""
    claim: dict[str, Any] = {
        "resourceType": "Claim", "id": claim_id, "status": "active",
        "type": {"coding": [{"system": _CODES + "claim-type", "code": claim_type}]},
        "use": "claim", "patient": {"reference": f"Patient/{patient_ref}"},
        "created": iso_time(calendar_ns, millis=False),
        "provider": {"reference": f"Organization/{provider}"},
        "insurer": {"reference": f"Organization/{insurer}"},
        "priority": {"coding": [{"system": _CODES + "processpriority", "code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True,
                       "coverage": {"reference": f"Coverage/{insurer}-{patient_ref}"}}],
        "supportingInfo": [{"sequence": k + 1, "category": {"coding": [{
            "system": _CODES + "claiminformationcategory", "code": "info"}]},
            "valueReference": {"reference": f"DocumentReference/{rid}"}}
            for k, rid in enumerate(record_ids)],
    }
    if amount is not None:
        claim["total"] = {"value": amount / 100, "currency": "EUR"}
    return claim


def fhir_claim_response(claim_id: str, insurer: str, approve: bool, reason: str,
                        calendar_ns: int) -> dict[str, Any]:
    """FHIR R4 ClaimResponse: outcome complete, with the adjudication decision and reason."""
    return {
        "resourceType": "ClaimResponse", "id": f"{claim_id}-r", "status": "active",
        "type": {"coding": [{"system": _CODES + "claim-type", "code": "professional"}]},
        "use": "claim", "created": iso_time(calendar_ns, millis=False),
        "insurer": {"reference": f"Organization/{insurer}"},
        "request": {"reference": f"Claim/{claim_id}"}, "outcome": "complete",
        "disposition": "approved" if approve else "denied",
        "adjudication": [{
            "category": {"coding": [{"system": _CODES + "adjudication",
                                     "code": "benefit" if approve else "deductible"}]},
            "reason": {"coding": [{"system": "urn:medbft:adjudication-reason", "code": reason}]},
        }],
    }


def fhir_research_study(study_id: str, sponsor: str, approver: str, classes: list[str],
                        calendar_ns: int) -> dict[str, Any]:
    """FHIR R4 ResearchStudy (required: status), approved by an ethics board."""
    return {
        "resourceType": "ResearchStudy", "id": study_id, "status": "active",
        "title": f"Aggregate study {study_id}",
        "sponsor": {"reference": f"Organization/{sponsor}"},
        "principalInvestigator": {"reference": f"Practitioner/{sponsor}"},
        "period": {"start": iso_time(calendar_ns, millis=False)},
        "keyword": [{"text": c} for c in classes],
        "note": [{"text": f"approved by {approver}"}],
    }


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
