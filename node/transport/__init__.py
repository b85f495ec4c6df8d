"""Real-network transports behind the one interface the runtime uses.

Why this exists: `node.runtime.NodeRuntime` hands every outgoing message to
`transport.send(src, to, data, kind)` and feeds every incoming one to `runtime.receive(data)`.
The simulator implements that with its network model; real mode implements it over
HTTP/WebSocket (`node.transport.http`) or an MQTT broker (`node.transport.mqtt`). Both share
what is here:

- **Framing.** Measured on this project's machine, one aiohttp round trip costs ~120-180 us
  while a MAC costs about 1 us: per-message transport overhead, not cryptography, limits
  throughput. So messages are never sent one per network write. `Outbox` collects everything
  the node sends during one event-loop iteration, per destination, and `pack_frames` packs
  it into frames of length-prefixed messages (u32 big-endian length, then the bytes). One
  WebSocket binary frame or one MQTT publish then carries many protocol messages.
- **Group commit.** `Outbox` calls `before_flush` before any frame leaves. The node server
  commits its SQLite transaction there, so every `Persist` effect of a step is on disk before
  that step's sends go out (and many steps share one commit).
- **Bounds.** Frames and messages have size limits; a malformed frame raises `FrameError` and
  is dropped whole by the caller (counted), never half-delivered.

What it must not know: protocol messages. Frames carry opaque bytes; the replica core
authenticates every message itself (MACs and signatures), so a transport needs no trust.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from node.messages import MAX_MESSAGE_BYTES
from node.runtime import Transport

_log = logging.getLogger("medbft.transport")

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_QUEUED_BYTES",
    "Backoff",
    "FrameError",
    "FrameQueue",
    "LinkStats",
    "Outbox",
    "Transport",
    "pack_frames",
    "receive_frame",
    "unpack_frame",
]

_LEN = struct.Struct(">I")
MAX_FRAME_BYTES = MAX_MESSAGE_BYTES + 64 * 1024
"""Largest frame accepted (one maximal message plus headroom)."""
TARGET_FRAME_BYTES = 256 * 1024
"""Frames are cut near this size so one large frame does not delay the small ones behind it."""
MAX_MESSAGES_PER_FRAME = 65_536
MAX_QUEUED_BYTES = 64 * 1024 * 1024
"""What one link's send queue holds at most (`FrameQueue`)."""


class FrameError(ValueError):
    """A frame from the network is malformed or too large (the peer misbehaved)."""


def pack_frames(messages: list[bytes], target_bytes: int = TARGET_FRAME_BYTES) -> list[bytes]:
    """Pack `messages` into frames of length-prefixed messages, each near `target_bytes`
    (a message larger than that gets a frame of its own). Order is kept."""
    frames: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for data in messages:
        full = len(parts) >= 2 * MAX_MESSAGES_PER_FRAME
        if parts and (size + 4 + len(data) > target_bytes or full):
            frames.append(b"".join(parts))
            parts, size = [], 0
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
        size += 4 + len(data)
    if parts:
        frames.append(b"".join(parts))
    return frames


def unpack_frame(frame: bytes) -> list[bytes]:
    """Split a frame into its messages. Raises FrameError if it is malformed or too large."""
    if len(frame) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    out: list[bytes] = []
    pos, end = 0, len(frame)
    view = memoryview(frame)
    while pos < end:
        if end - pos < 4:
            raise FrameError("truncated length prefix")
        (length,) = _LEN.unpack_from(frame, pos)
        pos += 4
        if length > MAX_MESSAGE_BYTES or pos + length > end:
            raise FrameError(f"message length {length} runs past the frame")
        out.append(bytes(view[pos:pos + length]))
        pos += length
        if len(out) > MAX_MESSAGES_PER_FRAME:
            raise FrameError("too many messages in one frame")
    return out


@dataclass
class LinkStats:
    """Counters of one transport, exported by /metrics."""

    messages_sent: int = 0
    bytes_sent: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    bad_frames: int = 0
    dropped_no_route: int = 0
    dropped_queue_full: int = 0
    sent_by_kind: dict[str, int] = field(default_factory=dict)
    sent_bytes_by_kind: dict[str, int] = field(default_factory=dict)

    def count_send(self, kind: str, nbytes: int) -> None:
        self.messages_sent += 1
        self.bytes_sent += nbytes
        self.sent_by_kind[kind] = self.sent_by_kind.get(kind, 0) + 1
        self.sent_bytes_by_kind[kind] = self.sent_bytes_by_kind.get(kind, 0) + nbytes


def receive_frame(frame: bytes, stats: LinkStats, on_receive: Callable[[bytes], None],
                  unpack: Callable[[bytes], list[bytes]] = unpack_frame,
                  what: str = "frame") -> None:
    """Unpack one received frame (`unpack`: how; FrameError if malformed) and hand each
    message to the runtime; a malformed frame is dropped whole and counted (both transports
    receive this way)."""
    try:
        messages = unpack(frame)
    except FrameError as exc:
        stats.bad_frames += 1
        _log.warning("dropped a malformed %s: %s", what, exc)
        return
    stats.frames_received += 1
    stats.messages_received += len(messages)
    stats.bytes_received += len(frame)
    for data in messages:
        on_receive(data)


class Outbox:
    """Collects outgoing messages per destination during one loop iteration, then flushes them
    as frames: `before_flush()` first (durable storage commits there), then
    `deliver(to, frame)` for each frame."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[str, bytes], None],
        before_flush: Callable[[], None] | None = None,
    ) -> None:
        self.loop = loop
        self.deliver = deliver
        self.before_flush = before_flush
        self._pending: dict[str, list[bytes]] = {}
        self._scheduled = False

    def put(self, to: str, data: bytes) -> None:
        """Queue `data` for `to`; the flush runs once the current callback returns."""
        queued = self._pending.get(to)
        if queued is None:
            self._pending[to] = [data]
        else:
            queued.append(data)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Commit (via `before_flush`) and deliver everything queued so far."""
        self._scheduled = False
        if self.before_flush is not None:
            self.before_flush()
        pending, self._pending = self._pending, {}
        for to, messages in pending.items():
            for frame in pack_frames(messages):
                self.deliver(to, frame)


class Backoff:
    """Reconnection delays: 50 ms, doubling up to 2 s, each with +-25 % jitter (so peers that
    lost a node at the same instant do not retry in lockstep); `reset()` after a success."""

    def __init__(self, first_s: float = 0.05, cap_s: float = 2.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self._next_s = first_s
        self._rng = random.Random()

    def next(self) -> float:
        delay = self._next_s
        self._next_s = min(self.cap_s, self._next_s * 2)
        return delay * self._rng.uniform(0.75, 1.25)

    def reset(self) -> None:
        self._next_s = self.first_s


class FrameQueue:
    """A bounded FIFO of frames for one link, with a wake-up for its writer task. When full the
    oldest frame is dropped (and counted): PBFT recovers lost messages by retransmission and
    state transfer, while an unbounded queue to a dead peer would eat the node's memory."""

    def __init__(self, stats: LinkStats, max_bytes: int = MAX_QUEUED_BYTES) -> None:
        self.frames: deque[bytes] = deque()
        self.size = 0
        self.max_bytes = max_bytes
        self.stats = stats
        self.ready = asyncio.Event()

    def put(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.size += len(frame)
        while self.size > self.max_bytes and len(self.frames) > 1:
            self.size -= len(self.frames.popleft())
            self.stats.dropped_queue_full += 1
        self.ready.set()

    async def get(self) -> bytes | None:
        """The next frame; None when woken with nothing queued (see `wake`)."""
        if not self.frames:
            self.ready.clear()
            await self.ready.wait()
            if not self.frames:
                return None
        frame = self.frames.popleft()
        self.size -= len(frame)
        return frame

    def wake(self) -> None:
        """Wake the writer without a frame (its link closed; it should look)."""
        self.ready.set()

    def push_back(self, frame: bytes) -> None:
        """Return a frame that could not be written (the link broke) to the head."""
        self.frames.appendleft(frame)
        self.size += len(frame)
