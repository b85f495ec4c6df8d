"""`medbft query`: ask a real network a ledger query, signed as a client, and keep the
answer's receipt.

Why this exists: the answer alone is one node's word. This asks `--replicas` nodes (default
f+1), accepts the answer only if they all give it, and writes the receipt (node.ledger.receipts:
Merkle paths, block headers, a 2f+1 checkpoint certificate, the nodes' signatures) that
`medbft verify-receipt` checks offline. Exit 0 with the answer, 1 when no agreeing answer came.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.errors import UsageError
from medbft.real.reads import ReadFailed, query, write_receipt
from node.netdir import NetworkDir, NetworkError

__all__ = ["register"]

KINDS = ("trace", "recall-exposure", "access-log", "consents", "blocks")


def register(sub: Any) -> None:
    p = sub.add_parser("query", help="ask a real network a ledger query, with a receipt")
    p.add_argument("--network", required=True, type=Path, help="network directory")
    p.add_argument("--as", dest="client", required=True, help="identity to sign the read as")
    p.add_argument("--replicas", type=int, help="nodes that must give the same answer "
                   "(default f+1)")
    p.add_argument("--receipt", type=Path, help="write the receipt here (default: print the "
                   "whole receipt)")
    p.add_argument("--wait", type=float, default=10.0, help="seconds a node may wait for a "
                   "stable checkpoint to cover the answer (default 10)")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("args", nargs="+", help="EPC, LOT or PATIENT; FROM TO for blocks")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    if args.kind == "blocks":
        if len(args.args) != 2:
            raise UsageError("blocks needs FROM TO")
        qargs = {"from": args.args[0], "to": args.args[1]}
    else:
        if len(args.args) != 1:
            raise UsageError(f"{args.kind} needs one argument")
        qargs = {"arg": args.args[0]}
    try:
        net = NetworkDir.load(args.network)
        receipt = asyncio.run(query(net, args.client, args.kind, qargs, args.replicas,
                                    args.wait))
    except NetworkError as exc:
        raise UsageError(str(exc)) from None
    except ReadFailed as exc:
        err.print(f"error: {exc}", markup=False)
        return 1
    if args.receipt is None:
        console.print(json.dumps(receipt, indent=1, sort_keys=True), markup=False)
        return 0
    write_receipt(args.receipt, receipt)
    console.print(json.dumps(receipt["answer"], indent=1, sort_keys=True), markup=False)
    console.print(f"receipt: {args.receipt} (checkpoint seq {receipt['checkpoint']['seq']}, "
                  f"{len(receipt['entries'])} transactions, answer signed by "
                  f"{', '.join(a['node'] for a in receipt['attestations'])})", markup=False)
    return 0
