"""`medbft verify-receipt`: check a read receipt offline, from the network directory's public
keys alone (no node running).

Why this exists: a receipt is only worth something if whoever holds it can check it without
trusting the node that gave it. Exit 0 and `valid`; exit 1 naming the failing check
(node.ledger.receipts); exit 2 for a missing file or network directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.errors import UsageError
from medbft.real.reads import ReceiptError, check_receipt
from node.netdir import NetworkDir, NetworkError

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("verify-receipt", help="check a read receipt offline")
    p.add_argument("file", type=Path, help="the receipt (from `medbft query --receipt`)")
    p.add_argument("--network", required=True, type=Path, help="network directory")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    try:
        net = NetworkDir.load(args.network)
    except NetworkError as exc:
        raise UsageError(str(exc)) from None
    data = args.file.read_bytes()
    try:
        summary = check_receipt(data, net)
    except ReceiptError as exc:
        console.print(f"invalid: {exc.check}: {exc}", markup=False)
        return 1
    console.print(f"valid: checkpoint seq {summary['checkpoint_seq']} signed by "
                  f"{summary['replicas']} replicas; {summary['entries']} transactions in "
                  f"{summary['blocks']} blocks; answer signed by "
                  f"{', '.join(summary['attested_by'])}", markup=False)
    return 0
