"""The envelope: what travels on a link, written and read on every message's path.

Why this exists: every message a replica sends or receives is one `Envelope` (the sender's
id, one encoded message and a MAC for the receiver; see `node.messages.Envelope`). Sealing
and opening it, and decoding an authenticated payload once for all its receivers, are the
hottest code outside the replica's handlers, so they live here, apart from the message
classes: plain typed code that the optional compiled build (`medbft native build`) compiles
with the handlers that call it. The bytes
are those `encode(Envelope(...))` gives, and `open_envelope` refuses exactly what `decode`
refuses (tests/test_messages.py compares them).

What it must not know: keys (the MAC is computed and checked in `node.crypto`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from node.crypto import MAC_BYTES
from node.messages import _MAX_STR, _U32, MAX_MESSAGE_BYTES, DecodeError, Envelope, Message, decode

__all__ = ["SHARED_DECODES", "decode_authenticated", "envelope_head", "envelope_prefix",
           "open_envelope", "seal_envelope"]

# Final: compiled, a Final module constant is a C static; any other module-level name is a
# dictionary lookup on every use.
_TAG: Final = Envelope.TAG
_MAX_BYTES: Final = MAX_MESSAGE_BYTES
_MAX_SENDER: Final = _MAX_STR
_PACK_U32: Final = _U32.pack
_MAC_LEN: Final = _U32.pack(MAC_BYTES)  # the length field before every replica's MAC


def envelope_prefix(sender: str) -> bytes:
    """The constant start of every Envelope `sender` sends (tag and sender field)."""
    raw = sender.encode()
    return bytes((_TAG,)) + _PACK_U32(len(raw)) + raw


def seal_envelope(prefix: bytes, payload: bytes, mac: bytes) -> bytes:
    """encode(Envelope(sender, payload, mac)) given `envelope_prefix(sender)`: the hot path
    of every send, without building the dataclass."""
    return b"".join((prefix, _PACK_U32(len(payload)), payload, _PACK_U32(len(mac)), mac))


def envelope_head(prefix: bytes, payload: bytes) -> bytes:
    """seal_envelope(prefix, payload, mac) without the MAC bytes: every copy of a multicast
    starts with the same head, so the head is built once and each copy is head + its MAC
    (a MAC is always MAC_BYTES long)."""
    return b"".join((prefix, _PACK_U32(len(payload)), payload, _MAC_LEN))


#: How many authenticated payloads `decode_authenticated` remembers (oldest forgotten first).
SHARED_DECODES: Final = 4096
# An OrderedDict, because evicting the oldest key of a plain dict (`next(iter(d))`) walks
# over every slot deleted before it: O(evictions so far), which made long runs slower.
_shared: Final[OrderedDict[bytes, Message]] = OrderedDict()


def decode_authenticated(payload: bytes) -> Message:
    """decode(payload), remembered for the next receiver of the same bytes.

    A multicast carries the same payload to n - 1 receivers; in the simulator they share one
    process, so each payload is decoded once, not n - 1 times. Only call this after the
    payload's MAC or signature was checked: unauthenticated bytes must never fill the memo.
    Messages are frozen and hold only tuples, so sharing one object is safe; the memo changes
    speed, never results (decode is a pure function of the bytes).
    """
    msg = _shared.get(payload)
    if msg is None:
        msg = decode(payload)
        if len(_shared) >= SHARED_DECODES:
            _shared.popitem(last=False)
        _shared[payload] = msg
    return msg


def open_envelope(data: bytes) -> tuple[str, bytes, bytes]:
    """(sender, payload, mac) of an encoded Envelope; DecodeError if `data` is not exactly
    one. Equivalent to decode() followed by a type check, on the receive hot path: three
    length-prefixed fields read in place, without building the dataclass."""
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    if not size or data[0] != _TAG:
        raise DecodeError("not an envelope")
    if size > _MAX_BYTES:
        raise DecodeError("message too large")
    if size < 13:
        raise DecodeError("truncated Envelope")
    # Big-endian u32 lengths read byte by byte: compiled, each is a few machine
    # instructions where `Struct.unpack_from` is a Python call building a tuple.
    pos = 5 + ((data[1] << 24) | (data[2] << 16) | (data[3] << 8) | data[4])
    if pos + 4 > size or pos - 5 > _MAX_SENDER:
        raise DecodeError("truncated or oversized Envelope sender")
    try:
        sender = data[5:pos].decode()
    except UnicodeDecodeError as exc:
        raise DecodeError("string field is not UTF-8") from exc
    start = pos + 4
    pos = start + ((data[pos] << 24) | (data[pos + 1] << 16) | (data[pos + 2] << 8)
                   | data[pos + 3])
    if pos + 4 > size:
        raise DecodeError("truncated Envelope payload")
    payload = data[start:pos]
    start = pos + 4
    end = start + ((data[pos] << 24) | (data[pos + 1] << 16) | (data[pos + 2] << 8)
                   | data[pos + 3])
    if end != size:
        raise DecodeError("Envelope MAC does not end the message")
    return sender, payload, data[start:end]
