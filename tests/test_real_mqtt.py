"""Layer 5: real node processes talking through a Mosquitto broker over TLS.

The broker is private to the test: started from the `mosquitto.conf` that `keys init` wrote
(TLS with client certificates, per-party passwords, the inbox ACL, no anonymous clients) on
a free loopback port, and stopped at the end. It needs the `mosquitto` binary (`apt-get
install mosquitto`); without it the test is skipped, except under CI (`CI` set, as `.ci/run`
sets it), where a missing broker is a failure: CI must not pass by testing nothing.
Thin on purpose: a 4-node cluster commits requests over MQTT, and a backup killed with
SIGKILL restarts from disk and catches up to the same state. The fan-out is checked on bare
transports through such a broker: a replica's multicast to every other replica is one
publish, to some of them inbox publishes, its own fan-out comes back and is dropped unread,
and under an ACL from before the fan-out everything still arrives (through inboxes). What
the broker refuses is in tests/test_tls.py (and here, for the fan-out topic).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import realnet
from realnet import (
    load,
    own_broker,
    poll,
    real_cluster,
    require_mosquitto,
    statuses,
    wait_ready,
)

from medbft.real.cluster import free_ports
from node.netdir import NetworkDir, default_node_ids, init_network
from node.transport import FrameError, pack_frames
from node.transport.mqtt import (
    BrokerSettings,
    MqttTransport,
    fanout_topic,
    inbox_topic,
    pack_fanout_record,
    read_at_once,
    unpack_fanout_record,
    write_at_once,
)


def _caught_up(net: NetworkDir, ids: list[str]) -> dict[str, Any] | None:
    rows = statuses(net)
    if set(rows) == set(ids) and len({rows[i]["last_executed"] for i in ids}) == 1:
        return rows
    return None


@pytest.mark.real
@pytest.mark.slow
def test_four_nodes_commit_over_mqtt_and_a_killed_backup_catches_up(tmp_path: Path) -> None:
    require_mosquitto()
    with real_cluster(tmp_path, "mqtt") as cluster:
        net = cluster.net
        ids = list(net.membership.node_ids)
        first = load(net, "mqtt", seconds=1.0)
        assert first.summary["requests"]["committed"] >= 5
        assert first.summary["liveness"]["ok"] and first.summary["safety"]["ok"]
        rows = statuses(net)
        assert all(r["peers"]["broker"]["connected"] for r in rows.values())
        assert net.tls and cluster.broker_proc is not None
        assert all(r["peers"]["broker"]["address"].startswith("mqtts://") for r in rows.values())
        assert all(r["peers"]["broker"]["fanout"] for r in rows.values())  # the ACL allows it

        backup = ids[3]
        cluster.kill(backup)
        during = load(net, "mqtt", seconds=1.0)
        assert during.summary["requests"]["committed"] >= 5
        cluster.start(backup)
        wait_ready(cluster, [backup])
        rows = poll(lambda: _caught_up(net, ids), 20, "the restarted backup to catch up")
        assert rows[backup]["recovered_from_disk"] is True
        assert len({rows[i]["digest"] for i in ids}) == 1


def test_broker_urls() -> None:
    b = BrokerSettings.from_url("mqtts://alice:s%40cret@broker.example:8884", qos=1)
    assert (b.host, b.port, b.tls, b.username, b.password, b.qos) == (
        "broker.example", 8884, True, "alice", "s@cret", 1)
    assert b.describe() == "mqtts://broker.example:8884"
    assert BrokerSettings.from_url("127.0.0.1").port == 1883
    assert BrokerSettings.from_url("mqtts://h").port == 8883
    with pytest.raises(ValueError, match="mqtt://"):
        BrokerSettings.from_url("http://h")


def test_a_missing_broker_skips_outside_ci_and_fails_in_ci(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnet.cluster, "mosquitto_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install Mosquitto"):
        require_mosquitto()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        require_mosquitto()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set, so a missing broker fails"):
        require_mosquitto()
    monkeypatch.setattr(realnet.cluster, "mosquitto_binary", lambda: "/usr/sbin/mosquitto")
    require_mosquitto()  # a broker: neither


# -- the fan-out ------------------------------------------------------------------------------


def _copies(n: int, size: int = 300) -> tuple[bytes, ...]:
    """n copies of one message that differ, like sealed envelopes, in a 32-byte MAC at the end."""
    head = os.urandom(size)
    return tuple(head + os.urandom(32) for _ in range(n))


def test_fanout_records_give_each_receiver_its_own_copy() -> None:
    copies = _copies(3)
    record = pack_fanout_record(copies, 16)
    assert record is None  # the copies differ in their last 32 bytes, not 16
    record = pack_fanout_record(copies, 32)
    assert record is not None and len(record) < 300 + 3 * 32 + 8
    assert [unpack_fanout_record(record, i, 3) for i in range(3)] == list(copies)
    assert pack_fanout_record(copies, 64) is not None  # a longer tail works too
    assert pack_fanout_record((copies[0], copies[1] + b"x"), 32) is None  # lengths differ
    with pytest.raises(FrameError):
        unpack_fanout_record(record, 0, 4)  # a record for another number of receivers
    with pytest.raises(FrameError):
        unpack_fanout_record(record[:50], 0, 3)  # shorter than its tails
    with pytest.raises(FrameError):
        unpack_fanout_record(b"\x00", 0, 3)


def test_a_fanout_frame_is_unpacked_whole_or_dropped_as_bad() -> None:
    loop = asyncio.new_event_loop()
    try:
        ids = [party for party, _role in default_node_ids(4)]
        got: list[bytes] = []
        t = MqttTransport(ids[2], BrokerSettings(), "p", loop, replicas=ids)
        t.on_receive = got.append
        copies = _copies(3)  # from ids[0]: to ids[1], ids[2], ids[3]
        record = pack_fanout_record(copies, 32)
        assert record is not None
        t._on_fanout(ids[0], pack_frames([record, record])[0])
        assert got == [copies[1], copies[1]] and t.stats.frames_received == 1
        t._on_fanout(ids[0], b"")  # a probe: nothing, and not bad
        t._on_fanout("client-1", pack_frames([record])[0])  # not a replica's topic
        t._on_fanout(ids[0], pack_frames([record, record[:50]])[0])  # one bad record: none
        t._on_fanout(ids[0], b"\x00\x00")  # not a frame
        assert len(got) == 2 and t.stats.bad_frames == 3 and t.stats.frames_received == 1
    finally:
        loop.close()


def _private_network(tmp_path: Path, acl_edit: Callable[[str], str] | None = None) -> NetworkDir:
    """A network whose broker (run by `own_broker`) listens on a free port, its ACL
    optionally edited."""
    net = init_network(tmp_path / "net", default_node_ids(4), clients=1, ports=free_ports(4),
                       broker=f"mqtts://127.0.0.1:{free_ports(1)[0]}")
    if acl_edit is not None:
        acl = net.path / "mosquitto.acl"
        acl.write_text(acl_edit(acl.read_text()))
    return net


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


class _Parties:
    """A bare MqttTransport per replica and one client of `net`, collecting what arrives."""

    def __init__(self, net: NetworkDir, qos: int | None = None) -> None:
        loop = asyncio.get_running_loop()
        prefix = str(net.settings["mqtt"]["topic_prefix"])
        self.ids = net.membership.node_ids
        self.client = net.membership.clients[0].id
        self.got: dict[str, list[bytes]] = {}
        self.t: dict[str, MqttTransport] = {}
        for party in (*self.ids, self.client):
            t = MqttTransport(party, BrokerSettings.for_party(net, party, qos=qos), prefix,
                              loop, replicas=self.ids)
            self.got[party] = []
            t.on_receive = self.got[party].append
            self.t[party] = t

    async def start(self) -> None:
        for t in self.t.values():
            await t.start()
        for t in self.t.values():
            assert await t.wait_subscribed(10)

    async def close(self) -> None:
        for t in self.t.values():
            await t.close(drain_s=0)


def _spy(net: NetworkDir, party: str) -> aiomqtt.Client:
    b = BrokerSettings.for_party(net, party)
    return aiomqtt.Client(b.host, b.port, username=b.username, password=b.password,
                          tls_context=b.tls_context(), timeout=5)


async def _next_frame(client: aiomqtt.Client, timeout_s: float) -> aiomqtt.Message:
    """The next message that is not a probe (an empty fan-out publish)."""
    while True:
        message = await asyncio.wait_for(anext(aiter(client.messages)), timeout_s)
        if message.payload:
            return message


async def _fanout_checks(net: NetworkDir) -> None:
    prefix = str(net.settings["mqtt"]["topic_prefix"])
    parties = _Parties(net)
    await parties.start()
    ids, t, got = parties.ids, parties.t, parties.got
    sender, others = t[ids[0]], ids[1:]
    client = t[parties.client]
    try:
        await _until(lambda: all(t[r].fanout_ready for r in ids), 10, "the probes")
        assert not client.is_replica and not client.fanout_ready
        async with _spy(net, ids[1]) as spy, _spy(net, parties.client) as intruder:
            await spy.subscribe(fanout_topic(prefix))
            await intruder.subscribe(fanout_topic(prefix))  # a client: the ACL says no
            await asyncio.sleep(0.2)

            # To every other replica: one publish, two messages in it, each copy counted.
            prepare, commit = _copies(3), _copies(3, 100)
            sender.multicast(sender.id, others, prepare, "PREPARE")
            sender.multicast(sender.id, others, commit, "COMMIT")
            await _until(lambda: all(len(got[r]) == 2 for r in others), 10, "the fan-out")
            for i, r in enumerate(others):
                assert got[r] == [prepare[i], commit[i]]
                assert (t[r].stats.frames_received, t[r].stats.bad_frames) == (1, 0)
            stats = sender.stats
            assert (stats.frames_sent, sender.fanout_frames_sent) == (1, 1)
            assert stats.messages_sent == 6
            assert stats.sent_by_kind == {"PREPARE": 3, "COMMIT": 3}
            seen = await _next_frame(spy, 5)
            assert seen.topic.value == fanout_topic(prefix, sender.id)
            with pytest.raises(TimeoutError):  # once, not once per receiver
                await _next_frame(spy, 0.3)

            # Our own fan-out does not come back: after its probe (the one echo, dropped
            # unread) a replica leaves its own fan-out topic.
            await asyncio.sleep(0.3)
            assert sender.echoes == 1
            assert (stats.frames_received, stats.bad_frames, got[sender.id]) == (0, 0, [])

            # To some of the replicas: their inboxes, one publish each.
            subset = _copies(2)
            sender.multicast(sender.id, others[:2], subset, "PREPARE")
            await _until(lambda: all(len(got[r]) == 3 for r in others[:2]), 10, "the inboxes")
            assert [got[r][-1] for r in others[:2]] == list(subset) and len(got[ids[3]]) == 2
            assert (stats.frames_sent, sender.fanout_frames_sent) == (3, 1)

            # A client's multicast to all replicas goes to their inboxes.
            request = _copies(4)
            client.multicast(client.id, ids, request, "REQUEST")
            await _until(lambda: all(len(got[r]) == 1 for r in ids[:1]), 10, "the request")
            assert client.stats.frames_sent == 4 and client.fanout_frames_sent == 0

            # The broker keeps clients off the fan-out: their publishes reach no replica,
            # and they read nothing from it.
            await intruder.publish(fanout_topic(prefix, parties.client), b"forged")
            await intruder.publish(fanout_topic(prefix, ids[0]), b"forged")
            sender.multicast(sender.id, others, _copies(3), "COMMIT")
            genuine = await _next_frame(spy, 5)
            assert genuine.topic.value == fanout_topic(prefix, sender.id)
            with pytest.raises(TimeoutError):
                await _next_frame(spy, 0.5)
            with pytest.raises(TimeoutError):
                await _next_frame(intruder, 0.1)
            await _until(lambda: all(len(got[r]) >= 3 for r in others), 10, "the last fan-out")
            assert all(t[r].stats.bad_frames == 0 for r in ids)
    finally:
        await parties.close()


@pytest.mark.real
def test_a_multicast_to_every_other_replica_is_one_publish(tmp_path: Path) -> None:
    net = _private_network(tmp_path)
    with own_broker(net, tmp_path / "logs"):
        asyncio.run(_fanout_checks(net))


async def _no_fanout_checks(net: NetworkDir) -> None:
    parties = _Parties(net)
    await parties.start()
    ids, t, got = parties.ids, parties.t, parties.got
    sender = t[ids[0]]
    try:
        await asyncio.sleep(0.5)  # time for a probe to come back, were it allowed
        assert not any(t[r].fanout_ready for r in ids)
        copies = _copies(3)
        sender.multicast(sender.id, ids[1:], copies, "PREPARE")
        await _until(lambda: all(len(got[r]) == 1 for r in ids[1:]), 10, "the inboxes")
        assert [got[r][0] for r in ids[1:]] == list(copies)
        assert (sender.stats.frames_sent, sender.fanout_frames_sent) == (3, 0)
    finally:
        await parties.close()


@pytest.mark.real
def test_under_an_acl_from_before_the_fanout_multicasts_go_to_inboxes(tmp_path: Path) -> None:
    net = _private_network(
        tmp_path, lambda acl: "\n".join(line for line in acl.splitlines() if "/all/" not in line))
    with own_broker(net, tmp_path / "logs"):
        asyncio.run(_no_fanout_checks(net))


async def _write_at_once_checks(net: NetworkDir) -> None:
    prefix = str(net.settings["mqtt"]["topic_prefix"])
    ids = net.membership.node_ids
    loop = asyncio.get_running_loop()
    armed: list[int] = []  # every time anything asks the loop to watch a socket for writing
    add_writer = loop.add_writer

    def counting_add_writer(fd: Any, callback: Callable[..., object], *args: Any) -> None:
        armed.append(fd)
        add_writer(fd, callback, *args)

    loop.add_writer = counting_add_writer  # type: ignore[method-assign,assignment]
    async with _spy(net, ids[1]) as reader, _spy(net, ids[0]) as writer:
        await reader.subscribe(inbox_topic(prefix, ids[1]))
        assert write_at_once(writer)
        await asyncio.sleep(0.2)
        armed.clear()
        for i in range(20):
            await writer.publish(inbox_topic(prefix, ids[1], ids[0]), bytes([i]) * 300)
            assert not writer._client.want_write()  # written inside publish: nothing queued
        assert armed == []  # and the loop never had to watch the socket
        # What the socket does not take at once waits for writability, as without the hook:
        # with a small send buffer, a large publish cannot go out in one write.
        sock = writer._client.socket()
        assert isinstance(sock, socket.socket)  # an ssl.SSLSocket
        # On loopback the broker may drain a megabyte as fast as it is written (then nothing
        # is left over): a few more, until one is.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        large = []
        while not armed and len(large) < 10:
            large.append(bytes([len(large)]) * 1_000_000)
            await writer.publish(inbox_topic(prefix, ids[1], ids[0]), large[-1])
        assert armed != []
        await writer.publish(inbox_topic(prefix, ids[1], ids[0]), b"last")
        messages = aiter(reader.messages)
        got = [(await asyncio.wait_for(anext(messages), 10)).payload
               for _ in range(20 + len(large) + 1)]
        assert got == [bytes([i]) * 300 for i in range(20)] + large + [b"last"]
    assert write_at_once(object()) is False  # type: ignore[arg-type]  # not an aiomqtt client


@pytest.mark.real
def test_a_qos0_publish_reaches_the_socket_inside_publish(tmp_path: Path) -> None:
    """node.transport.mqtt.write_at_once: over TLS, through the broker `keys init`
    configures, a publish writes its packet at once instead of arming the loop's writer, and
    what the socket does not take at once still goes out after writability, in order."""
    net = _private_network(tmp_path)
    with own_broker(net, tmp_path / "logs"):
        asyncio.run(_write_at_once_checks(net))


async def _read_at_once_checks(net: NetworkDir) -> None:
    prefix = str(net.settings["mqtt"]["topic_prefix"])
    ids = net.membership.node_ids
    got: list[tuple[str, object]] = []
    b = BrokerSettings.for_party(net, ids[1])

    def reader_client() -> aiomqtt.Client:  # one identifier: a second connection kicks the first
        return aiomqtt.Client(b.host, b.port, username=b.username, password=b.password,
                              tls_context=b.tls_context(), timeout=5, identifier="reader-1")

    async with reader_client() as reader, _spy(net, ids[0]) as writer:
        await reader.subscribe(inbox_topic(prefix, ids[1]))
        assert read_at_once(reader, lambda topic, payload: got.append((topic, payload)))
        frames = [bytes([i]) * 300 for i in range(30)] + [b"x" * 1_000_000, b"last"]
        for frame in frames:
            await writer.publish(inbox_topic(prefix, ids[1], ids[0]), frame)
        await _until(lambda: len(got) == len(frames), 10, "the frames")
        assert [payload for _, payload in got] == frames  # all, in order, whole
        assert {topic for topic, _ in got} == {inbox_topic(prefix, ids[1], ids[0])}
        assert len(reader.messages) == 0  # aiomqtt's queue saw none of them
        # The iterator still reports the connection going: here the broker drops it when
        # another connection takes its client identifier.
        ended = asyncio.create_task(anext(aiter(reader.messages)))
        await asyncio.sleep(0.1)
        async with reader_client():
            with pytest.raises(aiomqtt.MqttError):
                await asyncio.wait_for(ended, 10)
    assert read_at_once(object(), lambda topic, payload: None) is False  # type: ignore[arg-type]


@pytest.mark.real
def test_a_message_goes_from_paho_to_the_transport_without_aiomqtt_s_queue(
        tmp_path: Path) -> None:
    """node.transport.mqtt.read_at_once: over TLS, through the broker `keys init`
    configures, every frame reaches the handler inside paho's read, in order and whole (a
    1 MB one too), aiomqtt's message queue stays empty, and a dropped connection still ends
    the message iterator with an error (what makes the transport reconnect)."""
    net = _private_network(tmp_path)
    with own_broker(net, tmp_path / "logs"):
        asyncio.run(_read_at_once_checks(net))


async def _publish_order_checks(net: NetworkDir, qos: int) -> None:
    parties = _Parties(net, qos)
    await parties.start()
    ids, t, got = parties.ids, parties.t, parties.got
    sender = t[ids[0]]
    try:
        # Frames of every size, one flush each: small ones go out inside `publish`, a large
        # one leaves part of itself in paho's buffer, and what follows must queue behind it.
        sizes = [300, 400_000, 10, 200_000, 64, 64, 64] * 3
        sent = [i.to_bytes(4, "big") * (size // 4 + 1) for i, size in enumerate(sizes)]
        # QoS 0: connected, `_deliver` publishes directly and nothing waits for the writer
        # task; QoS 1: every frame goes through the queue and aiomqtt's `publish`.
        assert (sender._paho is not None) == (qos == 0)
        put, queued = sender._queue.put, []

        def counting_put(item: bytes) -> None:
            queued.append(item)
            put(item)

        sender._queue.put = counting_put  # type: ignore[method-assign]
        for data in sent:
            sender.send(sender.id, ids[1], data, "REQUEST")
            sender.outbox.flush()
        await _until(lambda: len(got[ids[1]]) == len(sent), 20, "every frame")
        assert got[ids[1]] == sent
        assert len(queued) == (0 if qos == 0 else len(sent))
        assert sender.stats.frames_sent == len(sent) and sender.stats.bad_frames == 0
        assert t[ids[1]].stats.frames_received == len(sent)
    finally:
        await parties.close()


@pytest.mark.real
@pytest.mark.parametrize("qos", [0, 1])
def test_frames_sent_back_to_back_keep_their_order(tmp_path: Path, qos: int) -> None:
    """MqttTransport publishes a frame straight to paho when nothing waits in its queue (QoS
    0), through its queue and writer task otherwise (QoS 1): over TLS, through the broker
    `keys init` configures, frames small and large sent back to back arrive whole and in
    order either way, read through `read_at_once`."""
    net = _private_network(tmp_path)
    with own_broker(net, tmp_path / "logs"):
        asyncio.run(_publish_order_checks(net, qos))
