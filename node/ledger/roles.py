"""Who may do what: client roles, organisation types, transaction kinds and the permission
matrix (docs/ledger.md#permission-matrix).

Why this exists: the matrix is the ledger's first rule ("deny by default") and also what the
tests, the docs and the workload generator read, so it lives here once, as data. A cell says
whether a role may submit a kind at all; the conditions behind a "C" or "own" cell (consent,
custodianship, ownership of a GTIN or a pseudonym) are checked by the rules in `rules.py`.
A role always comes from the registered identity (the genesis), never from the transaction.
"""

from __future__ import annotations

__all__ = [
    "CLIENT_ROLES",
    "KINDS",
    "LEDGER_ROLES",
    "ORG_TYPES",
    "PARTNER_ROLES",
    "PERMISSIONS",
    "READS",
    "ROLE_ALIASES",
    "may_read",
    "may_submit",
    "rotating_client_roles",
]

#: Client roles, in the order the workload's population rotation uses.
#: A genesis file may call `inspector` `regulator_inspector` (`ROLE_ALIASES`).
CLIENT_ROLES: tuple[str, ...] = (
    "manufacturer", "distributor", "pharmacist", "clinician", "patient", "inspector", "auditor",
)


#: Roles of the partners issue 16 added: payers, researchers and the ethics board that
#: approves their studies. Each is its own organisation (`ins-k`, `res-k`, `irb-k`), runs no
#: replica, and takes part only when a scenario's `population` names it, so they are not in
#: the default rotation above.
PARTNER_ROLES: tuple[str, ...] = ("insurer", "researcher", "ethics_board")
#: Every role the ledger knows, in the order a `population` lists its identities.
LEDGER_ROLES: tuple[str, ...] = CLIENT_ROLES + PARTNER_ROLES


def rotating_client_roles(count: int) -> dict[str, str]:
    """`client-1`.. `client-<count>` -> role, rotating through `CLIENT_ROLES`: the default
    population of a ledger network (a scenario without `workload.population`, a real
    network from `medbft keys init`)."""
    return {f"client-{i}": CLIENT_ROLES[(i - 1) % len(CLIENT_ROLES)]
            for i in range(1, count + 1)}


#: Names accepted for a role in a genesis file, mapped to the ledger's name.
ROLE_ALIASES: dict[str, str] = {"regulator_inspector": "inspector"}
#: Organisation types: consensus nodes are hospital/pharmacy/regulator orgs; manufacturers and
#: distributors are regulator-approved trading partners that run no replica.
ORG_TYPES: tuple[str, ...] = ("hospital", "pharmacy", "regulator", "manufacturer", "distributor",
                              "insurer", "research", "ethics")

_TRADING = frozenset({"clinician", "pharmacist", "manufacturer", "distributor"})
_TRADING_AND_REGULATOR = _TRADING | {"inspector"}
_REGULATOR = frozenset({"inspector"})

#: Transaction kind -> roles that may submit it (every other role is denied).
#: Comments give the matrix cell; "own" and "C" conditions are enforced in rules.py.
PERMISSIONS: dict[str, frozenset[str]] = {
    # consent and access (FHIR Consent semantics)
    "CONSENT_GRANT": frozenset({"patient"}),                     # ✓ own
    "CONSENT_REVOKE": frozenset({"patient"}),                    # ✓ own
    "ACCESS_REQUEST": frozenset({"patient", "clinician", "pharmacist", "inspector"}),
    # ^ patient own; clinician/pharmacist C; regulator metadata only. Denied roles still get
    #   an audited `deny` decision rather than a rejected transaction.
    "BREAK_GLASS": frozenset({"clinician"}),                     # ✓ (+review)
    "BREAK_GLASS_REVIEW": _REGULATOR,
    # clinical records (data stays off the chain)
    "RECORD_ANCHOR": frozenset({"clinician", "pharmacist"}),     # custodian; pharmacist: dispense
    "RECORD_AMEND": frozenset({"clinician", "pharmacist"}),      # records only
    # drug supply chain (EPCIS 2.0 ObjectEvents)
    "GTIN_REGISTER": frozenset({"manufacturer"}),
    "EPCIS_COMMISSION": frozenset({"manufacturer"}),
    "EPCIS_SHIP": _TRADING,                                      # clinician: hospital pharmacy
    "EPCIS_RECEIVE": _TRADING,
    "EPCIS_DISPENSE": frozenset({"clinician", "pharmacist"}),
    "EPCIS_DESTROY": _TRADING,                                   # custodian only
    "PRODUCT_VERIFY": _TRADING_AND_REGULATOR,
    # vaccination
    "IMMUNIZATION_ADMINISTER": frozenset({"clinician", "pharmacist"}),  # pharmacist: licensed
    "ADVERSE_EVENT_REPORT": frozenset({"clinician", "patient"}),
    # regulator
    "SUSPECT_FLAG": _TRADING_AND_REGULATOR,
    "SUSPECT_CLEAR": _REGULATOR,
    "ILLEGITIMATE_NOTIFY": _TRADING_AND_REGULATOR,
    "NOTIFICATION_TERMINATE": _REGULATOR,
    "RECALL_ISSUE": frozenset({"manufacturer", "inspector"}),    # manufacturer: own GTIN
    "RECALL_ACK": _TRADING,                                      # each custodian
    "RECALL_CLOSE": _REGULATOR,
    "ORG_SUSPEND": _REGULATOR,
    "ORG_REINSTATE": _REGULATOR,
    # biometric identity (a commitment to a pseudonymous identifier, never a template)
    "BIOMETRIC_ENROLL": frozenset({"patient", "clinician"}),     # patient own; clinician enrols
    "BIOMETRIC_REVOKE": frozenset({"patient", "clinician"}),     # at its own hospital
    "BIOMETRIC_VERIFY": frozenset({"clinician", "pharmacist"}),  # at the subject's custodian
    # insurance claims (FHIR Claim / ClaimResponse; consent with purpose HPAYMT)
    "CLAIM_SUBMIT": frozenset({"clinician", "pharmacist"}),      # custodian of what it bills
    "CLAIM_ADJUDICATE": frozenset({"insurer"}),                  # the payer the claim names
    # research (FHIR ResearchStudy; consent with purpose HRESCH)
    "STUDY_APPROVE": frozenset({"ethics_board"}),
    "RESEARCH_QUERY": frozenset({"researcher"}),                 # the approved study's own
    # aggregation, returns, cold chain (EPCIS 2.0 AggregationEvent, ObjectEvent, sensors)
    "EPCIS_AGGREGATE": _TRADING,                                 # custodian of every unit
    "EPCIS_DISAGGREGATE": _TRADING,
    "EPCIS_RETURN": frozenset({"clinician", "pharmacist", "distributor"}),  # to upstream
    "COLD_CHAIN_EXCURSION": _TRADING,                            # an org holding the lot
    "AE_REVIEW_CLOSE": _REGULATOR,                               # adverse-event signal review
}

#: Every transaction kind, sorted.
KINDS: tuple[str, ...] = tuple(sorted(PERMISSIONS))


def may_submit(role: str, kind: str) -> bool:
    """Whether `role` may submit `kind` at all (deny by default: unknown kinds and roles -> no)."""
    allowed = PERMISSIONS.get(kind)
    return allowed is not None and role in allowed


#: What a reader may read (docs/security.md#reads-and-receipts), by read -> roles. `node` is a
#: replica's own identity (peers back-fill blocks from each other); "own" conditions (a
#: patient reads only about themselves) are checked where the read is served (node/reads.py).
READS: dict[str, frozenset[str]] = {
    "ledger": frozenset({"node", "inspector", "auditor"}),       # raw blocks: everything
    "blocks": frozenset({"node", "inspector", "auditor"}),
    "state": frozenset({"node", *LEDGER_ROLES}),                 # counts only, no contents
    "trace": frozenset({"node", "manufacturer", "distributor", "pharmacist", "clinician",
                        "inspector", "auditor"}),
    "recall-exposure": frozenset({"node", "manufacturer", "pharmacist", "clinician",
                                  "inspector", "auditor"}),
    "access-log": frozenset({"node", "patient", "inspector", "auditor"}),  # patient: own
    "consents": frozenset({"node", "patient", "clinician", "pharmacist", "inspector",
                           "auditor"}),                                    # patient: own
}


def may_read(role: str, what: str) -> bool:
    """Whether `role` may make read `what` at all (deny by default)."""
    allowed = READS.get(what)
    return allowed is not None and role in allowed
