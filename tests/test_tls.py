"""Transport security: what `keys init` writes, mutual TLS on the node's listener, and the
Mosquitto broker started from the configuration `keys init` writes.

These fail on a network without TLS by construction: there a client with no certificate is
served, any party may claim any id on any connection, and an anonymous `#` subscriber on the
broker reads every inbox. Brokers here are private (a free loopback port, stopped at the end);
the shared anonymous broker on 1883 is used only by the explicit plaintext test.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import shutil
import ssl
import stat
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from realnet import load, own_broker, real_cluster, require_mosquitto

from medbft.real.cluster import free_ports
from node.crypto import Keyring
from node.netdir import NetworkDir, NetworkError, default_node_ids, init_network
from node.server import NodeOptions, NodeServer
from node.tls import BROKER_ID, OPERATOR_ID, api_session, client_context, mosquitto_hash
from node.transport import MAX_FRAME_BYTES
from node.transport.http import HttpTransport, hello_payload
from node.transport.mqtt import BrokerSettings, inbox_topic


def _network(tmp_path: Path, **kw: Any) -> NetworkDir:
    return init_network(tmp_path / "net", default_node_ids(4), clients=2, ports=free_ports(4),
                        protocol={"view_change_timeout_ms": 300, "client_timeout_ms": 300},
                        state_machine="kv", **kw)


# -- what keys init writes --------------------------------------------------------------------


def test_keys_init_writes_a_ca_certificates_and_a_broker_config(tmp_path: Path) -> None:
    net = _network(tmp_path, broker="mqtts://127.0.0.1:18883")
    assert net.tls and net.url("hospital-1").startswith("https://")
    root = net.path
    ca = x509.load_pem_x509_certificate((root / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    private = [root / "ca-key.pem", *root.glob("keys/*")]
    assert private and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in private), private
    parties = [*net.membership.node_ids, *(c.id for c in net.membership.clients), OPERATOR_ID]
    for party in [*parties, BROKER_ID]:
        cert = x509.load_pem_x509_certificate((root / "certs" / f"{party}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == party
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert (root / "keys" / f"{party}.tls-key.pem").exists()
    san = x509.load_pem_x509_certificate((root / "certs" / "hospital-1.pem").read_bytes()) \
        .extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    conf = (root / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "listener 18883 127.0.0.1" in conf
    assert "require_certificate true" in conf and "password_file" in conf
    # Limits: the largest frame and its topic, QoS 1 queues bounded, every party connected
    # (and reconnecting) plus the operator.
    assert f"max_packet_size {MAX_FRAME_BYTES + 64 * 1024}\n" in conf
    assert "max_queued_messages 1000\n" in conf and "max_queued_bytes 67108864\n" in conf
    assert f"max_connections {2 * (len(parties) - 1) + 2}\n" in conf
    acl = (root / "mosquitto.acl").read_text()
    prefix = net.settings["mqtt"]["topic_prefix"]
    assert f"user hospital-1\ntopic read {prefix}/inbox/hospital-1/+\n" \
           f"topic write {prefix}/inbox/+/hospital-1\ntopic read {prefix}/all/+\n" \
           f"topic write {prefix}/all/hospital-1\n" in acl
    # Only replicas fan out: a client reads its inbox and writes to inboxes, nothing more.
    client_rules = acl.split("user client-1\n")[1].split("\n\n")[0].splitlines()
    assert client_rules == [f"topic read {prefix}/inbox/client-1/+",
                            f"topic write {prefix}/inbox/+/client-1"]
    assert sum(f"topic write {prefix}/all/" in line for line in acl.splitlines()) == 4
    users = [line.split(":")[0] for line in (root / "mosquitto.passwd").read_text().split()]
    assert users == parties[:-1]  # every node and client, not the operator
    password = net.broker_password("client-1")
    assert password and len(password) >= 24


def test_plaintext_is_an_explicit_loud_choice(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from medbft.cli import main

    with pytest.raises(NetworkError, match="not TLS"):
        _network(tmp_path, broker="mqtt://127.0.0.1:1883")
    assert main(["keys", "init", "--out", str(tmp_path / "p"), "--insecure-plaintext"]) == 0
    assert "WARNING: --insecure-plaintext" in capsys.readouterr().err
    net = NetworkDir.load(tmp_path / "p")
    assert json.loads((net.path / "network.json").read_text())["insecure_plaintext"] is True
    assert not net.tls and net.url("hospital-1").startswith("http://")
    assert not (net.path / "ca.pem").exists() and not (net.path / "mosquitto.conf").exists()
    assert net.client_ssl() is None


def test_our_password_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """`keys init` hashes passwords itself (no password on a command line, no binary needed);
    the result must be what `mosquitto_passwd` writes for the same salt."""
    require_mosquitto()  # mosquitto_passwd comes with it
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(path), "alice", "s3cret"], check=True,
                   capture_output=True)
    theirs = path.read_text().strip().split(":", 1)[1]
    _, kind, iterations, salt, _digest = theirs.split("$")
    assert kind == "7"
    assert mosquitto_hash("s3cret", base64.b64decode(salt), int(iterations)) == theirs


# -- the node's listener ----------------------------------------------------------------------


@asynccontextmanager
async def _node(net: NetworkDir, tmp_path: Path, node: str = "hospital-1") -> AsyncIterator[
        NodeServer]:
    server = NodeServer(net, NodeOptions(network=net.path, node_id=node,
                                         data=tmp_path / f"{node}.db"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _foreign_identity(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA of our own and a certificate from it for `name`: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mallory CA")])

    def build(subject: str, pub: Any) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(ca_name).public_key(pub).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=1))
                .not_valid_after(now + datetime.timedelta(days=1)))

    ca = build("mallory CA", ca_key.public_key()).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(
        ca_key, hashes.SHA256())
    cert = build(name, key.public_key()).sign(ca_key, hashes.SHA256())
    paths = tmp_path / "ca-m.pem", tmp_path / "m.pem", tmp_path / "m-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


async def _refused(url: str, ctx: ssl.SSLContext | bool) -> None:
    """Neither the API nor the WebSocket answers a connection made with `ctx`."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx or False)) as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.post(f"{url}/tx", data=b"x",
                              headers={"Content-Type": "application/octet-stream"}):
                pass
        with pytest.raises(aiohttp.ClientError):
            async with s.ws_connect(f"{url}/ws"):
                pass
        with pytest.raises(aiohttp.ClientError):
            async with s.get(f"{url}/ledger"):
                pass


async def _hello(ws: aiohttp.ClientWebSocketResponse, net: NetworkDir, claimed: str,
                 to: str = "hospital-1", answer: bool = True) -> aiohttp.WSMessage | None:
    """Send a hello correctly signed by `claimed`'s key; return the server's next message
    (if `answer`: an accepted peer gets none)."""
    nonce = json.loads((await ws.receive(timeout=5)).data)["nonce"]
    keys = Keyring(net.identity(claimed), net.membership.public_keys())
    sig = keys.sign(hello_payload(net.network_id, claimed, to, nonce))
    await ws.send_str(json.dumps({"network": net.network_id, "from": claimed, "to": to,
                                  "sig": sig.hex()}))
    return await ws.receive(timeout=5) if answer else None


async def _listener_checks(net: NetworkDir, tmp_path: Path) -> None:
    url = net.url("hospital-1")
    async with _node(net, tmp_path) as server:
        # No client certificate: the TLS handshake fails, nothing is served.
        await _refused(url, client_context(net.ca_path, None, None))
        # A certificate from another CA naming a real party: refused just the same.
        _ca, cert, key = _foreign_identity(tmp_path, "hospital-2")
        foreign = client_context(net.ca_path, cert, key)
        await _refused(url, foreign)
        # Plain HTTP on the TLS port gets nothing either.
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http://{net.address('hospital-1')}/status"):
                    pass
        # A CA-issued certificate is served (the operator's: monitoring tools).
        async with api_session(net) as s, s.get(f"{url}/status") as r:
            assert r.status == 200 and (await r.json())["id"] == "hospital-1"

        # A node holding its own certificate cannot pass as another node, even with the
        # other's signing key: the hello must come from the party its certificate names.
        ctx = net.client_ssl("pharmacy-1")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx or False)) as s:
            async with s.ws_connect(f"{url}/ws") as ws:
                msg = await _hello(ws, net, "hospital-2")
                assert msg is not None and msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4003
                assert msg.extra == "certificate for another party"
            async with s.ws_connect(f"{url}/ws") as ws:  # as itself: accepted
                await _hello(ws, net, "pharmacy-1", answer=False)
                for _ in range(100):
                    if server.transport.peer_status()["pharmacy-1"]["inbound"]:
                        break
                    await asyncio.sleep(0.02)
                assert server.transport.peer_status()["pharmacy-1"]["inbound"] == 1
                await ws.close()
        # Nor a client as a node.
        ctx = net.client_ssl("client-1")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx or False)) as s, \
                s.ws_connect(f"{url}/ws") as ws:
            msg = await _hello(ws, net, "regulator-1")
            assert msg is not None and msg.type == aiohttp.WSMsgType.CLOSE and msg.extra == \
                "certificate for another party"
        refused = server.refusals.counts
        assert refused.get("hello-certificate-for-another-party") == 2, refused

        # The dialler checks the server's certificate names the node it meant to reach:
        # hospital-1 answering at "hospital-2"'s address is not connected to.
        transport = HttpTransport(Keyring(net.identity("client-1"), net.membership.public_keys()),
                                  net.membership, net.network_id, asyncio.get_running_loop(),
                                  dial={"hospital-1": url, "hospital-2": url},
                                  ssl_context=net.client_ssl("client-1"))
        await transport.start()
        try:
            for _ in range(100):
                if transport.connected()["hospital-1"]:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert transport.connected() == {"hospital-1": True, "hospital-2": False}
        finally:
            await transport.close(drain_s=0)


@pytest.mark.real
def test_the_listener_serves_only_ca_issued_certificates_bound_to_their_party(
        tmp_path: Path) -> None:
    asyncio.run(_listener_checks(_network(tmp_path), tmp_path))


# -- the broker ---------------------------------------------------------------------------------


def _broker_network(tmp_path: Path) -> NetworkDir:
    """A network whose broker (run by `own_broker`) listens on a free port."""
    return _network(tmp_path, broker=f"mqtts://127.0.0.1:{free_ports(1)[0]}")


def _mqtt(net: NetworkDir, party: str | None, *, as_user: str | None = None,
          password: str | None = None, cert_of: str | None = None) -> aiomqtt.Client:
    """A client of `net`'s broker logging in as `party` (None: anonymous) over TLS."""
    settings = BrokerSettings.for_party(net, cert_of or party or "client-1")
    return aiomqtt.Client(settings.host, settings.port,
                          username=as_user or party,
                          password=password if password is not None else (
                              net.broker_password(party) if party else None),
                          tls_context=settings.tls_context(), timeout=5)


async def _broker_checks(net: NetworkDir) -> None:
    prefix = net.settings["mqtt"]["topic_prefix"]
    b = BrokerSettings.for_party(net, "hospital-1")
    # Anonymous: refused, with a CA-issued certificate and without TLS alike.
    with pytest.raises(aiomqtt.MqttError):
        async with _mqtt(net, None, cert_of="hospital-1"):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(b.host, b.port, timeout=3):  # plaintext, anonymous
            pass
    with pytest.raises(aiomqtt.MqttError):  # plaintext with the right password
        async with aiomqtt.Client(b.host, b.port, username="hospital-1",
                                  password=net.broker_password("hospital-1"), timeout=3):
            pass
    # Another party's name with one's own password: refused.
    with pytest.raises(aiomqtt.MqttError):
        async with _mqtt(net, "hospital-1", as_user="pharmacy-1",
                         password=net.broker_password("hospital-1")):
            pass

    async with _mqtt(net, "pharmacy-1") as victim, _mqtt(net, "hospital-1") as sender, \
            _mqtt(net, "regulator-1") as snoop:
        await victim.subscribe(inbox_topic(prefix, "pharmacy-1"))
        await snoop.subscribe("#")
        await snoop.subscribe(inbox_topic(prefix, "pharmacy-1"))
        await asyncio.sleep(0.2)
        # hospital-1 publishing as regulator-1, then as itself: only the latter arrives.
        await sender.publish(inbox_topic(prefix, "pharmacy-1", "regulator-1"), b"forged")
        await sender.publish(inbox_topic(prefix, "pharmacy-1", "hospital-1"), b"genuine")
        got = await asyncio.wait_for(anext(aiter(victim.messages)), 5)
        assert (str(got.topic), got.payload) == (
            inbox_topic(prefix, "pharmacy-1", "hospital-1"), b"genuine")
        with pytest.raises(TimeoutError):  # the snoop saw nothing: not `#`, not the inbox
            await asyncio.wait_for(anext(aiter(snoop.messages)), 0.5)
        with pytest.raises(TimeoutError):  # nor did the victim get the forgery later
            await asyncio.wait_for(anext(aiter(victim.messages)), 0.3)


@pytest.mark.real
@pytest.mark.slow
def test_the_written_broker_config_refuses_anonymous_snooping_and_forged_senders(
        tmp_path: Path) -> None:
    net = _broker_network(tmp_path)
    with own_broker(net, tmp_path / "logs"):
        asyncio.run(_broker_checks(net))


@pytest.mark.real
def test_the_written_broker_disconnects_a_party_that_publishes_an_oversized_packet(
        tmp_path: Path) -> None:
    """`max_packet_size`: a publish larger than any frame a node sends (plus its topic) costs
    its sender the connection and reaches nobody; a frame of the largest size still passes."""
    net = _broker_network(tmp_path)
    prefix = net.settings["mqtt"]["topic_prefix"]

    async def check() -> None:
        async with _mqtt(net, "pharmacy-1") as victim:
            await victim.subscribe(inbox_topic(prefix, "pharmacy-1"))
            await asyncio.sleep(0.2)
            async with _mqtt(net, "hospital-1") as sender:
                largest = b"x" * MAX_FRAME_BYTES
                await sender.publish(inbox_topic(prefix, "pharmacy-1", "hospital-1"), largest)
                got = await asyncio.wait_for(anext(aiter(victim.messages)), 10)
                assert got.payload == largest
            oversized = _mqtt(net, "hospital-1")
            with pytest.raises(aiomqtt.MqttError):
                async with oversized as sender:
                    await sender.publish(inbox_topic(prefix, "pharmacy-1", "hospital-1"),
                                         b"x" * (MAX_FRAME_BYTES + 128 * 1024))
                    for _ in range(50):  # the broker closes the connection
                        await asyncio.sleep(0.1)
                        await sender.publish(inbox_topic(prefix, "pharmacy-1", "hospital-1"),
                                             b"after")
            # aiomqtt (2.x) keeps the broker's disconnection as the exception of a future it
            # does not read when the client exits on an error; read it here, or it is reported
            # ("Future exception was never retrieved") whenever the client is collected.
            gone = getattr(oversized, "_disconnected", None)
            if isinstance(gone, asyncio.Future) and gone.done() and not gone.cancelled():
                gone.exception()
            with pytest.raises(TimeoutError):  # neither the oversized packet nor what followed
                await asyncio.wait_for(anext(aiter(victim.messages)), 0.5)

    with own_broker(net, tmp_path / "logs"):
        asyncio.run(check())


@pytest.mark.real
def test_a_clients_id_is_random_so_nobody_can_kick_a_node_off(tmp_path: Path) -> None:
    """Two transports of one party hold two sessions at once (a predictable id would make
    the second one take over the first's)."""
    from node.transport.mqtt import MqttTransport

    net = _broker_network(tmp_path)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        prefix = net.settings["mqtt"]["topic_prefix"]
        a, b = (MqttTransport("hospital-1", BrokerSettings.for_party(net, "hospital-1"),
                              prefix, loop) for _ in range(2))
        await a.start()
        assert await a.wait_subscribed(10)
        await b.start()
        assert await b.wait_subscribed(10)
        await asyncio.sleep(0.5)
        assert a.connected() == b.connected() == {"broker": True}
        await a.close(drain_s=0)
        await b.close(drain_s=0)

    with own_broker(net, tmp_path / "logs"):
        asyncio.run(go())
    log = (tmp_path / "logs" / "mosquitto.log").read_text()
    ids = [line.split(" as ")[1].split()[0] for line in log.splitlines()
           if "New client connected" in line and "u'hospital-1'" in line]
    assert len(ids) == 2 and len(set(ids)) == 2 and all("hospital" not in i for i in ids), log


# -- clusters ---------------------------------------------------------------------------------
# Over TLS: tests/test_real_http.py and tests/test_real_mqtt.py (realnet's clusters are TLS).


@pytest.mark.real
@pytest.mark.slow
def test_plaintext_still_works_when_asked_for_explicitly(tmp_path: Path) -> None:
    with real_cluster(tmp_path, "http", insecure_plaintext=True) as cluster:
        net = cluster.net
        assert net.url(net.membership.node_ids[0]).startswith("http://")
        result = load(net, "http", seconds=1.0)
        assert result.summary["requests"]["committed"] >= 5
        assert result.summary["safety"]["ok"]
