"""The HTTP transport: persistent WebSocket connections between parties (aiohttp).

Why this exists: replicas on separate machines need a direct, low-overhead link. One
WebSocket per ordered pair of replicas stays open for the life of the process; every binary
frame carries many protocol messages (`node.transport.pack_frames`), so the per-message cost
is a slice of one frame write, not a round trip. A broken link is redialled with backoff
(50 ms doubling to 2 s); frames queued meanwhile wait in a bounded queue.

Topology:
- each replica *dials* every other replica and sends to it only on that connection
  (`GET /ws` on the peer's address); what it receives arrives on the connections the
  others dialled to it;
- clients dial every replica; requests go up and replies come back on the same connection;
- a replica sends to a client on the connection that client dialled (no route otherwise:
  the client retransmits, as PBFT clients do).

Transport security (node.tls): on a TLS network both ends present certificates from the
network CA. The dialler checks that the server's certificate names the node it meant to
reach; the server checks that the hello below comes from the party the client certificate
names (a node cannot borrow another's certificate, nor a client a node's).

Connection authentication: the server sends a random nonce; the dialler answers with its id
and an ECDSA signature over (network id, its id, the server's id, nonce). Unknown ids, bad
signatures and hellos for another network are refused (close code 4003). This only decides
who the connection belongs to (where replies are routed); every message on it is still
authenticated by the replica core (MACs, signatures), exactly as in the simulator.

What it must not know: protocol messages and their meaning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from node.crypto import Keyring
from node.limits import Limits, Refusals, json_depth_ok
from node.membership import Membership
from node.tls import peer_common_name
from node.transport import (
    MAX_FRAME_BYTES,
    Backoff,
    FrameQueue,
    LinkStats,
    Outbox,
    receive_frame,
)

__all__ = ["HttpTransport", "hello_payload"]

log = logging.getLogger("medbft.transport.http")

HEARTBEAT_S = 5.0
HELLO_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3.0
CLOSE_AUTH_FAILED = 4003


def hello_payload(network_id: str, sender: str, server: str, nonce: str) -> bytes:
    """The bytes a dialler signs to prove who it is to `server`."""
    return f"medbft-hello|{network_id}|{sender}|{server}|{nonce}".encode()


class HttpTransport:
    """`send(src, to, data, kind)` over WebSockets; incoming messages go to `on_receive`."""

    def __init__(
        self,
        keyring: Keyring,
        membership: Membership,
        network_id: str,
        loop: asyncio.AbstractEventLoop,
        *,
        dial: dict[str, str],
        before_flush: Callable[[], None] | None = None,
        link_delay_s: float = 0.0,
        limits: Limits | None = None,
        refusals: Refusals | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`dial` maps party id -> base URL (https://host:port, or http:// on a plaintext
        network) of the parties to connect to. `ssl_context` (node.tls.client_context) is
        what we dial with; given, the parties that dial us must also present certificates
        naming them. Refused hellos are counted in `refusals` (reason `hello-...`)."""
        self.keys = keyring
        self.id = keyring.id
        self.membership = membership
        self.network_id = network_id
        self.loop = loop
        self.on_receive: Callable[[bytes], None] = lambda data: None
        self.stats = LinkStats()
        self.outbox = Outbox(loop, self._deliver, before_flush)
        self.link_delay_s = link_delay_s
        """Emulated WAN delay added to every frame we send (experiments; 0 in production)."""
        self._dial_urls = dict(dial)
        self._links: dict[str, FrameQueue] = {p: FrameQueue(self.stats) for p in dial}
        self._connected: dict[str, bool] = {p: False for p in dial}
        self._inbound: dict[str, int] = {}
        self._clients: dict[str, FrameQueue] = {}
        self._client_ids = frozenset(c.id for c in membership.clients)
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self._served: set[web.WebSocketResponse] = set()
        self.rejected_hellos: dict[str, int] = {}
        self.limits = limits or Limits()
        self.refusals = refusals if refusals is not None else Refusals()
        self.ssl_context = ssl_context

    # -- the runtime's interface --------------------------------------------------------------

    def send(self, src: str, to: str, data: bytes, kind: str) -> None:
        self.stats.count_send(kind, len(data))
        self.outbox.put(to, data)

    def _deliver(self, to: str, frame: bytes) -> None:
        queue = self._links.get(to) or self._clients.get(to)
        if queue is None:
            self.stats.dropped_no_route += 1
            return
        self.stats.frames_sent += 1
        if self.link_delay_s > 0:
            self.loop.call_later(self.link_delay_s, queue.put, frame)
        else:
            queue.put(frame)

    def _on_frame(self, frame: bytes) -> None:
        receive_frame(frame, self.stats, self.on_receive)

    # -- lifecycle ----------------------------------------------------------------------------

    def attach(self, app: web.Application) -> None:
        """Serve `GET /ws` (peers and clients dial it) on `app`."""
        app.router.add_get("/ws", self._serve)

    async def start(self) -> None:
        """Open a client session and start dialling every party in `dial`."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl_context or True),
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S))
        for peer, url in sorted(self._dial_urls.items()):
            self._tasks.append(asyncio.create_task(self._dial(peer, url), name=f"dial-{peer}"))

    async def close(self, drain_s: float = 0.5) -> None:
        """Flush what is queued (waiting up to `drain_s` for writers), then close all links."""
        try:
            self.outbox.flush()
        except Exception as exc:  # the node's final commit failed: send nothing more
            log.error("final flush failed: %r", exc)
        deadline = self.loop.time() + drain_s
        while any(q.frames for q in self._links.values()) and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        self._closing = True
        for ws in list(self._served):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"shutting down")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def connected(self) -> dict[str, bool]:
        """Outgoing link state per dialled party."""
        return dict(self._connected)

    def peer_status(self) -> dict[str, dict[str, Any]]:
        return {p: {"connected": self._connected[p], "inbound": self._inbound.get(p, 0),
                    "queued_bytes": self._links[p].size}
                for p in sorted(self._links)}

    # -- dialling -----------------------------------------------------------------------------

    async def _dial(self, peer: str, base_url: str) -> None:
        backoff = Backoff()
        queue = self._links[peer]
        url = base_url.rstrip("/") + "/ws"
        while not self._closing:
            try:
                assert self._session is not None
                async with self._session.ws_connect(
                    url, heartbeat=HEARTBEAT_S, max_msg_size=MAX_FRAME_BYTES, compress=0,
                    autoping=True,
                ) as ws:
                    if self.ssl_context is not None:
                        named = peer_common_name(ws.get_extra_info("peercert"))
                        if named != peer:
                            raise ConnectionError(f"{url} presented a certificate for "
                                                  f"{named!r}, not {peer!r}")
                    await self._send_hello(ws, peer)
                    self._connected[peer] = True
                    backoff.reset()
                    log.info("connected to %s at %s", peer, url)
                    await self._pump(ws, queue)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any link failure: back off
                log.debug("link to %s failed: %r", peer, exc)
            finally:
                if self._connected.get(peer):
                    log.info("lost connection to %s", peer)
                self._connected[peer] = False
            if not self._closing:
                await asyncio.sleep(backoff.next())

    async def _send_hello(self, ws: aiohttp.ClientWebSocketResponse, server: str) -> None:
        msg = await ws.receive(timeout=HELLO_TIMEOUT_S)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"expected a nonce from {server}, got {msg.type!r}")
        nonce = str(json.loads(msg.data)["nonce"])
        signature = self.keys.sign(hello_payload(self.network_id, self.id, server, nonce))
        await ws.send_str(json.dumps({"network": self.network_id, "from": self.id,
                                      "to": server, "sig": signature.hex()}))

    async def _pump(self, ws: Any, queue: FrameQueue) -> None:
        """Write queued frames to `ws` while a reader task handles what comes back; return
        when the connection closes."""
        reader = asyncio.create_task(self._read(ws, queue))
        try:
            while not reader.done():
                frame = await queue.get()
                if frame is None:
                    continue
                try:
                    await ws.send_bytes(frame)
                except BaseException:
                    queue.push_back(frame)
                    raise
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, ws: Any, queue: FrameQueue | None) -> None:
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self._on_frame(msg.data)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    break
        finally:
            if queue is not None:
                queue.wake()

    # -- serving ------------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_FRAME_BYTES,
                                   compress=False)
        await ws.prepare(request)
        if self._closing:
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"shutting down")
            return ws
        self._served.add(ws)
        try:
            transport = request.transport
            named = peer_common_name(transport.get_extra_info("peercert")
                                     if transport is not None else None)
            peer = await self._check_hello(ws, request.remote or "?", named)
            if peer is None:
                return ws
            self._inbound[peer] = self._inbound.get(peer, 0) + 1
            try:
                if peer in self._client_ids:
                    await self._serve_client(ws, peer)
                else:
                    await self._read(ws, None)
            finally:
                self._inbound[peer] -= 1
        finally:
            self._served.discard(ws)
        return ws

    async def _serve_client(self, ws: web.WebSocketResponse, client: str) -> None:
        """A client's connection carries its requests in and our replies out. A newer
        connection from the same client takes over the reply route."""
        queue = FrameQueue(self.stats)
        self._clients[client] = queue
        try:
            await self._pump(ws, queue)
        finally:
            if self._clients.get(client) is queue:
                del self._clients[client]

    async def _check_hello(self, ws: web.WebSocketResponse, remote: str,
                           named: str | None) -> str | None:
        """The authenticated peer, or None after refusing the connection. `named` is the CN
        of the peer's TLS certificate (None without TLS)."""
        nonce = os.urandom(16).hex()
        await ws.send_str(json.dumps({"nonce": nonce, "server": self.id}))
        try:
            msg = await ws.receive(timeout=HELLO_TIMEOUT_S)
            reason, peer = self._hello_problem(msg, nonce)
            if reason is None and self.ssl_context is not None and named != peer:
                reason = "certificate for another party"
        except (TimeoutError, ValueError, KeyError, TypeError, RecursionError) as exc:
            reason, peer = f"bad hello: {type(exc).__name__}", ""
        if reason is None:
            return peer
        self.rejected_hellos[reason] = self.rejected_hellos.get(reason, 0) + 1
        known = peer if peer and self.keys.knows(peer) else ""  # never log a claimed name
        self.refusals.refuse("hello-" + reason.replace(":", "").replace(" ", "-").lower(),
                             f"/ws from {remote}" + (f" ({known})" if known else ""))
        await ws.close(code=CLOSE_AUTH_FAILED, message=reason.encode()[:120])
        return None

    def _hello_problem(self, msg: Any, nonce: str) -> tuple[str | None, str]:
        """(why the hello is refused or None, claimed sender)."""
        if msg.type != aiohttp.WSMsgType.TEXT:
            return "no hello", ""
        if len(msg.data) > self.limits.max_hello_bytes:
            return "hello too large", ""
        if not json_depth_ok(msg.data, self.limits.max_json_depth):
            return "hello too deep", ""
        hello = json.loads(msg.data)
        if not isinstance(hello, dict):
            return "bad hello: not an object", ""
        peer = str(hello["from"])
        if hello.get("network") != self.network_id:
            return "other network", peer
        if hello.get("to") != self.id:
            return "hello for another node", peer
        if not self.keys.knows(peer) or peer == self.id:
            return "unknown party", peer
        signature = bytes.fromhex(str(hello["sig"]))
        if not self.keys.verify(peer, hello_payload(self.network_id, peer, self.id, nonce),
                                signature):
            return "bad hello signature", peer
        return None, peer

