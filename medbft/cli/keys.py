"""`medbft keys init`: write a network directory (genesis membership, private keys, settings).

Why this exists: real nodes need their identities on disk before they can start; see
`node.netdir` for the layout. Protocol parameters are network-wide (every replica must agree
on them), so they are fixed here, with the scenario file's names: `--protocol
view_change_timeout=300ms --protocol batch_size=64`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.errors import UsageError
from node.config import SCENARIO_PARAMETERS
from node.ledger.roles import CLIENT_ROLES
from node.netdir import NetworkError, init_network, protocol_block

__all__ = ["PROTOCOL_HELP", "parse_nodes", "parse_protocol", "register"]

PROTOCOL_HELP = ("protocol parameter, e.g. batch_size=64 or view_change_timeout=300ms "
                 "(repeatable; names as in a scenario's protocol: block: "
                 f"{', '.join(p.name for p in SCENARIO_PARAMETERS)})")


def register(sub: Any) -> None:
    p = sub.add_parser("keys", help="generate a real network's keys and genesis")
    keys_sub = p.add_subparsers(dest="keys_command", required=True)
    init = keys_sub.add_parser("init", help="write a network directory")
    init.add_argument("--out", required=True, type=Path, help="directory to create")
    init.add_argument("--nodes", default="4", help="a count (roles rotate hospital, pharmacy, "
                      "regulator) or role counts, e.g. hospital:2,pharmacy:1,regulator:1")
    init.add_argument("--app", choices=("ledger", "kv"), default="ledger",
                      help="the replicated state machine: the healthcare ledger (default) or "
                           "the key-value placeholder protocol measurements use")
    init.add_argument("--clients", type=int, help="client identities (default: one per ledger "
                      "role, 7, with roles rotating through them; 4 for kv)")
    init.add_argument("--host", default="127.0.0.1", help="host in every node's address "
                      "(default 127.0.0.1; nodes listen there)")
    init.add_argument("--base-port", type=int, default=7100,
                      help="node i listens on base-port + i (default 7100)")
    init.add_argument("--broker", help="MQTT broker URL (default mqtts://127.0.0.1:8883; "
                      "with --insecure-plaintext mqtt://127.0.0.1:1883); DIR/mosquitto.conf "
                      "makes Mosquitto listen there")
    init.add_argument("--qos", type=int, default=0, choices=(0, 1, 2), help="MQTT QoS")
    init.add_argument("--protocol", action="append", default=[], metavar="KEY=VALUE",
                      help=PROTOCOL_HELP)
    init.add_argument("--force", action="store_true", help="overwrite an existing network")
    init.add_argument("--insecure-plaintext", action="store_true",
                      help="INSECURE, local experiments only: no TLS, no certificates, an "
                           "anonymous broker; anyone who can reach a port reads everything")
    init.set_defaults(handler=handle)


def parse_nodes(text: str) -> list[tuple[str, str]]:
    """`4` or `hospital:2,pharmacy:1,regulator:1` -> [(id, role)], in the order and with the ids
    a scenario's `nodes: 4` or `nodes: {hospital: 2, pharmacy: 1, regulator: 1}` gets (both
    go through `medbft.scenario.model.expand_nodes`), so a real network started from
    `keys init` has the same primary order as the simulated one. Raises UsageError."""
    from pydantic_core import PydanticCustomError

    from medbft.scenario.model import expand_nodes

    form: int | dict[str, int]
    text = text.strip()
    if text.isdigit():
        form = int(text)
        if form < 1:
            raise UsageError(f"--nodes: at least 1; got {form}")
    else:
        form = {}
        for part in text.split(","):
            role, _, count = part.strip().partition(":")
            role = role.strip()
            if role not in ("hospital", "pharmacy", "regulator") or not count.strip().isdigit():
                raise UsageError(f"--nodes: expected a count or role:count pairs such as "
                                 f"hospital:2,pharmacy:1; got {part!r}")
            if role in form:
                raise UsageError(f"--nodes: {role} given twice; give each role once, e.g. "
                                 f"hospital:2,pharmacy:1")
            form[role] = int(count)
    try:
        nodes = expand_nodes(form)
    except PydanticCustomError as exc:
        raise UsageError(f"--nodes: {exc.message()}") from None
    return [(node["id"], node["role"]) for node in nodes]


def parse_protocol(items: list[str]) -> dict[str, float]:
    """KEY=VALUE items -> the network.json protocol block (durations in ms). The keys are the
    names of `node.config.SCENARIO_PARAMETERS`; values are checked against their bounds.
    Raises UsageError."""
    from medbft.units import parse_duration_ns

    by_name = {p.name: p for p in SCENARIO_PARAMETERS}
    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("protocol.")
        if not sep:
            raise UsageError(f"--protocol: expected KEY=VALUE; got {item!r}")
        p = by_name.get(key)
        if p is None:
            raise UsageError(f"--protocol: unknown parameter {key!r}; known: "
                             f"{', '.join(by_name)}")
        try:
            if p.unit == "ns":
                parsed: Any = parse_duration_ns(value)
            elif p.unit == "bool":
                parsed = {"true": True, "false": False}.get(value.strip().lower(), value)
            else:
                parsed = int(value)
            p.check(parsed)
        except ValueError as exc:
            raise UsageError(f"--protocol {key}: {exc}") from exc
        values[p.attr] = parsed
    return protocol_block(values)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    nodes = parse_nodes(args.nodes)
    if not 1 <= args.base_port <= 65535 - len(nodes):
        raise UsageError(f"--base-port: expected 1..{65535 - len(nodes)}; got {args.base_port}")
    clients = args.clients if args.clients is not None else (
        len(CLIENT_ROLES) if args.app == "ledger" else 4)
    try:
        net = init_network(args.out, nodes, clients=clients, host=args.host,
                           base_port=args.base_port, protocol=parse_protocol(args.protocol),
                           state_machine=args.app, broker=args.broker, qos=args.qos,
                           force=args.force, insecure_plaintext=args.insecure_plaintext)
    except NetworkError as exc:
        raise UsageError(str(exc)) from exc
    console.print(f"wrote network {net.network_id} to {net.path}/: {len(nodes)} nodes "
                  f"(f={net.membership.f}), {clients} clients, state machine {args.app}",
                  markup=False)
    for member in net.membership.nodes:
        console.print(f"  {member.id:<14} {member.role:<10} {member.address}", markup=False)
    if args.app == "ledger":
        roles = ", ".join(f"{c.id} {c.role}" for c in net.membership.clients)
        console.print(f"  clients: {roles}", markup=False)
    if net.tls:
        console.print(f"  TLS: CA {net.ca_path}, certificates in {net.path / 'certs'}/; "
                      f"MQTT broker: mosquitto -c {net.path.resolve() / 'mosquitto.conf'}",
                      markup=False)
    else:
        err.print("WARNING: --insecure-plaintext: no TLS and an anonymous broker; anyone who "
                  "can reach a node's port or the broker reads and disrupts this network",
                  markup=False)
    console.print(f"start a node: medbft node --network {net.path} --id {nodes[0][0]} "
                  f"--transport http", markup=False)
    return 0
