"""`medbft node`: run one replica as a real process (see `node.server`).

Why this exists: the command line of a deployed node. Everything is in `node.server`, which
also runs alone as `python -m node.server` (node/ is deployable without the simulator).
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from medbft.errors import UsageError
from node.netdir import NetworkError
from node.server import add_node_arguments, run_node
from node.storage import StorageError


def register(sub: Any) -> None:
    p = sub.add_parser("node", help="run one replica over HTTP or MQTT, with durable storage")
    add_node_arguments(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    try:
        return run_node(args)
    except (NetworkError, StorageError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
