"""Admission control: personal data and free text are refused before ordering, so they never
reach a block, a replica's state or a disk (docs/security.md).

Unit level: `admissible()` names the rule for every PHI field name, free text in every coded
field and every identifier outside its pattern. Replica level (in-memory cluster running the
ledger): an inadmissible REQUEST is answered `refused:<rule>` by f+1 replicas and never
ordered; a primary that proposes one anyway is refused by the backups and replaced."""

from __future__ import annotations

import pytest

from node.ledger import Ledger, LedgerGenesis, encode_tx
from node.ledger.txs import PHI_FIELDS, SCHEMA, admissible
from node.ledger.vocab import FIELD_RULES, KIND_FIELD_RULES
from node.pbft import Replica
from node.statemachine import KeyValueStore
from sim.memnet import InMemoryCluster
from tests.ledger_support import GTIN, Harness, epc, ev, pp, sha

SECOND = 1_000_000_000
P1H1 = pp("patient-1", "hospital-1")
STORY = "Peter Chalmers, born 1974-12-25, MRN 12345, HIV positive"
ANCHOR = dict(record_id="rec-1", patient=P1H1, resource_type="Observation",
              commitment=sha("r"), fhir_version="4.0.1")


# -- unit: admissible() -------------------------------------------------------------------------


@pytest.mark.parametrize("field", sorted(PHI_FIELDS))
def test_every_phi_field_name_is_refused_with_its_rule(field: str) -> None:
    op = encode_tx("RECORD_ANCHOR", **ANCHOR, **{field: "x"})
    assert admissible(op) == f"phi-field:{field}"


def test_phi_field_spellings_and_nesting_are_refused() -> None:
    assert admissible(encode_tx("RECORD_ANCHOR", **ANCHOR, birthDate="1974-12-25",
                                name="Peter Chalmers")) == "phi-field:birthDate"
    assert admissible(encode_tx("RECORD_ANCHOR", **ANCHOR, Birth_Date="1974")) == \
        "phi-field:Birth_Date"
    assert admissible(encode_tx("CONSENT_GRANT", consent_id="c-1", patient=P1H1,
                                grantee="hospital-2", actions=["access"], purposes=["TREAT"],
                                period={"start": "2025-01-01T00:00:00Z",
                                        "end": "2026-01-01T00:00:00Z", "address": "x"},
                                doc_commitment=sha("c"))) == "phi-field:address"


CODED = {
    "ORG_SUSPEND": dict(org="hospital-2", reason=STORY),
    "SUSPECT_FLAG": dict(lot="LOT-A1", basis=STORY),
    "RECALL_ISSUE": dict(recall_id="recall-1", gtin=GTIN, lots=["LOT-A1"], reason=STORY,
                         **{"class": "I"}),
    "EPCIS_DESTROY": dict(epcs=[epc(1)], event_hash=ev("x"), reason=STORY),
    "ILLEGITIMATE_NOTIFY": dict(incident_id="inc-1", lot="LOT-A1", classification=STORY),
    "BREAK_GLASS": dict(patient=P1H1, reason_code=STORY),
    "BREAK_GLASS_REVIEW": dict(review_id="bg-1-0", outcome=STORY),
    "ADVERSE_EVENT_REPORT": dict(lot="LOT-A1", severity=STORY, report_commitment=sha("a")),
}


@pytest.mark.parametrize("kind", sorted(CODED))
def test_free_text_in_a_coded_field_is_refused(kind: str) -> None:
    fields = CODED[kind]
    coded = next(k for k, v in fields.items() if v == STORY)
    assert admissible(encode_tx(kind, **fields)) == f"not-a-code:{coded}"
    rule = KIND_FIELD_RULES.get((kind, coded)) or FIELD_RULES[coded]
    assert isinstance(rule, frozenset)
    fields = {**fields, coded: sorted(rule)[0]}
    assert admissible(encode_tx(kind, **fields)) is None


@pytest.mark.parametrize(("field", "value"), [
    ("record_id", STORY), ("record_id", "peter-chalmers"), ("patient", "Peter Chalmers"),
    ("patient", "pp:" + "0" * 19), ("commitment", "sha256:" + STORY),
])
def test_identifiers_outside_their_pattern_are_refused(field: str, value: str) -> None:
    reason = admissible(encode_tx("RECORD_ANCHOR", **{**ANCHOR, field: value}))
    assert reason in (f"bad-field:{field}", "bad-commitment")


def test_other_identifier_patterns() -> None:
    ship = dict(epcs=[epc(1)], to="pharmacy-1", event_hash=ev("s"))
    assert admissible(encode_tx("EPCIS_SHIP", **ship)) is None
    assert admissible(encode_tx("EPCIS_SHIP", **{**ship, "epcs": [epc(1) + "x"]})) == \
        "bad-field:epcs"
    assert admissible(encode_tx("EPCIS_SHIP", **{**ship, "biz_tx": STORY})) == \
        "bad-field:biz_tx"
    assert admissible(encode_tx("EPCIS_SHIP", **{**ship, "to": STORY})) == "bad-field:to"
    assert admissible(encode_tx("GTIN_REGISTER", gtin="00614141000013")) == "bad-field:gtin"
    assert admissible(encode_tx("SUSPECT_FLAG", lot="lot of Peter", basis="inspection")) == \
        "bad-field:lot"
    assert admissible(encode_tx("RECALL_ACK", recall_id="recall-1", on_hand=-1)) == \
        "bad-field:on_hand"


def test_every_string_field_of_every_kind_has_a_rule() -> None:
    for kind, (required, optional) in SCHEMA.items():
        for field, kind_of in {**required, **optional}.items():
            if kind_of in (str, list):
                assert (kind, field) in KIND_FIELD_RULES or field in FIELD_RULES, (kind, field)


def test_a_reason_never_echoes_an_unknown_field_name() -> None:
    op = encode_tx("GTIN_REGISTER", gtin=GTIN, **{"Peter Chalmers": 1})
    assert admissible(op) == "unknown-field"
    op = encode_tx("GTIN_REGISTER", gtin=GTIN, **{"Peter": list(range(40))})
    assert admissible(op) == "phi-vector"


def test_ledger_admission_knows_the_genesis_parties() -> None:
    ledger = Harness().ledger
    ship = dict(epcs=[epc(1)], event_hash=ev("s"))
    assert ledger.admissible(encode_tx("EPCIS_SHIP", to="pharmacy-1", **ship)) is None
    assert ledger.admissible(encode_tx("EPCIS_SHIP", to="peter-chalmers", **ship)) == \
        "unknown-party:to"
    assert KeyValueStore().admissible(b"put name Peter") is None


def test_a_rejected_transaction_is_audited_as_digest_and_reason_only() -> None:
    h = Harness()
    result = h.tx("clinician-1", "RECORD_ANCHOR", **{**ANCHOR, "patient": pp("patient-1",
                                                                              "hospital-2")})
    assert result == "rejected:not-custodian"
    entry = h.ledger.state.audit.entries[-1]
    assert entry[4].startswith("sha256:") and entry[5:] == ("rejected", "not-custodian")
    assert "rec-1" not in h.ledger.snapshot().decode()


# -- replicas: an in-memory cluster running the ledger -----------------------------------------


class _Careless(Ledger):
    """A faulty replica's ledger: admits everything (it would propose personal data)."""

    def admissible(self, op: bytes) -> str | None:
        return None


class LedgerCluster(InMemoryCluster):
    careless: tuple[str, ...] = ()

    def _new_replica(self, rid: str) -> Replica:
        from node.crypto import Costs, Keyring
        keys = Keyring(self.idents[rid], self.membership.public_keys(), Costs(), self.cache)
        genesis = LedgerGenesis.from_membership(self.membership)
        machine = (_Careless if rid in self.careless else Ledger)(genesis)
        return Replica(self.membership, rid, keys, machine, self.config)


class CarelessPrimaryCluster(LedgerCluster):
    careless = ("r0",)


PHI_OP = encode_tx("RECORD_ANCHOR", **ANCHOR, name="Peter Chalmers", birthDate="1974-12-25")
GOOD_OP = encode_tx("GTIN_REGISTER", gtin=GTIN)


def _ordered_anywhere(c: InMemoryCluster, op: bytes) -> list[str]:
    """Replicas holding `op` in an executed batch or any batch they accepted."""
    return [rid for rid, r in c.replicas.items()
            for cb in r.log.executed.values() for req in cb.batch.requests if req.op == op] + \
        [rid for rid, r in c.replicas.items() for b in r.log.batches.values()
         for req in b.requests if req.op == op]


def test_an_inadmissible_request_is_answered_by_f_plus_1_and_never_ordered() -> None:
    c = LedgerCluster(n=4)
    c.submit(PHI_OP)
    c.deliver_all()
    assert [a.result for _, a in c.accepted] == [b"refused:phi-field:birthDate"]
    assert c.sent_kinds().get("PRE-PREPARE", 0) == 0
    assert all(not r.pending and r.last_executed == 0 for r in c.replicas.values())
    assert all(r.dropped.get("inadmissible request") == 1 for r in c.replicas.values())
    assert _ordered_anywhere(c, PHI_OP) == []
    c.submit(GOOD_OP)  # the client carries on; the network still orders
    c.deliver_all()
    assert len(c.accepted) == 2 and {r.last_executed for r in c.replicas.values()} == {1}


def test_a_primary_proposing_personal_data_is_refused_and_replaced() -> None:
    c = CarelessPrimaryCluster(n=4)
    c.submit(PHI_OP)
    c.deliver_all()
    for rid in ("r1", "r2", "r3"):
        assert c.replicas[rid].dropped.get("inadmissible request in batch") == 1
    c.advance(3 * SECOND)  # the client retransmits to everyone; the new view is installed
    assert {c.replicas[r].view for r in ("r1", "r2", "r3")} == {1}
    assert [a.result for _, a in c.accepted] == [b"refused:phi-field:birthDate"]
    assert [r for r in _ordered_anywhere(c, PHI_OP) if r != "r0"] == []
    c.submit(GOOD_OP)
    c.deliver_all()
    c.advance(SECOND)
    assert len(c.accepted) == 2 and c.accepted[-1][1].view >= 1


def test_decode_tx_remembers_verdicts_and_hands_out_fresh_dicts() -> None:
    """decode_tx remembers each transaction's verdict (a pure function of the bytes) and
    changes speed only: a remembered valid transaction still comes back as a fresh dict (a
    copy of the remembered decoding), never one another replica holds, and a remembered
    refusal raises the same reason."""
    from node.ledger import txs

    op = encode_tx("RECORD_ANCHOR", **{**ANCHOR, "record_id": "rec-2"})
    first = txs.decode_tx(op)
    assert op in txs._checked
    second = txs.decode_tx(op)
    assert second == first and second is not first
    second["record_id"] = "changed"  # a caller's dict is its own
    assert txs.decode_tx(op)["record_id"] == "rec-2"
    refused = encode_tx("RECORD_ANCHOR", **ANCHOR, birthDate="1974-12-25")
    reasons = []
    for _ in range(2):
        with pytest.raises(txs.TxError) as exc:
            txs.decode_tx(refused)
        reasons.append(exc.value.reason)
    assert reasons[0] == reasons[1] == txs._checked[refused] and reasons[0].startswith("phi")
