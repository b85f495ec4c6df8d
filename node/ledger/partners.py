"""The rules for the partners issue 16 added: payers (insurance claims), researchers and the
ethics board (aggregate research queries), and biometric verification at the point of care.

Why this exists: the purpose codes `HPAYMT` and `HRESCH` meant nothing until someone paid or
researched under them. Here a hospital or pharmacy bills an insurer for records and
dispensations it holds, by reference only (record ids and serials, never clinical content),
and the insurer may approve only while the patient's consent for payment (`HPAYMT`, action
`disclose`, naming the insurer) is in force at the agreed position; an ethics board approves a
study, and the study's researcher gets counts over the patients whose research consent
(`HRESCH`, action `use`) is in force, suppressed below the study's minimum cohort; a clinician
or pharmacist verifies a patient against the enrolled biometric reference (a commitment, never
a template), and a renewed reference makes the old one unusable. Each decision is recorded in a
table row (`claims`, `research`) that a harm detector or an auditor can check on its own.
docs/ledger.md#claims, #research and #biometrics.

Must not know: the wall clock, randomness, the network (as rules.py).
"""

from __future__ import annotations

from collections.abc import Callable

from node.ledger.rules import Ctx, _check_subject, _need, _patient
from node.ledger.state import State
from node.ledger.txs import is_commitment

__all__ = ["MIN_COHORT_FLOOR", "PARTNER_HANDLERS", "PAYMENT", "RESEARCH", "consent_in_force"]

#: No study may release a count over fewer patients than this, whatever its ethics board says
#: (k-anonymity's usual k; many boards choose more, e.g. CMS suppresses cells under 11).
MIN_COHORT_FLOOR = 5
MAX_COHORT = 100_000
#: (purpose, consent action) a claim and a research query need.
PAYMENT = ("HPAYMT", "disclose")
RESEARCH = ("HRESCH", "use")
CLAIMED_DISPOSITIONS = ("dispensed", "administered")


def consent_in_force(st: State, pseudonym: str, grantees: tuple[str, ...], purpose: str,
                     action: str, now_ns: int, resource: str | None = None) -> str | None:
    """The earliest-granted consent of `pseudonym` that is live now (not revoked earlier in the
    chain or the block), names one of `grantees`, covers `purpose` and `action`, whose period
    holds `now_ns` and whose data classes (if any) include `resource`; None if there is none."""
    consents = st.tables["consents"]
    best: tuple[tuple[int, int], str] | None = None
    for cid in st.consents_of.get(pseudonym, ()):
        row = consents[cid]
        if (row[8] is None and row[1] in grantees and action in row[2] and purpose in row[3]
                and row[5] <= now_ns < row[6] and (not row[4] or resource in row[4])
                and (best is None or tuple(row[7]) < best[0])):
            best = (tuple(row[7]), cid)
    return None if best is None else best[1]


# == insurance claims (FHIR Claim / ClaimResponse) ============================================

def claim_submit(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    _need(st.get("claims", tx["claim_id"]) is None, "duplicate-claim")
    payer = tx["to"]
    _need(ctx.g.orgs.get(payer) == "insurer", "not-an-insurer")
    _, custodian = _patient(ctx, tx["patient"])
    _need(custodian == ctx.party.org, "not-custodian")
    _need(is_commitment(tx["claim_commitment"]), "bad-commitment")
    claimed = st.tables["claimed"]
    record_ids = sorted(tx["record_ids"])
    for record_id in record_ids:
        record = st.get("records", record_id)
        _need(record is not None, "unknown-record")
        assert record is not None
        _need(record[0] == tx["patient"], "record-not-of-patient")
        _need(record[1] == ctx.party.org, "not-custodian")
        _need("rec:" + record_id not in claimed, "already-claimed")
    epcs = sorted(tx.get("epcs", ()))
    for epc in epcs:
        unit = st.get("units", epc)
        _need(unit is not None, "unknown-epc")
        assert unit is not None
        _need(unit[2] == ctx.party.org and unit[3] in CLAIMED_DISPOSITIONS, "not-dispensed")
        _need("epc:" + epc not in claimed, "already-claimed")
    consent = consent_in_force(st, tx["patient"], (payer, "role:insurer"), *PAYMENT,
                               ctx.now_ns)
    _need(consent is not None, "no-consent")
    st.put("claims", tx["claim_id"], (
        tx["patient"], ctx.party.id, ctx.party.org, payer, tuple(record_ids), tuple(epcs),
        tx.get("amount"), tx["claim_type"], tx["claim_commitment"], consent, ctx.pos,
        "submitted", None, None, None, None))
    for key in [*("rec:" + r for r in record_ids), *("epc:" + e for e in epcs)]:
        st.put("claimed", key, (tx["claim_id"],))
    return b"ok"


def claim_adjudicate(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    claim = st.get("claims", tx["claim_id"])
    _need(claim is not None, "unknown-claim")
    assert claim is not None
    _need(claim[3] == ctx.party.org, "not-payer")
    _need(claim[11] == "submitted", "claim-closed")
    approve = tx["decision"] == "approve"
    _need(approve == (tx["reason_code"] == "covered"), "bad-field:reason_code")
    consent = None
    if approve:  # payment discloses the patient's care to the payer: consent, now
        consent = consent_in_force(st, claim[0], (claim[3], "role:insurer"), *PAYMENT,
                                   ctx.now_ns)
        _need(consent is not None, "no-consent")
    else:  # a denied claim's items may be billed again (after a consent, say)
        for key in [*("rec:" + r for r in claim[4]), *("epc:" + e for e in claim[5])]:
            st.put("claimed", key, None)
    st.put("claims", tx["claim_id"], (*claim[:11], "approved" if approve else "denied",
                                      tx["reason_code"], ctx.party.id, consent, ctx.pos))
    return b"ok:paid" if approve else b"ok:denied"


# == research (FHIR ResearchStudy; aggregates only) ===========================================

def study_approve(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    _need(st.get("studies", tx["study_id"]) is None, "duplicate-study")
    researcher = ctx.g.parties.get(tx["researcher"])
    _need(researcher is not None and researcher.role == "researcher", "unknown-researcher")
    assert researcher is not None
    _need(is_commitment(tx["protocol_commitment"]), "bad-commitment")
    _need(MIN_COHORT_FLOOR <= tx["min_cohort"] <= MAX_COHORT, "cohort-minimum-too-low"
          if tx["min_cohort"] < MIN_COHORT_FLOOR else "bad-field:min_cohort")
    st.put("studies", tx["study_id"], (
        researcher.id, researcher.org, ctx.party.id, tx["protocol_commitment"],
        tuple(sorted(tx["data_classes"])), tx["min_cohort"], ctx.pos, "approved"))
    return b"ok"


def cohort(ctx: Ctx, resource_type: str) -> tuple[int, int]:
    """(consenting patients, their records) among the records of `resource_type`: a record
    counts when its patient's research consent names the signer, its org or its role. A
    patient is counted once across its pseudonyms. O(records + their consents)."""
    st, party = ctx.st, ctx.party
    grantees = (party.id, party.org, "role:" + party.role)
    patients: set[str] = set()
    records = 0
    for row in st.tables["records"].values():
        if row[2] != resource_type:
            continue
        if consent_in_force(st, row[0], grantees, *RESEARCH, ctx.now_ns, resource_type):
            records += 1
            patients.add(ctx.g.pseudonyms[row[0]][0])
    return len(patients), records


def released(cohort_size: int, minimum: int) -> bool:
    """Whether an aggregate over `cohort_size` patients may leave the ledger."""
    return cohort_size >= minimum


def research_query(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    _need(st.get("research", tx["query_id"]) is None, "duplicate-query")
    study = st.get("studies", tx["study_id"])
    _need(study is not None and study[7] == "approved", "unknown-study")
    assert study is not None
    _need(study[0] == ctx.party.id, "not-study-researcher")
    _need(tx["resource_type"] in study[4], "outside-protocol")
    size, records = cohort(ctx, tx["resource_type"])
    minimum = study[5]
    value = (size if tx["measure"] == "patients" else records) if released(size, minimum) \
        else None
    st.put("research", tx["query_id"], (tx["study_id"], ctx.party.id, tx["resource_type"],
                                         tx["measure"], size, minimum, value, ctx.pos))
    decision = "suppressed" if value is None else "released"
    st.add_audit((ctx.height, ctx.index, ctx.party.id, "RESEARCH_QUERY", tx["study_id"],
                  decision, f"cohort-minimum:{minimum}"), None)
    return b"ok:suppressed" if value is None else f"ok:aggregate={value}".encode()


# == biometric verification (ISO/IEC 24745: compare PI*, never a template) ====================

def biometric_verify(ctx: Ctx) -> bytes:
    """The verifier's device ran the fuzzy extractor's Rep(probe, helper data) and committed
    to the pseudonymous identifier it reproduced; the ledger compares that with the enrolled
    reference and records the outcome. A renewed reference makes the old one fail: an older
    version is `stale-template-version`, an old PI at the new version is no match."""
    subject, tx = _check_subject(ctx), ctx.tx
    _need(is_commitment(tx["pi_commitment"]) and is_commitment(tx["ad_ref_hash"]),
          "bad-commitment")
    row = ctx.st.get("biometrics", subject)
    _need(row is not None, "not-enrolled")
    assert row is not None
    _need(row[2] == "active", "reference-revoked")
    _need(tx["template_version"] >= row[1], "stale-template-version")
    _need(tx["template_version"] == row[1], "unknown-template-version")
    match = tx["pi_commitment"] == row[0] and tx["ad_ref_hash"] == row[3]
    verdict = "match" if match else "no-match"
    ctx.st.add_audit((ctx.height, ctx.index, ctx.party.id, "BIOMETRIC_VERIFY", subject, verdict,
                      f"template-v{row[1]}"), subject)
    return f"verified:{verdict}".encode()


PARTNER_HANDLERS: dict[str, Callable[[Ctx], bytes]] = {
    "CLAIM_SUBMIT": claim_submit, "CLAIM_ADJUDICATE": claim_adjudicate,
    "STUDY_APPROVE": study_approve, "RESEARCH_QUERY": research_query,
    "BIOMETRIC_VERIFY": biometric_verify,
}
