"""Read receipts: the proof that an answer's transactions are in the agreed ledger, and its
offline check.

Why this exists: a reader who asks one node can be lied to by that node. A receipt lets the
reader (or anyone it hands the receipt to) check, with the network's public keys only and no
node running, that every transaction the answer rests on was committed under state that 2f+1
replicas signed. The proof chain, from the signatures down:

1. `checkpoint`: q = 2f+1 CHECKPOINT signatures by distinct replicas on one (seq, digest)
   (node.pbft.checkpoint: at least f+1 of the signers are honest, so the state is agreed).
2. The digest is recomputed: checkpoint_digest = H("medbft-checkpoint/1" || ledger digest ||
   reply-cache digest), ledger digest = H("medbft-ledger/1" || state digest || stats digest),
   state digest = H("medbft-ledger-state/1" || genesis digest || table multiset hash ||
   events head || audit head || blocks head) (node.ledger.ledger / state). The genesis digest
   comes from the network directory; the other parts are opaque 32/64-byte values supplied in
   the receipt (`parts`), except the blocks head, which is recomputed in step 3.
3. `chain`: the blocks log is a hash chain (head = H(previous head || canonical header
   entry)). The receipt supplies the head before the first block it needs (`before`) and every
   header from there to the last block at the checkpoint; rehashing them must give the
   blocks head of step 2. Each header's own hash is checked, and each links to the previous
   header's hash. So the headers are the chain's last blocks, in order (a forged sequence
   would need a SHA-256 collision).
4. `entries`: for each (height, index) the answer names, the signed transaction (its client
   signature is checked too) and its Merkle path (RFC 6962 hashing, odd node carried up) from
   the leaf `tx_leaf` to the block header's root, at the position the index gives.

What is *not* proven by 1-4: the answer's derived fields (a custodian, a count, that nothing
was left out). Those are signed by the answering node(s) (`attestations`, over network id,
reader, query and answer); a read of K >= f+1 replicas carries K attestations of one answer,
so at least one honest replica gave it. The receipt file is canonical JSON and must be byte
for byte what `dump` writes, so any altered byte is either a changed value (caught by a check
above) or a non-canonical file (refused).

Bound: the chain holds every header from the oldest block an answer names up to the
checkpoint, so a receipt grows with how far back the answer reaches; builders refuse more than
`MAX_CHAIN_HEADERS` (an answer about older entries needs a checkpoint-anchored header index:
future work). Must not know: HTTP, processes, files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from node import messages as m
from node.crypto import Identity, Keyring
from node.ledger.ledger import tx_leaf
from node.ledger.state import _ENC

__all__ = [
    "FORMAT",
    "MAX_CHAIN_HEADERS",
    "ReceiptError",
    "answer_payload",
    "checkpoint_digest_of",
    "dump",
    "merkle_path",
    "merkle_verify",
    "refs",
    "verify_receipt",
]

FORMAT = "medbft-receipt/1"
MAX_CHAIN_HEADERS = 5000
_HEX = re.compile(r"[0-9a-f]*")


class ReceiptError(ValueError):
    """A receipt that does not verify; `check` names the failing check."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check


def dump(receipt: dict[str, Any]) -> bytes:
    """The canonical bytes of a receipt (sorted keys, one-space indent, ASCII, final newline)."""
    return (json.dumps(receipt, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()


def answer_payload(network_id: str, reader: str, query: dict[str, Any], answer: Any) -> bytes:
    """What a node signs to vouch for an answer."""
    return b"medbft-answer/1" + _ENC.encode(
        {"network_id": network_id, "reader": reader, "query": query, "answer": answer}).encode()


# -- Merkle paths -----------------------------------------------------------------------------


def _inner(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_path(leaves: list[bytes], index: int) -> list[bytes]:
    """The sibling hashes from leaf `index` up to `node.ledger.ledger.merkle_root(leaves)`."""
    path: list[bytes] = []
    level = list(leaves)
    while len(level) > 1:
        if index % 2:
            path.append(level[index - 1])
        elif index + 1 < len(level):
            path.append(level[index + 1])
        nxt = [_inner(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, index = nxt, index // 2
    return path


def merkle_verify(leaf: bytes, index: int, count: int, path: list[bytes], root: bytes) -> bool:
    """Does `path` lead from `leaf` at `index` of `count` leaves to `root`?"""
    if not 0 <= index < count:
        return False
    h, k = leaf, 0
    while count > 1:
        if index % 2 or index + 1 < count:
            if k >= len(path):
                return False
            h = _inner(path[k], h) if index % 2 else _inner(h, path[k])
            k += 1
        index, count = index // 2, (count + 1) // 2
    return k == len(path) and h == root


# -- digests ----------------------------------------------------------------------------------


def checkpoint_digest_of(genesis_digest: bytes, acc: bytes, events_head: bytes,
                         audit_head: bytes, blocks_head: bytes, stats: bytes,
                         replies: bytes) -> bytes:
    """The CHECKPOINT digest of a ledger state from its parts (the formulas of the module doc:
    the same as node.pbft.checkpoint.checkpoint_digest over Ledger.digest)."""
    state = hashlib.sha256(b"medbft-ledger-state/1" + genesis_digest + acc + events_head
                           + audit_head + blocks_head).digest()
    ledger = hashlib.sha256(b"medbft-ledger/1" + state + stats).digest()
    return hashlib.sha256(b"medbft-checkpoint/1" + ledger + replies).digest()


def refs(answer: Any) -> tuple[set[int], set[tuple[int, int]]]:
    """(heights, (height, index) pairs) an answer names: every `*height` field, and every
    object with both `height` and `index`."""
    heights: set[int] = set()
    pairs: set[tuple[int, int]] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k.endswith("height") and type(x) is int:
                    heights.add(x)
            if type(v.get("height")) is int and type(v.get("index")) is int:
                pairs.add((v["height"], v["index"]))
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(answer)
    return heights, pairs


# -- checking ---------------------------------------------------------------------------------


def _need(ok: bool, check: str, detail: str) -> None:
    if not ok:
        raise ReceiptError(check, detail)


def _keys(obj: Any, keys: Iterable[str], where: str) -> dict[str, Any]:
    _need(isinstance(obj, dict) and set(obj) == set(keys), "format",
          f"{where} must have exactly the fields {', '.join(sorted(keys))}")
    return obj  # type: ignore[no-any-return]


def _hex(value: Any, where: str, size: int | None = None) -> bytes:
    _need(isinstance(value, str) and _HEX.fullmatch(value) is not None and len(value) % 2 == 0,
          "format", f"{where} must be lowercase hex")
    data = bytes.fromhex(value)
    _need(size is None or len(data) == size, "format", f"{where} must be {size} bytes")
    return data


def _int(value: Any, where: str) -> int:
    _need(type(value) is int and value >= 0, "format", f"{where} must be a whole number")
    return int(value)


def verify_receipt(data: bytes, public_keys: dict[str, bytes], node_ids: tuple[str, ...],
                   q: int, network_id: str, genesis_digest: bytes) -> dict[str, Any]:
    """Check a receipt file's bytes against a network's public keys (`node_ids` in replica
    order, quorum `q`) and ledger genesis digest. Returns a summary; raises ReceiptError
    naming the failing check."""
    try:
        receipt = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ReceiptError("format", f"not JSON: {exc}") from None
    _need(dump(receipt) == data, "canonical", "the file is not the canonical form of a receipt "
          "(altered or reformatted)")
    r = _keys(receipt, ("format", "network_id", "reader", "query", "answer", "entries", "chain",
                        "checkpoint", "attestations"), "receipt")
    _need(r["format"] == FORMAT, "format", f"unknown receipt format {r['format']!r}")
    _need(r["network_id"] == network_id, "network", "the receipt is for another network")
    keys = Keyring(Identity.from_seed("receipt-verifier", b"verifier"), public_keys)

    # attestations: node signatures over the answer
    atts = r["attestations"]
    _need(isinstance(atts, list) and len(atts) >= 1, "attestation", "no node signed the answer")
    payload = answer_payload(network_id, r["reader"], r["query"], r["answer"])
    signers = set()
    for i, att in enumerate(atts):
        att = _keys(att, ("node", "signature"), f"attestations[{i}]")
        sig = _hex(att["signature"], f"attestations[{i}].signature", 64)
        _need(att["node"] in node_ids and att["node"] not in signers, "attestation",
              f"attestations[{i}]: not a distinct node of the network")
        _need(keys.verify(att["node"], payload, sig), "attestation",
              f"{att['node']}'s signature over the answer does not verify")
        signers.add(att["node"])

    # 1. the checkpoint certificate
    cp = _keys(r["checkpoint"], ("seq", "digest", "parts", "signatures"), "checkpoint")
    seq = _int(cp["seq"], "checkpoint.seq")
    digest = _hex(cp["digest"], "checkpoint.digest", 32)
    sigs = cp["signatures"]
    _need(isinstance(sigs, list), "format", "checkpoint.signatures must be a list")
    replicas: set[int] = set()
    for i, s in enumerate(sigs):
        s = _keys(s, ("replica", "signature"), f"checkpoint.signatures[{i}]")
        rep = _int(s["replica"], f"checkpoint.signatures[{i}].replica")
        _need(rep < len(node_ids) and rep not in replicas, "checkpoint-signatures",
              f"signature {i}: replica {rep} is not a distinct replica")
        unsigned = m.encode(m.Checkpoint(seq, digest, rep, b""))
        _need(keys.verify(node_ids[rep], unsigned,
                          _hex(s["signature"], "checkpoint signature", 64)),
              "checkpoint-signatures", f"replica {node_ids[rep]}'s CHECKPOINT signature "
              f"does not verify")
        replicas.add(rep)
    _need(len(replicas) >= q, "checkpoint-signatures",
          f"{len(replicas)} replica signatures; a certificate needs {q} (2f+1)")

    # 3. the header chain to the blocks head
    chain = _keys(r["chain"], ("before", "headers"), "chain")
    head = _hex(chain["before"], "chain.before", 32)
    headers = chain["headers"]
    _need(isinstance(headers, list), "format", "chain.headers must be a list")
    by_height: dict[int, list[Any]] = {}
    prev_hash: str | None = None
    for i, h in enumerate(headers):
        _need(isinstance(h, list) and len(h) == 8, "format", f"chain.headers[{i}] malformed")
        height, bseq, _ts = (_int(h[k], f"chain.headers[{i}][{k}]") for k in range(3))
        _hex(h[3], "header prev", 32), _hex(h[4], "header root", 32)
        _hex(h[5], "header state digest", 32), _int(h[6], "header tx count")
        _hex(h[7], "header hash", 32)
        _need(hashlib.sha256(_ENC.encode(h[:-1]).encode()).hexdigest() == h[7], "block-hash",
              f"block {height}: its hash does not match its header")
        _need(prev_hash is None or (h[3] == prev_hash and height == headers[i - 1][0] + 1),
              "block-chain", f"block {height} does not link to the block before it")
        _need(bseq <= seq, "block-chain", f"block {height} (seq {bseq}) is after the "
              f"checkpoint at seq {seq}")
        head = hashlib.sha256(head + _ENC.encode(h).encode()).digest()
        by_height[height] = h
        prev_hash = h[7]

    # 2. the checkpoint digest from its parts and the recomputed blocks head
    parts = _keys(cp["parts"], ("acc", "events_head", "audit_head", "stats", "replies"),
                  "checkpoint.parts")
    recomputed = checkpoint_digest_of(
        genesis_digest, _hex(parts["acc"], "parts.acc", 64),
        _hex(parts["events_head"], "parts.events_head", 32),
        _hex(parts["audit_head"], "parts.audit_head", 32), head,
        _hex(parts["stats"], "parts.stats", 32), _hex(parts["replies"], "parts.replies", 32))
    _need(recomputed == digest, "checkpoint-digest", "the state digest recomputed from the "
          "chain head and parts is not the digest the replicas signed")

    # 4. each transaction's Merkle path
    entries = r["entries"]
    _need(isinstance(entries, list), "format", "entries must be a list")
    proven: set[tuple[int, int]] = set()
    for i, e in enumerate(entries):
        e = _keys(e, ("height", "index", "tx", "path"), f"entries[{i}]")
        height, index = _int(e["height"], "entry height"), _int(e["index"], "entry index")
        tx = _keys(e["tx"], ("client", "session", "timestamp", "op", "signature"),
                   f"entries[{i}].tx")
        _need(isinstance(tx["client"], str), "format", "tx.client must be a string")
        req = m.Request(_hex(tx["op"], "tx.op"), _int(tx["timestamp"], "tx.timestamp"),
                        tx["client"], _int(tx["session"], "tx.session"),
                        _hex(tx["signature"], "tx.signature", 64))
        _need(keys.verify(req.client, req.unsigned(), req.signature), "tx-signature",
              f"entry {height}/{index}: the client's signature does not verify")
        header = by_height.get(height)
        _need(header is not None, "merkle-path", f"entry {height}/{index}: block {height} is "
              f"not in the receipt's chain")
        assert header is not None
        path = e["path"]
        _need(isinstance(path, list), "format", "path must be a list")
        _need(merkle_verify(tx_leaf(req), index, header[6],
                            [_hex(p, "path hash", 32) for p in path], bytes.fromhex(header[4])),
              "merkle-path", f"entry {height}/{index}: the Merkle path does not lead to "
              f"block {height}'s root")
        proven.add((height, index))

    heights, pairs = refs(r["answer"])
    _need(pairs <= proven, "coverage", f"the answer names transactions without a proof: "
          f"{sorted(pairs - proven)[:5]}")
    _need(heights <= set(by_height), "coverage", f"the answer names blocks outside the "
          f"receipt's chain: {sorted(heights - set(by_height))[:5]}")
    return {"checkpoint_seq": seq, "replicas": len(replicas), "entries": len(entries),
            "blocks": len(headers), "attested_by": sorted(signers)}
