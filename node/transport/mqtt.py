"""The MQTT transport: every party has an inbox topic on a broker (aiomqtt).

Why this exists: a consortium often already runs a message broker, and a broker lets nodes
behind NAT or firewalls reach each other through one well-known address; Mosquitto serves one
machine or site, a clustered broker (EMQX, bridged Mosquitto) serves many. A party subscribes
to `<prefix>/inbox/<its id>/+` and sends to another by publishing to
`<prefix>/inbox/<their id>/<its id>`: the sender is in the topic, so the broker's ACL can
make every party publish only under its own name (node.tls writes such an ACL). Publishes
carry frames of many protocol messages (`node.transport.pack_frames`).

Fan-out: a replica multicasts most of what it sends (PRE-PREPARE, PREPARE, COMMIT,
CHECKPOINT, ...) to every other replica, and n - 1 publishes of nearly the same frame cost the
sender, the broker and the event loop n - 1 times what one would. So a replica also
subscribes to `<prefix>/all/+` and publishes such a multicast **once**, to its fan-out topic
`<prefix>/all/<its id>`; copies to some replicas only, and everything to or from clients, go
to inboxes as before. The copies of a multicast differ only in their last bytes (each carries
a MAC for its receiver), so a fan-out frame holds each message once as a *record*: the shared
head, then every receiver's tail in the order of the membership's replicas (without the
sender); a receiver keeps the head and its own tail, exactly the bytes a publish to its inbox
would have carried. Within one flush, order is kept per topic (each inbox, the fan-out), as
it was per destination; PBFT does not rely on order between messages (it is built for a
network that reorders them). Counters stay comparable with inbox sends: every copy counts
as a message sent (with its bytes), every publish as one frame.
MQTT 3.1.1 has no "no local" option, so a replica subscribes to each other replica's fan-out
topic by name (`<prefix>/all/<other>`, n - 1 topics in one SUBSCRIBE) rather than to
`<prefix>/all/+`, which would bring back every multicast it sends (a quarter of what a
replica received at n = 4). After each (re)connection a replica also subscribes to its own
fan-out topic, publishes an empty probe there and fans out only once the probe comes back,
then leaves that topic: under a broker whose ACL predates the fan-out (or that refuses it) its
multicasts keep going to inboxes and the network keeps working. Its own publishes that arrive
before the broker has taken the unsubscription are recognised by the sender in the topic and
dropped unread (`echoes`, not bad frames).

QoS choice: **QoS 0 (at most once) by default.** PBFT already tolerates lost and duplicated
messages (clients retransmit, replicas re-send stuck PREPAREs/COMMITs, lagging replicas fetch
batches and state), so the broker's acknowledgements would buy nothing the protocol does not
already do, while QoS 1 adds a PUBACK per publish and QoS 2 a four-way handshake, and neither
survives a crashed *subscriber* with a clean session anyway. QoS 1 is available (`qos=1`) for
brokers that drop QoS 0 traffic under pressure; duplicates it may cause are harmless.

Sessions are clean (nothing is queued for a node while it is down: what it missed it gets by
state transfer, as after any crash). The connection is re-established with backoff; frames
published meanwhile wait in a bounded queue.

Security: the broker sees every message, but it cannot forge one. Every message is
authenticated by the replica core (MACs, signatures), so a message published by anyone else
into an inbox is dropped as "bad MAC" or "unknown sender". On a TLS network (the default,
node.tls) the broker also keeps everyone else out: `mqtts://` with a client certificate,
per-party passwords, no anonymous clients, and an ACL under which a party reads only its own
inbox and the replicas' fan-out topics, publishes only under its own name, and only replicas
may publish to the fan-out. Client ids are random per connection, so nobody can kick a node
off the broker by connecting under its id.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import aiomqtt

if TYPE_CHECKING:
    from node.netdir import NetworkDir

from node.transport import (
    Backoff,
    FrameError,
    FrameQueue,
    LinkStats,
    Outbox,
    receive_frame,
    unpack_frame,
)

__all__ = [
    "BrokerSettings",
    "MqttTransport",
    "fanout_topic",
    "inbox_topic",
    "pack_fanout_record",
    "unpack_fanout_record",
]

log = logging.getLogger("medbft.transport.mqtt")

MAX_QUEUED_INCOMING = 10_000
FANOUT = "#"
"""The Outbox destination of fan-out records: never a party's id, since `#` (a wildcard) cannot
be in a topic one publishes to."""
_RECORD = struct.Struct(">HH")  # a fan-out record's copies and tail length


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to log in. Build from a URL with `from_url`."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    qos: int = 0
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def from_url(cls, url: str, *, username: str | None = None, password: str | None = None,
                 ca_file: str | None = None, insecure: bool = False, qos: int = 0,
                 cert_file: str | None = None, key_file: str | None = None) -> BrokerSettings:
        """`mqtt://[user[:password]@]host[:port]` or `mqtts://...` (TLS, default port 8883).
        Explicit `username`/`password` override the URL's. Raises ValueError if malformed."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"broker URL must start with mqtt:// or mqtts://; got {url!r}")
        if not parts.hostname:
            raise ValueError(f"broker URL has no host: {url!r}")
        if qos not in (0, 1, 2):
            raise ValueError(f"MQTT QoS must be 0, 1 or 2; got {qos}")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname, port=parts.port or (8883 if tls else 1883), tls=tls,
            username=username or (unquote(parts.username) if parts.username else None),
            password=password or (unquote(parts.password) if parts.password else None),
            ca_file=ca_file, insecure=insecure, qos=qos, cert_file=cert_file,
            key_file=key_file,
        )

    @classmethod
    def for_party(cls, net: NetworkDir, party: str, url: str | None = None, *,
                  qos: int | None = None, username: str | None = None,
                  password: str | None = None, ca_file: str | None = None,
                  insecure: bool = False) -> BrokerSettings:
        """How `party` reaches `net`'s broker: network.json's URL and QoS unless overridden,
        and on a TLS network the party's broker password (keys/<party>.mqtt-password), its
        certificate, and the network CA. Raises ValueError (NetworkError) if a file is
        missing."""
        mqtt = net.settings["mqtt"]
        cert = key = None
        if net.tls:
            cert_path, key_path = net.tls_files(party)
            cert, key = str(cert_path), str(key_path)
            ca_file = ca_file or str(net.ca_path)
            username = username or party
            password = password or net.broker_password(party)
        return cls.from_url(url or str(mqtt["broker"]), username=username, password=password,
                            ca_file=ca_file, insecure=insecure,
                            qos=int(mqtt.get("qos", 0)) if qos is None else qos,
                            cert_file=cert, key_file=key)

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def describe(self) -> str:
        """The broker address without credentials (for logs and /status)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def inbox_topic(prefix: str, party: str, sender: str = "+") -> str:
    """Where `sender` publishes to `party` (the default `+`: what `party` subscribes to)."""
    return f"{prefix}/inbox/{party}/{sender}"


def fanout_topic(prefix: str, sender: str = "+") -> str:
    """Where replica `sender` publishes to every other replica (the default `+`: what every
    replica subscribes to)."""
    return f"{prefix}/all/{sender}"


def pack_fanout_record(copies: tuple[bytes, ...], tail: int) -> bytes | None:
    """One fan-out record for `copies` (one per receiver, in the receivers' order): u16 number
    of copies, u16 tail length T, the bytes all copies share but their last T, then each
    copy's last T bytes. T is a guess (any T works if the copies agree on all but their last
    T bytes; the caller grows it); None if the copies differ in length or earlier than that,
    or there are too many."""
    first = copies[0]
    size = len(first)
    cut = size - tail
    if cut < 0 or len(copies) > 0xFFFF or tail > 0xFFFF:
        return None
    head = memoryview(first)[:cut]
    for data in copies:
        if len(data) != size or not data.startswith(head):
            return None
    return b"".join([_RECORD.pack(len(copies), tail), head, *[data[cut:] for data in copies]])


def unpack_fanout_record(record: bytes, index: int, copies: int) -> bytes:
    """Receiver `index`'s copy out of a record of `copies` copies. Raises FrameError if the
    record is malformed or holds another number of copies."""
    if len(record) < _RECORD.size:
        raise FrameError("truncated fan-out record")
    count, tail = _RECORD.unpack_from(record)
    end = len(record) - count * tail
    if count != copies or end < _RECORD.size:
        raise FrameError(f"fan-out record of {count} copies of {tail} bytes in "
                         f"{len(record)} bytes, for {copies} receivers")
    start = end + index * tail
    view = memoryview(record)
    return b"".join((view[_RECORD.size:end], view[start:start + tail]))


def write_at_once(client: aiomqtt.Client) -> bool:
    """Make `client`'s QoS 0 publishes go to the socket inside `publish`, in the event loop's
    thread, instead of one loop round trip later. Returns whether it could (False leaves the
    client as aiomqtt made it).

    Why: paho-mqtt queues every publish and asks to be told when the socket is writable;
    aiomqtt answers that request with `call_soon_threadsafe(add_writer, ...)` (a write to the
    loop's wake-up pipe, because paho may ask from the thread aiomqtt connects in), then the
    loop registers the socket, wakes when it is writable (nearly always at once), writes,
    and unregisters it, and `publish` waits for paho's `on_publish` in yet another round.
    For a frame of a few hundred bytes that is several system calls and three passes of the
    loop where one `send` would do. Here, when paho asks from the loop's thread, the queued
    packets are written at once (paho's own `loop_write`, which aiomqtt's writer callback
    calls too); only what the socket would not take waits for writability as before, and a
    request from another thread is passed on unchanged.

    How: it wraps the paho client's `on_socket_register_write`, which aiomqtt keeps in its
    private `_client` attribute (aiomqtt 2.x; tests/test_real_mqtt.py checks that a publish
    is written without arming the loop's writer, and that a large one still goes out whole,
    in order). Only for QoS 0: paho sends a QoS 1 or 2 publish while holding a lock that its
    write path may take again."""
    paho = getattr(client, "_client", None)
    register = getattr(paho, "on_socket_register_write", None)
    if paho is None or register is None or not hasattr(paho, "loop_write"):
        return False
    loop_thread = threading.get_ident()

    def register_write(mqttc: Any, userdata: Any, sock: Any) -> None:
        if threading.get_ident() == loop_thread:
            mqttc.loop_write()  # writes what the socket takes now
            if not mqttc.want_write():
                return
            # Left over: paho still counts itself registered, so it is up to us to arm the
            # writer, as aiomqtt would have.
        register(mqttc, userdata, sock)

    paho.on_socket_register_write = register_write
    return True


def _quiet(task: asyncio.Task[Any]) -> None:
    """A done callback that retrieves a background task's outcome (a failure is logged at
    debug level: the connection it belonged to is reported as gone by its own reader)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("background broker call failed: %r", task.exception())


def read_at_once(client: aiomqtt.Client, handle: Callable[[str, object], None]) -> bool:
    """Hand every message `client` reads to `handle(topic, payload)` inside paho's read, in
    the event loop's thread, instead of through aiomqtt's message queue. Returns whether it
    could (False leaves the client as aiomqtt made it: read `client.messages`).

    Why: aiomqtt turns each message paho reads into its own `Message` (validating the topic
    again), puts it on an asyncio queue, and its iterator takes it off by creating a task
    for `queue.get()` and waiting on that task and the disconnection with `asyncio.wait`,
    per message: over a fifth of what a node spent in Python per received frame at one
    request in flight (py-spy, 1 x 1 key-value over TLS). Here paho's `on_message` calls
    `handle` directly, as the HTTP transport hands a frame on from its read loop. The iterator
    is still the way to learn of a disconnection (it raises), and now receives nothing.

    How: it sets `on_message` on the paho client aiomqtt keeps in its private `_client`
    attribute (aiomqtt 2.x, like `write_at_once`; tests/test_real_mqtt.py checks that frames
    arrive this way, in order, and that aiomqtt's queue stays empty). A message paho reads
    outside the loop's thread is passed to the loop with `call_soon_threadsafe`; one whose
    topic is not UTF-8 is handed on as ("", None). `handle` must not raise: paho would
    re-raise into the loop's reader callback."""
    paho = getattr(client, "_client", None)
    if paho is None or not hasattr(paho, "on_message"):
        return False
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()

    def on_message(mqttc: Any, userdata: Any, message: Any) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # not a topic any broker should pass on
            topic, payload = "", None  # `handle` counts it as a bad frame
        else:
            payload = message.payload
        if threading.get_ident() == loop_thread:
            handle(topic, payload)
        else:
            loop.call_soon_threadsafe(handle, topic, payload)

    paho.on_message = on_message
    return True


class MqttTransport:
    """`send(src, to, data, kind)` as publishes to `to`'s inbox, and a replica's `multicast` to
    every other replica as one publish to its fan-out topic; what arrives in our inbox (and,
    for a replica, from the other replicas' fan-out topics) goes to `on_receive`.

    `replicas` are the membership's replica ids in order; a party among them is a replica and
    fans out, any other party (a client) uses inboxes only."""

    def __init__(
        self,
        party: str,
        broker: BrokerSettings,
        topic_prefix: str,
        loop: asyncio.AbstractEventLoop,
        *,
        replicas: Iterable[str] = (),
        before_flush: Callable[[], None] | None = None,
        link_delay_s: float = 0.0,
    ) -> None:
        self.id = party
        self.broker = broker
        self.prefix = topic_prefix
        self.loop = loop
        self.on_receive: Callable[[bytes], None] = lambda data: None
        self.stats = LinkStats()
        self.outbox = Outbox(loop, self._deliver, before_flush)
        self.link_delay_s = link_delay_s
        """Emulated WAN delay added to every frame we send (experiments; 0 in production)."""
        self._queue = FrameQueue(self.stats)
        self._topics: dict[str, str] = {FANOUT: fanout_topic(topic_prefix, party)}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._closing = False
        ids = tuple(replicas)
        self.is_replica = party in ids
        self._others = tuple(r for r in ids if r != party)
        """Whom a fan-out reaches, in the order of the records' tails."""
        self._fanout_index = {
            sender: [r for r in ids if r != sender].index(party)
            for sender in ids if sender != party} if self.is_replica else {}
        """Fan-out sender -> our tail's place in its records."""
        self._fanout_prefix = fanout_topic(topic_prefix, "")
        self._tail = 16
        """Tail length to try first (grown to what the copies need: their MAC, 32 bytes)."""
        self.fanout_ready = False
        """True while our probe has come back on this connection: the broker lets us fan out."""
        self.fanout_frames_sent = 0
        """Publishes to our fan-out topic (each also in `stats.frames_sent`, once)."""
        self.echoes = 0
        """Our own fan-out publishes the broker sent back to us (dropped unread)."""
        self._paho: Any = None
        """While connected with `write_at_once` (QoS 0): the paho client, which `_deliver`
        publishes to directly when nothing is queued (one frame need not wake `_write`)."""
        self._reading: aiomqtt.Client | None = None
        """The connection messages come from (set before it subscribes to anything)."""
        self._read_direct = False
        """Whether paho hands them to `_on_message` itself (`read_at_once`)."""
        self._leaving: asyncio.Task[None] | None = None
        """Our unsubscription from our own fan-out topic, once the probe came back."""

    # -- the runtime's interface --------------------------------------------------------------

    def send(self, src: str, to: str, data: bytes, kind: str) -> None:
        self.stats.count_send(kind, len(data))
        self.outbox.put(to, data)

    def multicast(self, src: str, to: tuple[str, ...], data: tuple[bytes, ...],
                  kind: str) -> None:
        """To every other replica (in membership order): one record on the fan-out topic.
        Anything else, or before the broker has shown it allows our fan-out: `send` per copy.
        Either way each copy counts as one message sent."""
        if self.fanout_ready and len(to) > 1 and to == self._others:
            tail = self._tail
            record = pack_fanout_record(data, tail)
            while record is None and tail < len(data[0]):
                tail *= 2
                record = pack_fanout_record(data, tail)
            if record is not None:
                self._tail = tail
                count = self.stats.count_send
                for copy in data:
                    count(kind, len(copy))
                self.outbox.put(FANOUT, record)
                return
        for dest, copy in zip(to, data, strict=True):
            self.send(src, dest, copy, kind)

    def _deliver(self, to: str, frame: bytes) -> None:
        topic = self._topics.get(to)
        if topic is None:
            topic = self._topics[to] = inbox_topic(self.prefix, to, self.id)
        self.stats.frames_sent += 1
        if to == FANOUT:
            self.fanout_frames_sent += 1
        if self.link_delay_s > 0:
            self.loop.call_later(self.link_delay_s, self._queue.put,
                                 topic.encode() + b"\x00" + frame)
            return
        paho = self._paho
        # Nothing waits in the queue, so a publish now keeps the order; it goes to the socket
        # inside `publish` (`write_at_once`), or, what the socket does not take, after.
        if paho is not None and not self._queue.frames and paho.publish(topic, frame).rc == 0:
            return
        self._queue.put(topic.encode() + b"\x00" + frame)

    def _on_frame(self, frame: bytes) -> None:
        receive_frame(frame, self.stats, self.on_receive)

    def _on_fanout(self, sender: str, frame: bytes) -> None:
        """A frame from another replica's fan-out topic: unpacked whole and our copy of each
        record handed on, or dropped whole (counted) if malformed."""
        if not frame:  # its probe
            return
        index = self._fanout_index.get(sender)
        copies = len(self._others)

        def our_copies(frame: bytes) -> list[bytes]:
            if index is None:
                raise FrameError(f"fan-out from {sender!r}, not a replica")
            return [unpack_fanout_record(record, index, copies)
                    for record in unpack_frame(frame)]

        receive_frame(frame, self.stats, self.on_receive, our_copies, "fan-out frame")

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.id}")

    async def wait_subscribed(self, timeout_s: float) -> bool:
        """True once our inbox subscription is active (within `timeout_s`)."""
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self, drain_s: float = 0.5) -> None:
        try:
            self.outbox.flush()
        except Exception as exc:  # the node's final commit failed: send nothing more
            log.error("final flush failed: %r", exc)
        deadline = self.loop.time() + drain_s
        while self._queue.frames and self._subscribed.is_set() and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def connected(self) -> dict[str, bool]:
        return {"broker": self._subscribed.is_set()}

    def peer_status(self) -> dict[str, dict[str, Any]]:
        return {"broker": {"connected": self._subscribed.is_set(),
                           "address": self.broker.describe(),
                           "queued_bytes": self._queue.size,
                           "fanout": self.fanout_ready}}

    # -- the connection -----------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        b = self.broker
        return aiomqtt.Client(
            b.host, b.port, username=b.username, password=b.password,
            # Random per connection: a predictable id would let anyone who can reach the
            # broker disconnect us by connecting under it.
            identifier=f"medbft-{secrets.token_hex(8)}",
            clean_session=True, keepalive=15, tls_context=b.tls_context(),
            max_queued_incoming_messages=MAX_QUEUED_INCOMING, timeout=5,
            # Nagle's algorithm would hold small frames back waiting for ACKs that the peer
            # delays (~40 ms per hop); paho does not switch it off, so we do.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _run(self) -> None:
        backoff = Backoff()
        inbox = inbox_topic(self.prefix, self.id)
        fanout = fanout_topic(self.prefix)
        qos = self.broker.qos
        while not self._closing:
            try:
                async with self._client() as client:
                    # Before anything is subscribed, so that every message takes the one path.
                    self._reading = client
                    self._read_direct = read_at_once(client, self._on_message)
                    direct = qos == 0 and write_at_once(client)
                    if self.is_replica:
                        # Each other replica's fan-out topic, and our own until the probe
                        # comes back (`_read` then leaves it): the broker does not send a
                        # replica its own multicasts, which `+` would.
                        granted = await client.subscribe(
                            [(fanout_topic(self.prefix, r), qos)
                             for r in (*self._others, self.id)])
                        if any(getattr(code, "value", code) >= 0x80 for code in granted):
                            log.warning("the broker refused a subscription to %s (an ACL "
                                        "from before the fan-out?): multicasts go to inboxes",
                                        fanout)
                    await client.subscribe(inbox, qos=qos)
                    self._subscribed.set()
                    backoff.reset()
                    log.info("subscribed to %s on %s", inbox, self.broker.describe())
                    if self.is_replica:  # the probe: we fan out once it comes back (`_read`)
                        await client.publish(self._topics[FANOUT], b"", qos=qos)
                    self._paho = client._client if direct else None
                    await self._pump(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker down or gone: retry
                log.warning("broker connection failed: %r", exc)
            finally:
                self._paho = None
                self._subscribed.clear()
                self.fanout_ready = False
            if not self._closing:
                await asyncio.sleep(backoff.next())

    async def _pump(self, client: aiomqtt.Client) -> None:
        """Read our inbox and publish queued frames until either side fails."""
        tasks = {asyncio.create_task(self._read(client)), asyncio.create_task(self._write(client))}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result

    async def _read(self, client: aiomqtt.Client) -> None:
        """Take what `client` receives until it disconnects (the iterator raises): through
        `_on_message`, called by paho itself (`read_at_once`, set up in `_run`) or, where that
        was not possible, from aiomqtt's iterator."""
        async for message in client.messages:  # read directly: only the disconnection
            self._on_message(message.topic.value, message.payload)
        if self._read_direct:  # the iterator ends only with an error; should it not, say so
            raise aiomqtt.MqttError("the broker's messages ended")

    def _on_message(self, topic: str, payload: object) -> None:
        """One message from the broker: an inbox frame, another replica's fan-out, or our own
        fan-out echoed back (dropped unread; the first is the probe, and we then leave the
        topic)."""
        if self.is_replica and topic.startswith(self._fanout_prefix):
            sender = topic[len(self._fanout_prefix):]
            if sender == self.id:  # our own, back from the broker: dropped unread
                self.echoes += 1
                if not self.fanout_ready and self._reading is not None:  # the probe
                    self.fanout_ready = True
                    log.info("fanning out on %s", topic)
                    # No more echoes of our multicasts (the task is kept: the loop holds
                    # tasks weakly, and its failure means the connection went).
                    self._leaving = self.loop.create_task(self._reading.unsubscribe(topic))
                    self._leaving.add_done_callback(_quiet)
            elif isinstance(payload, (bytes, bytearray)):
                self._on_fanout(sender, bytes(payload))
            else:
                self.stats.bad_frames += 1
        elif isinstance(payload, (bytes, bytearray)):
            self._on_frame(bytes(payload))
        else:
            self.stats.bad_frames += 1

    async def _write(self, client: aiomqtt.Client) -> None:
        qos = self.broker.qos
        while True:
            item = await self._queue.get()
            if item is None:
                continue
            topic, _, frame = item.partition(b"\x00")
            try:
                await client.publish(topic.decode(), frame, qos=qos)
            except BaseException:
                self._queue.push_back(item)
                raise
