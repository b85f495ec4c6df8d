"""Authenticated reads: who is asking (a signed request), whether their role may read what
they ask (node.ledger.roles.READS), the ledger queries a reader may ask, and the receipts
that come with the answers (node.ledger.receipts).

Why this exists: the ledger holds who looked at whose data, consents and custody chains;
a node must not hand them to anyone who can reach its port. A reader signs (method, request
target, time, its id) with its ECDSA key (node.crypto), sent in three headers; the node
checks the signature against the genesis membership, that the time is within
`MAX_SKEW_S` of its own clock (wall clock: real mode only), and the reader's role (a client's
ledger role from the genesis; a node's identity reads as `node`). A signed read can be
replayed within the skew window by someone who captured it; it reveals nothing new to them
only if the transport is encrypted (TLS: see docs/security.md).

Must not know: aiohttp (node/api.py maps `ReadRefused` to HTTP), how receipts are checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node import messages as m
from node.crypto import Identity, Keyring
from node.ledger import queries
from node.ledger.ledger import Ledger, tx_leaf
from node.ledger.receipts import FORMAT, MAX_CHAIN_HEADERS, answer_payload, merkle_path, refs
from node.ledger.roles import may_read
from node.membership import Membership

__all__ = ["H_PARTY", "H_SIGNATURE", "H_TIME", "MAX_SKEW_S", "QUERY_KINDS", "ReadRefused",
           "Stable", "answer", "build_receipt", "check_read", "read_payload", "reader_role",
           "sign_read"]

H_PARTY = "X-Medbft-Party"
H_TIME = "X-Medbft-Time"
H_SIGNATURE = "X-Medbft-Signature"
MAX_SKEW_S = 60.0
#: Query kinds and their arguments (`GET /query/{kind}?arg=...`, or `from`/`to` for blocks).
QUERY_KINDS = ("trace", "recall-exposure", "access-log", "consents", "blocks")
MAX_BLOCKS_READ = 100


class ReadRefused(Exception):
    """A read refused: 401 (not authenticated), 403 (not permitted), 404, 400, 503."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def read_payload(method: str, target: str, time_ms: int, party: str) -> bytes:
    """The bytes a reader signs: method, request target (path and query, as sent), time in
    Unix milliseconds, its id."""
    return f"medbft-read/1\n{method.upper()}\n{target}\n{time_ms}\n{party}".encode()


def sign_read(identity: Identity, method: str, target: str,
              now_s: float | None = None) -> dict[str, str]:
    """Headers authenticating one read of `target` (path and query string) by `identity`."""
    time_ms = int((time.time() if now_s is None else now_s) * 1000)
    keys = Keyring(identity, {})
    sig = keys.sign(read_payload(method, target, time_ms, identity.id))
    return {H_PARTY: identity.id, H_TIME: str(time_ms), H_SIGNATURE: sig.hex()}


def check_read(keys: Keyring, headers: Any, method: str, target: str,
               now_s: float | None = None) -> str:
    """The authenticated reader of a request with these headers, or ReadRefused(401)."""
    party, stamp, sig = (headers.get(h) for h in (H_PARTY, H_TIME, H_SIGNATURE))
    if not party or not stamp or not sig:
        raise ReadRefused(401, f"unsigned read: send {H_PARTY}, {H_TIME} and {H_SIGNATURE}")
    try:
        time_ms, signature = int(stamp), bytes.fromhex(sig)
    except ValueError:
        raise ReadRefused(401, "malformed read signature headers") from None
    now = time.time() if now_s is None else now_s
    if abs(now - time_ms / 1000) > MAX_SKEW_S:
        raise ReadRefused(401, f"read signed more than {MAX_SKEW_S:g} s from this node's clock")
    if not keys.knows(party) or not keys.verify(party, read_payload(method, target, time_ms,
                                                                    party), signature):
        raise ReadRefused(401, "bad read signature or unknown party")
    return str(party)


def reader_role(membership: Membership, sm: object, party: str) -> str:
    """`node` for a replica's identity; a client's ledger role (from the genesis); on a
    network without a ledger, `client`."""
    if party in membership.node_ids:
        return "node"
    genesis = getattr(sm, "genesis", None)
    if genesis is None:
        return "client"
    p = genesis.parties.get(party)
    return p.role if p is not None else "unknown"


def permit(role: str, what: str) -> None:
    """ReadRefused(403) unless `role` may read `what` (a `client` of a key-value network
    may read everything but a ledger has nothing for it)."""
    if role == "client" or may_read(role, what):
        return
    raise ReadRefused(403, f"role {role!r} may not read {what}")


# -- answering ---------------------------------------------------------------------------------


def _own(ledger: Ledger, reader: str, role: str, patient: str) -> None:
    """A patient reads only about themselves (their id or one of their pseudonyms)."""
    if role != "patient":
        return
    if patient != reader and patient not in ledger.genesis.pseudonyms_of(reader).values():
        raise ReadRefused(403, "a patient may read only about themselves")


def answer(ledger: Ledger, kind: str, args: dict[str, str], reader: str, role: str,
           block_txs: Callable[[int], list[m.Request]]) -> tuple[dict[str, Any], Any]:
    """(query, answer) of a permitted read (ReadRefused otherwise)."""
    if kind not in QUERY_KINDS:
        raise ReadRefused(404, f"unknown query {kind!r}; known: {', '.join(QUERY_KINDS)}")
    permit(role, kind)
    if kind == "blocks":
        try:
            lo, hi = int(args.get("from", "")), int(args.get("to", ""))
        except ValueError:
            raise ReadRefused(400, "blocks needs whole numbers from and to") from None
        top = len(ledger.state.blocks.entries)
        if not 1 <= lo <= hi or hi - lo + 1 > MAX_BLOCKS_READ:
            raise ReadRefused(400, f"blocks: need 1 <= from <= to, at most {MAX_BLOCKS_READ}")
        if hi > top:
            raise ReadRefused(404, f"the ledger has {top} blocks")
        out = []
        for h in range(lo, hi + 1):
            header = ledger.state.blocks.entries[h - 1]
            txs = block_txs(h)
            out.append({"height": h, "seq": header[1], "hash": header[-1], "transactions": [
                {"height": h, "index": i, "client": q.client, "op": _text(q.op)}
                for i, q in enumerate(txs)]})
        return {"kind": kind, "from": lo, "to": hi}, out
    arg = args.get("arg", "")
    if not arg:
        raise ReadRefused(400, f"{kind} needs arg")
    query = {"kind": kind, "arg": arg}
    if kind == "trace":
        return query, queries.trace(ledger, arg)
    if kind == "recall-exposure":
        return query, queries.recall_exposure(ledger, arg)
    _own(ledger, reader, role, arg)
    if kind == "access-log":
        return query, queries.access_log(ledger, arg)
    return query, queries.active_consents(ledger, arg)


def _text(op: bytes) -> str:
    try:
        return op.decode()
    except UnicodeDecodeError:
        return "hex:" + op.hex()


def executed_requests(ledger: Ledger, height: int, batch: m.Batch) -> list[m.Request]:
    """The requests block `height` executed, out of its committed batch: all of them, or
    without repeats of an earlier request (what the replica skipped as already executed);
    checked against the block's Merkle root. ReadRefused(503) if neither matches."""
    from node.ledger.ledger import merkle_root

    header = ledger.state.blocks.entries[height - 1]
    seen: set[tuple[str, int]] = set()
    unique = []
    for q in batch.requests:
        if (q.client, q.session) not in seen:
            unique.append(q)
        seen.add((q.client, q.session))
    for reqs in (list(batch.requests), unique):
        if len(reqs) == header[6] and merkle_root([tx_leaf(q) for q in reqs]).hex() == header[4]:
            return reqs
    raise ReadRefused(503, f"cannot rebuild block {height}'s transactions from its batch")


@dataclass(frozen=True)
class Stable:
    """The stable checkpoint a receipt rests on: its seq, the q signed CHECKPOINTs, and the
    reply cache digest at it."""

    seq: int
    proof: tuple[m.Checkpoint, ...]
    replies_digest: bytes


def build_receipt(ledger: Ledger, network_id: str, reader: str, query: dict[str, Any],
                  ans: Any, stable: Stable,
                  block_txs: Callable[[int], list[m.Request]]) -> dict[str, Any]:
    """A receipt (node.ledger.receipts) for `ans`, without attestations. ReadRefused(503)
    when the stable checkpoint does not cover what the answer names yet (retry later)."""
    parts = ledger.proof_parts.get(stable.seq)
    if stable.seq == 0 or not stable.proof or parts is None:
        raise ReadRefused(503, "no stable checkpoint with its state held here yet")
    acc, events_head, audit_head, stats, n_blocks = parts
    heights, pairs = refs(ans)
    needed = heights | {h for h, _ in pairs}
    if needed and max(needed) > n_blocks:
        raise ReadRefused(503, f"block {max(needed)} is not yet covered by a stable checkpoint "
                               f"(seq {stable.seq} covers {n_blocks} blocks); retry")
    first = min(needed) if needed else n_blocks + 1
    if n_blocks - first + 1 > MAX_CHAIN_HEADERS:
        raise ReadRefused(413, f"the answer reaches {n_blocks - first + 1} blocks below the "
                               f"checkpoint; receipts carry at most {MAX_CHAIN_HEADERS}")
    chain = ledger.state.blocks
    before = chain.recompute(first - 1)
    headers = [list(e) for e in chain.entries[first - 1:n_blocks]]
    entries = []
    for h, i in sorted(pairs):
        reqs = block_txs(h)
        if not 0 <= i < len(reqs):
            raise ReadRefused(503, f"block {h} has no transaction {i}")
        q = reqs[i]
        path = merkle_path([tx_leaf(x) for x in reqs], i)
        entries.append({"height": h, "index": i, "path": [p.hex() for p in path], "tx": {
            "client": q.client, "session": q.session, "timestamp": q.timestamp,
            "op": q.op.hex(), "signature": q.signature.hex()}})
    return {
        "format": FORMAT, "network_id": network_id, "reader": reader, "query": query,
        "answer": ans, "entries": entries,
        "chain": {"before": before.hex(), "headers": headers},
        "checkpoint": {
            "seq": stable.seq, "digest": stable.proof[0].digest.hex(),
            "parts": {"acc": acc.hex(), "events_head": events_head.hex(),
                      "audit_head": audit_head.hex(), "stats": stats.hex(),
                      "replies": stable.replies_digest.hex()},
            "signatures": [{"replica": cp.replica, "signature": cp.signature.hex()}
                           for cp in stable.proof]},
        "attestations": [],
    }


def attest(keys: Keyring, network_id: str, reader: str, query: dict[str, Any],
           ans: Any) -> dict[str, str]:
    """This node's signature over an answer (receipts' `attestations`)."""
    return {"node": keys.id,
            "signature": keys.sign(answer_payload(network_id, reader, query, ans)).hex()}
