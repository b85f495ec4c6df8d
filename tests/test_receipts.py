"""Layer 1: read receipts without processes: Merkle paths, the proof chain from a signed
checkpoint to a transaction, and that one altered byte anywhere in a receipt is refused
(node.ledger.receipts, node/reads.py).
"""

from __future__ import annotations

import dataclasses

import pytest
from ledger_support import GTIN, epc, ev

from node import messages as m
from node.crypto import Identity, Keyring
from node.ledger.genesis import LedgerGenesis
from node.ledger.ledger import Ledger, merkle_root
from node.ledger.receipts import ReceiptError, dump, merkle_path, merkle_verify, verify_receipt
from node.ledger.txs import encode_tx
from node.membership import Member, Membership
from node.pbft.checkpoint import checkpoint_digest, replies_digest
from node.reads import ReadRefused, Stable, answer, attest, build_receipt, check_read, sign_read
from node.statemachine import BlockInfo

NODES = ("hospital-1", "pharmacy-1", "regulator-1", "hospital-2")
CLIENTS = (("client-1", "manufacturer"), ("client-2", "patient"), ("client-3", "auditor"))
IDS = {i: Identity.from_seed(i, b"receipts") for i in (*NODES, *(c for c, _ in CLIENTS))}
ROLES = dict(zip(NODES, ("hospital", "pharmacy", "regulator", "hospital"), strict=True))


def _membership() -> Membership:
    return Membership(tuple(Member(i, ROLES[i], IDS[i].public_bytes) for i in NODES),
                      tuple(Member(c, r, IDS[c].public_bytes) for c, r in CLIENTS))


@pytest.mark.parametrize("n", range(1, 12))
def test_merkle_paths_lead_to_the_root_and_only_from_their_position(n: int) -> None:
    leaves = [bytes([i]) * 32 for i in range(n)]
    root = merkle_root(leaves)
    for i in range(n):
        path = merkle_path(leaves, i)
        assert merkle_verify(leaves[i], i, n, path, root)
        if n > 1:
            assert not merkle_verify(leaves[i], (i + 1) % n, n, path, root)
            assert not merkle_verify(leaves[(i + 1) % n], i, n, path, root)


class _Net:
    """A ledger with three blocks, a checkpoint signed by 3 of 4 replicas."""

    def __init__(self) -> None:
        self.membership = _membership()
        self.ledger = Ledger(LedgerGenesis.from_membership(self.membership, epoch_ns=0))
        self.blocks: dict[int, list[m.Request]] = {}
        client = Keyring(IDS["client-1"], {})
        txs = [encode_tx("GTIN_REGISTER", gtin=GTIN),
               encode_tx("EPCIS_COMMISSION", gtin=GTIN, epcs=[epc(1), epc(2)], lot="L1",
                         expiry="2030-01-01", event_hash=ev("c")),
               encode_tx("GTIN_REGISTER", gtin=GTIN)]
        for seq, op in enumerate(txs, start=1):
            unsigned = m.Request(op, seq, "client-1", 0, b"")
            req = m.replace(unsigned, signature=client.sign(m.encode(unsigned)))
            self.blocks[seq] = [req]
            self.ledger.execute([req], BlockInfo(seq, 0, seq * 10**9))
        self.ledger.checkpoint(3)
        digest = checkpoint_digest(self.ledger.digest(), {})
        proof = []
        for r in range(3):
            cp = m.Checkpoint(3, digest, r, b"")
            sig = Keyring(IDS[NODES[r]], {}).sign(m.encode(cp))
            proof.append(m.replace(cp, signature=sig))
        self.stable = Stable(3, tuple(proof), replies_digest({}))

    def txs(self, height: int) -> list[m.Request]:
        return self.blocks[height]

    def receipt(self, reader: str = "client-1") -> dict[str, object]:
        role = self.ledger.genesis.parties[reader].role
        q, ans = answer(self.ledger, "trace", {"arg": epc(1)}, reader, role, self.txs)
        rec = build_receipt(self.ledger, "net", reader, q, ans, self.stable, self.txs)
        rec["attestations"] = [attest(Keyring(IDS["hospital-1"], {}), "net", reader, q, ans)]
        return rec

    def verify(self, data: bytes) -> dict[str, object]:
        ms = self.membership
        return verify_receipt(data, ms.public_keys(), ms.node_ids, ms.q, "net",
                              self.ledger.genesis.digest)


def test_a_receipt_verifies_and_names_what_it_proves() -> None:
    net = _Net()
    summary = net.verify(dump(net.receipt()))
    assert summary["replicas"] == 3 and summary["entries"] == 1
    assert summary["attested_by"] == ["hospital-1"]


def test_any_altered_byte_is_refused() -> None:
    net = _Net()
    data = dump(net.receipt())
    text = data.decode()
    positions = {
        text.index('"signature": "') + 20,        # a checkpoint or tx signature
        text.index('"path": [') + 14,             # a Merkle path hash (or the list)
        text.index('"op": "') + 12,               # the transaction bytes
        text.index('"acc": "') + 9,               # a digest part
        text.index('"before": "') + 12,           # the chain head before the blocks
        text.index('"custodian": "') + 15,        # the answer
        text.index('"replica": ') + 11,           # who signed
        len(data) - 1,                            # the final newline
        0,
    }
    positions.update(range(7, len(data), max(1, len(data) // 60)))
    for pos in sorted(positions):
        for flip in (0x01, 0x20):
            bad = bytearray(data)
            bad[pos] ^= flip
            with pytest.raises(ReceiptError):
                net.verify(bytes(bad))


def test_a_receipt_needs_a_quorum_of_checkpoint_signatures() -> None:
    net = _Net()
    rec = net.receipt()
    rec["checkpoint"]["signatures"] = rec["checkpoint"]["signatures"][:2]  # type: ignore[index]
    with pytest.raises(ReceiptError) as exc:
        net.verify(dump(rec))
    assert exc.value.check == "checkpoint-signatures"


def test_an_answer_beyond_the_checkpoint_waits() -> None:
    net = _Net()
    net.stable = dataclasses.replace(net.stable, seq=0)
    with pytest.raises(ReadRefused) as exc:
        net.receipt()
    assert exc.value.status == 503


def test_reads_are_signed_fresh_and_role_checked() -> None:
    keys = Keyring(IDS["hospital-1"], _membership().public_keys())
    headers = sign_read(IDS["client-2"], "GET", "/query/trace?arg=x", now_s=1000.0)
    assert check_read(keys, headers, "GET", "/query/trace?arg=x", now_s=1010.0) == "client-2"
    for target, now in (("/query/trace?arg=y", 1000.0), ("/query/trace?arg=x", 1100.0)):
        with pytest.raises(ReadRefused) as exc:
            check_read(keys, headers, "GET", target, now_s=now)
        assert exc.value.status == 401
    with pytest.raises(ReadRefused) as exc:
        check_read(keys, {}, "GET", "/ledger")
    assert exc.value.status == 401
    net = _Net()
    with pytest.raises(ReadRefused) as exc:  # a patient may not trace units
        answer(net.ledger, "trace", {"arg": epc(1)}, "client-2", "patient", net.txs)
    assert exc.value.status == 403
    with pytest.raises(ReadRefused) as exc:  # nor read someone else's access log
        answer(net.ledger, "access-log", {"arg": "pp:0"}, "client-2", "patient", net.txs)
    assert exc.value.status == 403
