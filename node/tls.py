"""Transport security for real networks: a network CA, per-party certificates, TLS contexts,
and the Mosquitto broker's configuration, credentials and ACL.

Why this exists: the replica core authenticates every protocol message (MACs, signatures),
but that protects neither confidentiality nor the API: without TLS anyone who can reach a
node's port reads the ledger, and anyone who can reach the broker reads every inbox and can
kick a node off by reusing its client id. So `medbft keys init` also writes a small PKI:

    DIR/ca.pem                     the network CA (ECDSA P-256, self-signed)
    DIR/ca-key.pem                 its private key (0600; keep it offline in production)
    DIR/certs/<party>.pem          each node's (server+client), client's (client), the
                                   operator's (client: monitoring tools) and the MQTT
                                   broker's (server) certificate; CN = the party id
    DIR/keys/<party>.tls-key.pem   their TLS private keys (0600)
    DIR/keys/<party>.mqtt-password each MQTT party's broker password (0600)
    DIR/mosquitto.conf, .passwd, .acl  the broker: TLS with client certificates, no anonymous
                                   clients, per-party passwords, each party reads only its own
                                   inbox (replicas also the fan-out topics) and publishes only
                                   under its own name (to the fan-out: replicas only)

Nodes serve HTTP and WebSocket over TLS and require a CA-issued client certificate from
everyone (peers, clients, the operator); a WebSocket hello must come from the party its
certificate names. Diallers check the server's certificate against the CA and its CN
against the node they meant to reach.

`keys init --insecure-plaintext` (recorded in network.json) switches all of this off, for
local experiments only.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import secrets
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.transport import MAX_FRAME_BYTES, MAX_QUEUED_BYTES

if TYPE_CHECKING:
    import aiohttp


class _Network(Protocol):
    """What `api_session` needs of a network directory (node.netdir.NetworkDir), named here
    so that this module does not import netdir, which imports it."""

    def client_ssl(self, party: str = ...) -> ssl.SSLContext | None: ...

__all__ = [
    "BROKER_ID",
    "OPERATOR_ID",
    "api_session",
    "client_context",
    "peer_common_name",
    "server_context",
    "write_broker_config",
    "write_pki",
]

OPERATOR_ID = "operator"
"""The certificate monitoring tools (`medbft load`/`cluster`'s status scrapes, curl) use."""
BROKER_ID = "mqtt-broker"
VALID_DAYS = 3650
PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _name(common_name: str, network: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"medbft {network}"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def cert_path(root: Path, party: str) -> Path:
    return root / "certs" / f"{party}.pem"


def key_path(root: Path, party: str) -> Path:
    return root / "keys" / f"{party}.tls-key.pem"


def password_path(root: Path, party: str) -> Path:
    return root / "keys" / f"{party}.mqtt-password"


def write_pki(root: Path, network: str, servers: dict[str, list[str]],
              clients: Iterable[str]) -> None:
    """Write a fresh CA and certificates under `root`. `servers` maps node (or broker) id ->
    the host names / IPs it is reached at (its SANs); they also get client authentication.
    `clients` get client-only certificates."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"medbft {network} CA", network)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    (root / "certs").mkdir(parents=True, exist_ok=True)
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_private(root / "ca-key.pem", _key_pem(ca_key))
    parties: list[tuple[str, list[str] | None]] = [*servers.items()]
    parties += [(c, None) for c in clients]
    for party, hosts in parties:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (x509.CertificateBuilder().subject_name(_name(party, network))
                   .issuer_name(ca_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca_key.public_key()), critical=False))
        if hosts is not None:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in dict.fromkeys(hosts)]),
                critical=False)
        cert = (builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .sign(ca_key, hashes.SHA256()))
        cert_path(root, party).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_path(root, party), _key_pem(key))


# -- the broker ------------------------------------------------------------------------------


def mosquitto_hash(password: str, salt: bytes | None = None,
                   iterations: int = PBKDF2_ITERATIONS) -> str:
    """A Mosquitto 2 password-file hash: `$7$iterations$salt$PBKDF2-SHA512` (base64)."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


BROKER_MAX_PACKET_BYTES = MAX_FRAME_BYTES + 64 * 1024
"""`max_packet_size` of the written broker: our largest frame, plus room for the topic and the
MQTT header."""
BROKER_MAX_QUEUED_BYTES = MAX_QUEUED_BYTES
"""`max_queued_bytes` per client (QoS 1 only): what a node's own send queue holds."""


def write_broker_config(root: Path, prefix: str, host: str, port: int,
                        replicas: Iterable[str], clients: Iterable[str]) -> None:
    """Write DIR/mosquitto.conf, .passwd and .acl, and each party's password (0600). Paths in
    the configuration are absolute: Mosquitto resolves relative ones against its working
    directory."""
    root = root.resolve()
    replicas = list(replicas)
    parties = [*replicas, *clients]
    passwd = root / "mosquitto.passwd"
    lines = []
    for party in parties:
        password = secrets.token_urlsafe(24)
        _write_private(password_path(root, party), password.encode() + b"\n")
        lines.append(f"{party}:{mosquitto_hash(password)}")
    _write_private(passwd, ("\n".join(lines) + "\n").encode())
    acl = [f"# medbft: each party reads only its own inbox ({prefix}/inbox/<party>/<sender>)",
           "# and publishes only with itself as the sender. Replicas, and only they, also",
           f"# read every replica's fan-out topic ({prefix}/all/<sender>) and publish to",
           "# their own. Anything else is denied."]
    for party in parties:
        acl += ["", f"user {party}", f"topic read {prefix}/inbox/{party}/+",
                f"topic write {prefix}/inbox/+/{party}"]
        if party in replicas:
            acl += [f"topic read {prefix}/all/+", f"topic write {prefix}/all/{party}"]
    (root / "mosquitto.acl").write_text("\n".join(acl) + "\n")
    conf = [
        "# Written by `medbft keys init`. Start the broker with:",
        f"#   mosquitto -c {root / 'mosquitto.conf'}",
        "# TLS with client certificates from the network CA, no anonymous clients,",
        "# per-party passwords, and an ACL confining each party to its own inbox.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {passwd}",
        f"acl_file {root / 'mosquitto.acl'}",
        "persistence false",
        # Nagle's algorithm would hold small frames back ~40 ms per hop (docs/real-network.md).
        "set_tcp_nodelay true",
        # Limits (docs/real-network.md, "Broker limits"): a packet larger than our largest
        # frame plus its topic is an attack or a bug, and its sender is disconnected; QoS 1
        # queues (opt-in) are bounded per client like a node's own send queue, since PBFT
        # recovers what a full queue drops.
        f"max_packet_size {BROKER_MAX_PACKET_BYTES}",
        "max_queued_messages 1000",
        f"max_queued_bytes {BROKER_MAX_QUEUED_BYTES}",
        # Reading the keys after dropping root needs the user that owns them.
        *([f"user {_owner(root)}"] if os.geteuid() == 0 else []),
        "",
        f"listener {port} {host}",
        # Every party connected, each also reconnecting once, and the operator: no more.
        f"max_connections {2 * len(parties) + 2}",
        f"cafile {root / 'ca.pem'}",
        f"certfile {cert_path(root, BROKER_ID)}",
        f"keyfile {key_path(root, BROKER_ID)}",
        "require_certificate true",
        "tls_version tlsv1.2",
    ]
    (root / "mosquitto.conf").write_text("\n".join(conf) + "\n")


def _owner(root: Path) -> str:
    import pwd

    return pwd.getpwuid(root.stat().st_uid).pw_name


# -- contexts --------------------------------------------------------------------------------


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """A node's listening context: its certificate, and a CA-issued one required of every
    connecting party."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A dialler's context: verifies the server against the network CA (and its host name
    against the certificate's SANs) and presents `cert` if given."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def api_session(net: _Network, party: str = OPERATOR_ID,
                **kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session for talking to `net`'s node APIs as `party` (by default the
    operator: monitoring tools, harnesses): its client certificate on a TLS network."""
    import aiohttp

    ctx = net.client_ssl(party)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx or True), **kwargs)


def peer_common_name(peercert: Any) -> str | None:
    """The CN of a verified peer certificate (`getpeercert()`'s dict), or None."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
