"""A ledger client for people and scripts: submit one signed transaction, ask K replicas a
query and keep its receipt, check a receipt offline.

Why this exists: `medbft tx`, `medbft query` and `medbft verify-receipt` (medbft/cli) share
it, and tests call it directly. A read asks `replicas` nodes (default f+1) and accepts the
answer only if they all give the same one; the receipt then carries every one of their
signatures over it (node.ledger.receipts), so at least one honest replica vouches for it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from medbft.real.load import signed_get
from node import messages as m
from node.apps import make_state_machine
from node.crypto import Keyring
from node.ledger.receipts import ReceiptError, dump, verify_receipt
from node.ledger.txs import canonical
from node.netdir import NetworkDir
from node.tls import api_session

__all__ = ["ReadFailed", "check_receipt", "query", "submit_tx"]

TIMEOUT = aiohttp.ClientTimeout(total=40)


class ReadFailed(Exception):
    """A read or submission that gave no usable answer (the reason is the message)."""


async def submit_tx(net: NetworkDir, client: str, kind: str, fields: dict[str, Any],
                    wait: bool, node: str | None = None) -> dict[str, Any]:
    """Sign and POST one transaction; the node's JSON answer plus `http_status`. With `wait`
    the answer has the outcome (`result`), `seq` and `block`."""
    keys = Keyring(net.identity(client), {})
    op = canonical({"kind": kind, **fields}).encode()
    unsigned = m.Request(op, time.time_ns(), client, 0, b"")
    req = m.Request(op, unsigned.timestamp, client, 0, keys.sign(m.encode(unsigned)))
    body = m.encode(m.Envelope(client, m.encode(req), b""))
    targets = [node] if node else list(net.membership.node_ids)
    last = "no node answered"
    async with api_session(net, client, timeout=TIMEOUT) as session:
        for target in targets:
            url = f"{net.url(target)}/tx" + ("?wait=30" if wait else "")
            try:
                async with session.post(url, data=body, headers={
                        "Content-Type": "application/octet-stream"}) as resp:
                    out = await resp.json()
                    out["http_status"] = resp.status
                    out["node"] = target
                    return dict(out)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last = f"{target}: {exc!r}"
    raise ReadFailed(last)


async def _ask(session: aiohttp.ClientSession, net: NetworkDir, node: str, path: str,
               reader: Any) -> tuple[int, dict[str, Any]]:
    try:
        async with signed_get(session, f"{net.url(node)}{path}", reader) as resp:
            return resp.status, dict(await resp.json())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return 0, {"error": repr(exc)}


async def query(net: NetworkDir, reader_id: str, kind: str, args: dict[str, str],
                replicas: int | None = None, wait_s: float = 10.0,
                attempts: int = 5) -> dict[str, Any]:
    """Ask `replicas` nodes (default f+1) the query; return the receipt once they all give one
    answer (ReadFailed otherwise), with each one's attestation."""
    k = replicas or net.membership.f + 1
    nodes = list(net.membership.node_ids)
    if not 1 <= k <= len(nodes):
        raise ReadFailed(f"--replicas must be between 1 and {len(nodes)}")
    reader = net.identity(reader_id)
    path = f"/query/{kind}?" + urlencode({**args, "wait": f"{wait_s:g}"})
    problems: list[str] = []
    async with api_session(net, reader_id, timeout=TIMEOUT) as session:
        for _ in range(attempts):
            rows = await asyncio.gather(*(_ask(session, net, n, path, reader) for n in nodes))
            good = [(n, body["receipt"]) for n, (status, body) in zip(nodes, rows, strict=True)
                    if status == 200 and "receipt" in body]
            refused = [(n, s, b.get("error")) for n, (s, b) in zip(nodes, rows, strict=True)
                       if s in (400, 401, 403, 404)]
            if refused and len(refused) > len(nodes) - k:
                n, status, error = refused[0]
                raise ReadFailed(f"{n} refused the read ({status}): {error}")
            groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
            for n, rec in good:
                key = json.dumps([rec["query"], rec["answer"]], sort_keys=True)
                groups.setdefault(key, []).append((n, rec))
            best = max(groups.values(), key=len, default=[])
            if len(best) >= k:
                chosen = best[:k]
                receipt = dict(chosen[0][1])
                receipt["attestations"] = [a for _, r in chosen for a in r["attestations"]]
                return receipt
            problems = [f"{n}: {s} {b.get('error', '')}" for n, (s, b) in
                        zip(nodes, rows, strict=True) if s != 200]
            if len(groups) > 1:
                problems.append(f"{len(groups)} different answers")
            await asyncio.sleep(0.5)
    raise ReadFailed(f"no {k} replicas gave one answer: " + "; ".join(problems))


def check_receipt(data: bytes, net: NetworkDir) -> dict[str, Any]:
    """Verify a receipt file's bytes against the network directory's public keys (offline);
    ReceiptError names the failing check."""
    sm = make_state_machine("ledger", net.membership)
    genesis = sm.genesis  # type: ignore[attr-defined]
    ms = net.membership
    return verify_receipt(data, ms.public_keys(), tuple(ms.node_ids), ms.q, net.network_id,
                          genesis.digest)


def write_receipt(path: Path, receipt: dict[str, Any]) -> None:
    path.write_bytes(dump(receipt))


__all__ += ["ReceiptError", "write_receipt"]
