"""`medbft tx`: submit one signed ledger transaction to a running network.

Why this exists: operators and teachers need to put one transaction on a real network by
hand (the load generator submits thousands). Prints the outcome (`ok`, `rejected:<rule>`, an
access decision), the sequence number and the block; exit 0 when the transaction was
ordered and did not fail, 1 when rejected (at admission or by a rule).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.errors import UsageError
from medbft.real.reads import ReadFailed, submit_tx
from node.netdir import NetworkDir, NetworkError

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("tx", help="submit one signed transaction to a real network")
    p.add_argument("--network", required=True, type=Path, help="network directory")
    p.add_argument("--as", dest="client", required=True, help="client identity to sign as")
    p.add_argument("--node", help="node to submit to (default: the first that answers)")
    p.add_argument("--wait", action="store_true", help="wait until executed; print outcome, "
                   "seq and block")
    p.add_argument("kind", help="transaction kind, e.g. GTIN_REGISTER")
    p.add_argument("fields", help="the transaction's fields as a JSON object")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    try:
        fields = json.loads(args.fields)
    except ValueError as exc:
        raise UsageError(f"fields must be a JSON object: {exc}") from None
    if not isinstance(fields, dict) or "kind" in fields:
        raise UsageError("fields must be a JSON object without 'kind'")
    try:
        net = NetworkDir.load(args.network)
        out = asyncio.run(submit_tx(net, args.client, args.kind, fields, args.wait, args.node))
    except NetworkError as exc:
        raise UsageError(str(exc)) from None
    except ReadFailed as exc:
        err.print(f"error: {exc}", markup=False)
        return 1
    status = out["http_status"]
    if status == 422:
        console.print(f"rejected:{out['rule']} seq=- block=- (refused at admission by "
                      f"{out['node']})", markup=False)
        return 1
    if status == 202:
        console.print(f"submitted {out['key']} to {out['node']}", markup=False)
        return 0
    if status != 200:
        err.print(f"error: {out['node']} answered {status}: {out.get('error')}", markup=False)
        return 1
    result = str(out["result"])
    block = out.get("block")
    console.print(f"{result} seq={out['seq'] if out['seq'] is not None else '-'} "
                  f"block={block if block is not None else '-'}", markup=False)
    return 1 if result.startswith(("rejected", "deny")) else 0
