"""Care transactions: vaccine administration, health-record anchors and amendments, adverse
event reports.

Why this exists: this is where the supply chain meets the patient. A pharmacist or
clinician administers a dose from stock it holds (a FHIR R4 Immunization naming the lot),
anchors records (Observation, MedicationDispense) under the patient's pseudonym at its
organisation, amends them, and reports adverse events against a lot. Only salted
commitments go on the ledger; the resources stay off-chain (`TrafficState.salted`).

What it must not know: who may call a builder, and when (the coordinator,
medbft/traffic/ledger.py); who may read the anchored records (medbft/traffic/consent.py).
"""

from __future__ import annotations

from node.ledger import documents as doc
from node.ledger.txs import encode_tx

from .world import Pending, TrafficState

__all__ = ["Care"]


class Care:
    """Builders of the care transactions, on the shared traffic state."""

    def __init__(self, state: TrafficState) -> None:
        self.s = state

    def administer(self, cid: str, org: str, epc: str) -> Pending:
        s = self.s
        source = s.w.held[org] if epc in s.w.held.get(org, []) else s.w.stock[org]
        source.remove(epc)
        patient = s.pick(s.patients)
        pseudonym = s.pseudonyms_of(patient)[s.pick(s.custodians)]
        lot = s.w.lot_of[epc]
        _gtin, expiry, mfr = s.w.lots[lot]
        record_id = s.new_id("imm")
        resource = doc.fhir_immunization(record_id, patient, lot, expiry, epc, mfr, cid,
                                         s.calendar_ns)

        def ok(_: bytes) -> None:
            s.w.administered[lot] = s.w.administered.get(lot, 0) + 1

        return Pending(encode_tx("IMMUNIZATION_ADMINISTER", record_id=record_id,
                                 patient=pseudonym, epc=epc, vaccine_code="140",
                                 commitment=s.salted(resource, record_id)),
                       "IMMUNIZATION_ADMINISTER", ok, lambda _: source.append(epc))

    def adverse(self) -> Pending:
        s = self.s
        lot = s.pick(sorted(s.w.lots))
        report_id = s.new_id("ae")
        report = {"resourceType": "AdverseEvent", "id": report_id, "actuality": "actual",
                  "date": doc.iso_time(s.calendar_ns, millis=False),
                  "suspectEntity": [{"instance": {"display": lot}}]}
        return Pending(encode_tx("ADVERSE_EVENT_REPORT", lot=lot, severity="mild",
                                 report_commitment=s.salted(report, report_id)),
                       "ADVERSE_EVENT_REPORT")

    def anchor(self, role: str, org: str) -> Pending:
        s = self.s
        patient = s.pick(s.patients)
        pseudonym = s.pseudonyms_of(patient)[org]
        record_id = s.new_id("rec")
        if role == "pharmacist":
            gtin = next(iter(sorted(s.w.gtin.values())), "00614141000012")
            resource = doc.fhir_medication_dispense(record_id, patient, "n/a", gtin,
                                                    s.calendar_ns)
            resource_type = "MedicationDispense"
        else:
            value = round(90 + s.rng.random() * 60, 1)
            resource = doc.fhir_observation(record_id, patient, "8480-6", value, "mm[Hg]",
                                            s.calendar_ns)
            resource_type = "Observation"
        commit = s.salted(resource, record_id)

        def ok(_: bytes) -> None:
            s.w.records.setdefault(org, []).append([record_id, pseudonym, commit])

        return Pending(encode_tx("RECORD_ANCHOR", record_id=record_id, patient=pseudonym,
                                 resource_type=resource_type, commitment=commit,
                                 fhir_version="4.0.1"), "RECORD_ANCHOR", ok)

    def amend(self, org: str) -> Pending:
        s = self.s
        entry = s.pick(s.w.records[org])
        record_id, _, prev = entry
        resource = {"resourceType": "Observation", "id": record_id, "status": "amended",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}}
        key = f"{record_id}@{s.ids}"
        new = s.salted(resource, key)

        def ok(_: bytes) -> None:
            entry[2] = new

        def failed(_: bytes) -> None:  # a version the ledger never took: not kept off-chain
            s.offchain["records"].pop(key, None)

        return Pending(encode_tx("RECORD_AMEND", record_id=record_id, prev_commitment=prev,
                                 new_commitment=new), "RECORD_AMEND", ok, failed)
