"""The network directory: everything a node needs to join a network, on disk.

Why this exists: real nodes run as separate processes (and, in production, on separate
machines), so the genesis must be files rather than a seed. `medbft keys init` writes:

    DIR/genesis.json      the membership: node ids in primary order, roles, public keys,
                          addresses (host:port of each node's HTTP endpoint), clients
    DIR/network.json      network-wide settings every node must share: network id, state
                          machine, protocol parameters, MQTT broker and topic prefix, and
                          optionally `emulation: {link_delay_ms}` (an emulated WAN delay
                          for experiments on one machine)
    DIR/keys/<id>.pem     one private key per node and client (PKCS#8 PEM, mode 0600,
                          directory 0700); in production each machine gets only its own
    DIR/data/<id>.db      created by the node: its durable storage (node.storage)
    DIR/ca.pem, certs/, keys/<id>.tls-key.pem, keys/<id>.mqtt-password, mosquitto.*
                          transport security (node.tls): a network CA, each party's TLS
                          certificate and key, the broker's configuration and credentials;
                          absent when network.json says `"insecure_plaintext": true`

What it must not know: how nodes talk. It reads and writes files and validates them, raising
`NetworkError` with a one-line reason (never a traceback) for anything wrong.
"""

from __future__ import annotations

import json
import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from node.apps import DEFAULT_STATE_MACHINE, STATE_MACHINES
from node.config import SCENARIO_PARAMETERS, Config, Parameter
from node.crypto import Identity
from node.ledger.roles import rotating_client_roles
from node.membership import Member, Membership
from node.tls import (
    BROKER_ID,
    OPERATOR_ID,
    cert_path,
    client_context,
    key_path,
    password_path,
    server_context,
    write_broker_config,
    write_pki,
)

__all__ = [
    "DEFAULT_PROTOCOL",
    "NetworkDir",
    "NetworkError",
    "default_node_ids",
    "init_network",
    "network_key",
    "protocol_block",
]

ROLES = ("hospital", "pharmacy", "regulator")



def network_key(p: Parameter) -> str:
    """`p`'s key in network.json's protocol block: its scenario name, `_ms` added for a
    duration (`batch_timeout_ms`)."""
    return f"{p.name}_ms" if p.unit == "ns" else p.name


def _ms(ns: int) -> float:
    return ns // 1_000_000 if ns % 1_000_000 == 0 else ns / 1e6


def protocol_block(values: Mapping[str, Any]) -> dict[str, float]:
    """network.json's protocol block from values by attribute name, durations in ns (a
    scenario's parsed `protocol:` block, `ProtocolSpec.model_dump()`). Parameters absent from
    `values` are left out; names that are not network parameters are ignored."""
    return {network_key(p): _ms(values[p.attr]) if p.unit == "ns" else values[p.attr]
            for p in SCENARIO_PARAMETERS if p.attr in values}


def _from_block(p: Parameter, value: Any) -> Any:
    """A network.json value as `Config` takes it (durations ms -> ns); bounds are left to
    `Parameter.check`."""
    if p.unit == "bool":
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        unit = " of milliseconds" if p.unit == "ns" else ""
        raise ValueError(f"{network_key(p)} must be a number{unit}; got {value!r}")
    if p.unit == "ns":
        return round(float(value) * 1e6)
    return int(value) if isinstance(value, float) and value.is_integer() else value


DEFAULT_PROTOCOL: dict[str, float] = protocol_block(
    {p.attr: p.default for p in SCENARIO_PARAMETERS})
"""Protocol parameters (names as in a scenario's `protocol:` block, durations in ms), from
`node.config.SCENARIO_PARAMETERS`."""


class NetworkError(ValueError):
    """A network directory is missing, malformed or inconsistent."""


def default_node_ids(n: int) -> list[tuple[str, str]]:
    """(id, role) for n nodes, roles rotating hospital, pharmacy, regulator, as a scenario's
    `nodes: n` does: hospital-1, pharmacy-1, regulator-1, hospital-2, ..."""
    counts: dict[str, int] = {}
    out = []
    for i in range(n):
        role = ROLES[i % len(ROLES)]
        counts[role] = counts.get(role, 0) + 1
        out.append((f"{role}-{counts[role]}", role))
    return out


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def init_network(
    path: str | Path,
    nodes: list[tuple[str, str]],
    *,
    clients: int = 4,
    host: str = "127.0.0.1",
    base_port: int = 7100,
    ports: list[int] | None = None,
    protocol: dict[str, float] | None = None,
    state_machine: str = DEFAULT_STATE_MACHINE,
    broker: str | None = None,
    qos: int = 0,
    name: str = "medbft",
    link_delay_ms: float = 0.0,
    client_roles: dict[str, str] | None = None,
    force: bool = False,
    insecure_plaintext: bool = False,
) -> NetworkDir:
    """Generate fresh keys and write a network directory at `path`. Node i listens on
    `host:ports[i]` (default `base_port + i`). Client identities are `client_roles` (id ->
    ledger role, e.g. a scenario's population) or else `clients` of them: for the ledger,
    `client-1`.. with roles rotating through the ledger's client roles; for `kv`, plain
    `client`s. Raises NetworkError if `path` already holds a network (unless `force`) or the
    arguments are inconsistent.

    By default the network runs over TLS (node.tls): a CA, certificates and keys for every
    party (and the `operator` monitoring tools use), and a Mosquitto configuration for
    `broker` (default mqtts://127.0.0.1:8883). `insecure_plaintext` writes none of it: no
    TLS, an anonymous broker (default mqtt://127.0.0.1:1883); for local experiments only."""
    root = Path(path)
    broker = broker or ("mqtt://127.0.0.1:1883" if insecure_plaintext
                        else "mqtts://127.0.0.1:8883")
    broker_parts = urlsplit(broker if "://" in broker else f"mqtt://{broker}")
    if not insecure_plaintext and broker_parts.scheme not in ("mqtts", "ssl"):
        raise NetworkError(f"broker {broker} is not TLS: give an mqtts:// URL, or "
                           f"--insecure-plaintext for a local experiment")
    if (root / "genesis.json").exists() and not force:
        raise NetworkError(f"{root} already holds a network (genesis.json); use --force to "
                           f"overwrite it")
    if client_roles is None:
        client_roles = (rotating_client_roles(clients) if state_machine == "ledger"
                        else {f"client-{i}": "client" for i in range(1, clients + 1)})
    _check_init_args(nodes, len(client_roles), state_machine, qos, protocol)
    ports = ports or [base_port + i for i in range(len(nodes))]
    if len(ports) != len(nodes):
        raise NetworkError(f"{len(nodes)} nodes but {len(ports)} ports")
    keys = root / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    os.chmod(keys, 0o700)
    members: list[Member] = []
    client_members: list[Member] = []
    for (nid, role), port in zip(nodes, ports, strict=True):
        ident = Identity.generate(nid)
        _write_private(keys / f"{nid}.pem", ident.private_pem())
        members.append(Member(nid, role, ident.public_bytes, f"{host}:{port}"))
    for cid, role in client_roles.items():
        ident = Identity.generate(cid)
        _write_private(keys / f"{cid}.pem", ident.private_pem())
        client_members.append(Member(cid, role, ident.public_bytes))
    membership = Membership(tuple(members), tuple(client_members))
    network_id = os.urandom(6).hex()
    prefix = f"medbft/{network_id}"
    settings: dict[str, Any] = {
        "name": name,
        "network_id": network_id,
        "state_machine": state_machine,
        "protocol": {**DEFAULT_PROTOCOL, **(protocol or {})},
        "mqtt": {"broker": broker, "qos": qos, "topic_prefix": prefix},
    }
    if link_delay_ms:
        settings["emulation"] = {"link_delay_ms": link_delay_ms}
    if insecure_plaintext:
        settings["insecure_plaintext"] = True
    else:
        reserved = {OPERATOR_ID, BROKER_ID} & {m.id for m in (*members, *client_members)}
        if reserved:
            raise NetworkError(f"party id(s) {', '.join(sorted(reserved))} are reserved for "
                               f"certificates")
        hosts = {m.id: [m.address.rpartition(":")[0]] for m in members if m.address}
        broker_host = broker_parts.hostname or "127.0.0.1"
        write_pki(root, network_id, {**hosts, BROKER_ID: [broker_host]},
                  [*(c.id for c in client_members), OPERATOR_ID])
        write_broker_config(root, prefix, broker_host, broker_parts.port or 8883,
                            [m.id for m in members], [c.id for c in client_members])
    (root / "genesis.json").write_text(membership.to_json() + "\n")
    (root / "network.json").write_text(json.dumps(settings, indent=2) + "\n")
    return NetworkDir.load(root)


def _check_private(path: Path) -> None:
    _check_mode(path, stat.S_IMODE(path.stat().st_mode))


def _check_mode(path: Path, mode: int) -> None:
    if mode & 0o077:
        raise NetworkError(f"{path} is readable by others (mode {mode:o}); "
                           f"run `chmod 600 {path}`")


def _check_init_args(nodes: list[tuple[str, str]], clients: int, state_machine: str, qos: int,
                     protocol: dict[str, float] | None) -> None:
    if len(nodes) < 1:
        raise NetworkError("a network needs at least one node (4 to tolerate one fault)")
    if clients < 1:
        raise NetworkError("a network needs at least one client identity")
    if state_machine not in STATE_MACHINES:
        raise NetworkError(f"unknown state machine {state_machine!r}; known: "
                           f"{', '.join(STATE_MACHINES)}")
    if qos not in (0, 1, 2):
        raise NetworkError(f"MQTT QoS must be 0, 1 or 2; got {qos}")
    unknown = sorted(set(protocol or {}) - set(DEFAULT_PROTOCOL))
    if unknown:
        raise NetworkError(f"unknown protocol parameter(s) {', '.join(unknown)}; known: "
                           f"{', '.join(DEFAULT_PROTOCOL)}")


@dataclass
class NetworkDir:
    """A loaded, validated network directory."""

    path: Path
    membership: Membership
    settings: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> NetworkDir:
        """Read and check DIR/genesis.json and DIR/network.json. Raises NetworkError."""
        root = Path(path)
        try:
            membership = Membership.from_json((root / "genesis.json").read_text())
            settings = json.loads((root / "network.json").read_text())
        except FileNotFoundError as exc:
            raise NetworkError(f"{root} is not a network directory (missing "
                               f"{Path(exc.filename).name}); create one with "
                               f"`medbft keys init --out {root}`") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise NetworkError(f"{root}: malformed genesis.json or network.json: {exc}") from exc
        net = cls(root, membership, settings)
        net._check()
        return net

    def _check(self) -> None:
        s = self.settings
        for key in ("network_id", "state_machine", "protocol", "mqtt"):
            if key not in s:
                raise NetworkError(f"{self.path / 'network.json'}: missing {key!r}")
        if not isinstance(s["protocol"], dict):
            raise NetworkError(f"{self.path / 'network.json'}: protocol must be a mapping of "
                               f"parameters such as {{\"batch_size\": 1}}; got "
                               f"{s['protocol']!r}")
        try:
            self.config()
        except ValueError as exc:
            raise NetworkError(f"{self.path / 'network.json'}: bad protocol block: {exc}") \
                from exc

    # -- accessors ----------------------------------------------------------------------------

    @property
    def network_id(self) -> str:
        return str(self.settings["network_id"])

    @property
    def state_machine(self) -> str:
        return str(self.settings["state_machine"])

    @property
    def protocol(self) -> dict[str, float]:
        return {**DEFAULT_PROTOCOL, **self.settings["protocol"]}

    @property
    def link_delay_s(self) -> float:
        """Emulated one-way delay every party adds to what it sends (`emulation:
        link_delay_ms` in network.json; for experiments on one machine, where the kernel's
        netem is not available; absent in production networks)."""
        return float(self.settings.get("emulation", {}).get("link_delay_ms", 0)) / 1e3

    def protocol_values(self) -> dict[str, Any]:
        """The protocol block by attribute name (`batch_timeout_ns`, ...), durations in ns,
        defaults filled in. Raises ValueError for a value that is not a number."""
        p = self.protocol
        return {q.attr: _from_block(q, p[network_key(q)]) for q in SCENARIO_PARAMETERS}

    @property
    def client_timeout_ns(self) -> int:
        return int(self.protocol_values()["client_timeout_ns"])

    def config(self, durable: bool = True) -> Config:
        """The replica `Config` every node of this network uses. Raises ValueError naming a
        parameter out of bounds (client-side ones are checked too)."""
        return Config.from_mapping({**self.protocol_values(), "durable": durable})

    def address(self, node_id: str) -> str:
        """host:port of a node's HTTP endpoint (API, and WebSocket peers in http mode)."""
        for member in self.membership.nodes:
            if member.id == node_id:
                if not member.address:
                    raise NetworkError(f"node {node_id!r} has no address in genesis.json")
                return member.address
        raise NetworkError(f"{node_id!r} is not a node of this network; nodes: "
                           f"{', '.join(self.membership.node_ids)}")

    @property
    def tls(self) -> bool:
        """Whether parties talk over TLS (the default; see node.tls) rather than in plaintext
        (`"insecure_plaintext": true` in network.json)."""
        return not self.settings.get("insecure_plaintext", False)

    def url(self, node_id: str) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address(node_id)}"

    @property
    def ca_path(self) -> Path:
        return self.path / "ca.pem"

    def tls_files(self, party: str) -> tuple[Path, Path]:
        """(certificate, private key) of `party`'s TLS identity. Raises NetworkError if either
        is missing or the key is readable by others."""
        cert, key = cert_path(self.path, party), key_path(self.path, party)
        for f in (self.ca_path, cert, key):
            if not f.exists():
                raise NetworkError(f"no {f.name} for {party!r} at {f} (this network uses TLS; "
                                   f"see docs/real-network.md)")
        _check_private(key)
        return cert, key

    def client_ssl(self, party: str = OPERATOR_ID) -> ssl.SSLContext | None:
        """The TLS context `party` dials nodes (and the broker) with: it presents `party`'s
        certificate and trusts only the network CA. None on a plaintext network."""
        if not self.tls:
            return None
        return client_context(self.ca_path, *self.tls_files(party))

    def server_ssl(self, node_id: str) -> ssl.SSLContext | None:
        """A node's listening context (requires a CA-issued client certificate), or None on a
        plaintext network."""
        if not self.tls:
            return None
        return server_context(self.ca_path, *self.tls_files(node_id))

    def broker_password(self, party: str) -> str | None:
        """`party`'s MQTT password from keys/<party>.mqtt-password, or None if there is none."""
        path = password_path(self.path, party)
        if not path.exists():
            return None
        _check_private(path)
        return path.read_text().strip()

    def data_path(self, node_id: str) -> Path:
        return self.path / "data" / f"{node_id}.db"

    def identity(self, party: str) -> Identity:
        """Load `party`'s private key and check it matches the genesis. Raises NetworkError."""
        public = self.membership.public_keys().get(party)
        if public is None:
            raise NetworkError(f"{party!r} is not in this network's genesis")
        path = self.path / "keys" / f"{party}.pem"
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            ident = Identity.from_pem(party, path.read_bytes())
        except FileNotFoundError as exc:
            raise NetworkError(f"no private key for {party!r} at {path}") from exc
        except ValueError as exc:
            raise NetworkError(f"{path}: not a usable private key: {exc}") from exc
        _check_mode(path, mode)
        if ident.public_bytes != public:
            raise NetworkError(f"{path} does not match {party!r}'s public key in genesis.json")
        return ident
