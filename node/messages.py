"""PBFT messages and their one canonical byte encoding.

Why this exists: every replica, client and checker must agree on the exact bytes of a message,
because digests, signatures, MACs and the byte counts we report are all computed over them.
So each message type has exactly one encoding: a one-byte type tag, then its fields in
declaration order (unsigned 64-bit big-endian integers, length-prefixed bytes and UTF-8
strings, nested messages, length-prefixed tuples). No maps, no optional fields, no floats:
nothing whose encoding could vary between machines or Python versions.

What it must not know: keys, the network, replica state. Authentication lives in `crypto`
and `envelope`; this module only turns values into bytes and back.

Decoding takes untrusted bytes: any malformed input (truncated, trailing bytes, unknown tag,
oversized field, bad UTF-8, integer out of range) raises `DecodeError` and nothing else.
Names follow Castro & Liskov, OSDI '99 §4.

How the classes are written: each message is a plain class with its constructor, field
tuple and codec written out, straight-line (runs of integers in one struct call), rather than
generated at import. Written out, they are what the optional compiled build (`medbft native
build`) turns into native classes: a handler reads a field as a C struct member instead of
through Python's attribute lookup, and a message is built without an interpreted
`__init__` (docs/benchmarks.md, "Native messages"). Every message is immutable: compiled,
its fields are `Final` (read-only attributes); in pure Python `_register` installs a
`__setattr__` that refuses them and an `__init__` that stores through the slots. A message
behaves as a frozen dataclass did: positional or keyword construction, equality and hashing
by value and class, the dataclass `repr`; `replace` stands in for `dataclasses.replace`.
tests/test_messages.py checks every encoding against the format written out field by field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import types
from collections import OrderedDict
from typing import Any, ClassVar, Final, TypeVar, cast

__all__ = [
    "MAX_MESSAGE_BYTES",
    "NULL_BATCH",
    "Batch",
    "BatchData",
    "Checkpoint",
    "Commit",
    "CommittedBatch",
    "DecodeError",
    "Envelope",
    "FetchBatch",
    "FetchState",
    "Message",
    "NewView",
    "PrePrepare",
    "Prepare",
    "Reply",
    "Request",
    "SeqDigest",
    "StateData",
    "ViewChange",
    "decode",
    "digest_of",
    "encode",
    "kind_of",
    "message_class",
    "replace",
]

MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
"""Hard limit on one encoded message: a decoder never allocates more than this."""

_MAX_ITEMS: Final = 1 << 16
_MAX_STR: Final = 1024
_U64: Final = struct.Struct(">Q")
_U32: Final = struct.Struct(">I")
# Runs of a message's leading integers (after its tag byte, B) or inner ones, in one call.
_S_BQ: Final = struct.Struct(">BQ")
_S_BQQ: Final = struct.Struct(">BQQ")
_S_BQQQQ: Final = struct.Struct(">BQQQQ")
_S_QQ: Final = struct.Struct(">QQ")
_S_QQQQ: Final = struct.Struct(">QQQQ")


class DecodeError(ValueError):
    """Raised when untrusted bytes are not a valid encoding of a known message."""


# ---------------------------------------------------------------------------------------------
# Field codecs: an encoder appends bytes to a list, a decoder reads (buf, pos) -> (value, pos).


def _dec_int(buf: bytes, pos: int) -> tuple[int, int]:
    end = pos + 8
    if end > len(buf):
        raise DecodeError("truncated integer")
    value: int = _U64.unpack_from(buf, pos)[0]
    return value, end


def _enc_bytes(value: bytes, out: list[bytes]) -> None:
    out.append(_U32.pack(len(value)))
    out.append(value)


def _dec_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(buf):
        raise DecodeError("truncated length")
    start = pos + 4
    end = start + _U32.unpack_from(buf, pos)[0]
    if end > len(buf):
        raise DecodeError("truncated bytes field")
    return buf[start:end], end


def _dec_str(buf: bytes, pos: int) -> tuple[str, int]:
    raw, end = _dec_bytes(buf, pos)
    if len(raw) > _MAX_STR:
        raise DecodeError("string field too long")
    try:
        return raw.decode(), end
    except UnicodeDecodeError as exc:
        raise DecodeError("string field is not UTF-8") from exc


def _dec_count(buf: bytes, pos: int) -> int:
    if pos + 4 > len(buf):
        raise DecodeError("truncated count")
    count: int = _U32.unpack_from(buf, pos)[0]
    if count > _MAX_ITEMS:
        raise DecodeError("too many items")
    return count


def _enc_bytes_items(items: tuple[bytes, ...], out: list[bytes]) -> None:
    out.append(_U32.pack(len(items)))
    for item in items:
        _enc_bytes(item, out)


def _dec_bytes_items(buf: bytes, pos: int) -> tuple[tuple[bytes, ...], int]:
    count = _dec_count(buf, pos)
    pos += 4
    items = []
    for _ in range(count):
        item, pos = _dec_bytes(buf, pos)
        items.append(item)
    return tuple(items), pos


def _enc_nested(value: Message, out: list[bytes], cls: type[Message]) -> None:
    if type(value) is not cls:
        raise TypeError(f"expected {cls.__name__}, got {type(value).__name__}")
    value._encode_into(out)


def _enc_items(items: tuple[Message, ...], out: list[bytes], cls: type[Message]) -> None:
    out.append(_U32.pack(len(items)))
    for item in items:
        _enc_nested(item, out, cls)


_M = TypeVar("_M", bound="Message")


def _dec_items(buf: bytes, pos: int, cls: type[_M]) -> tuple[tuple[_M, ...], int]:
    count = _dec_count(buf, pos)
    pos += 4
    items: list[_M] = []
    for _ in range(count):
        if pos >= len(buf) or buf[pos] != cls.TAG:
            raise DecodeError(f"expected nested {cls.__name__}")
        item, pos = cls._decode_from(buf, pos + 1)
        items.append(cast(_M, item))  # cls's decoder returns a cls
    return tuple(items), pos


def _dec_requests(buf: bytes, pos: int) -> tuple[tuple[Request, ...], int]:
    """_dec_items for a batch's requests, calling the decoder directly (the hot one)."""
    count = _dec_count(buf, pos)
    pos += 4
    items = []
    for _ in range(count):
        if pos >= len(buf) or buf[pos] != 1:
            raise DecodeError("expected nested Request")
        item, pos = Request._decode_from(buf, pos + 1)
        items.append(item)
    return tuple(items), pos


def _dec_batch(buf: bytes, pos: int) -> tuple[Batch, int]:
    if pos >= len(buf) or buf[pos] != 2:
        raise DecodeError("expected nested Batch")
    return Batch._decode_from(buf, pos + 1)


# ---------------------------------------------------------------------------------------------
# The base classes


_BY_TAG: dict[int, type[Message]] = {}


class Message:
    """Base of every message: an immutable value with a unique TAG, its fields in FIELDS."""

    __slots__ = ()
    TAG: ClassVar[int] = 0
    KIND: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[Any, ...]:
        """The fields' values, in FIELDS order."""
        raise NotImplementedError

    def _encode_into(self, out: list[bytes]) -> None:
        raise NotImplementedError

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[Message, int]:
        """The message whose fields start at `pos` (after its tag), and the position after
        it."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Message)
        return self._values() == other._values()

    def __ne__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Message)
        return self._values() != other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        pairs = zip(self.FIELDS, self._values(), strict=True)
        fields = ", ".join(f"{name}={value!r}" for name, value in pairs)
        return f"{type(self).__name__}({fields})"


class _KeepsDigest(Message):
    """Base of a message that remembers its digest once computed (in a slot that is not a
    field: not encoded, compared, hashed or copied by `replace`). A message is immutable, so
    the digest of its fields never changes; every replica that holds the same object (the
    simulator shares one decoded message among its receivers) computes it once."""

    __slots__ = ("_digest",)
    _digest: bytes


class _KeepsWire(_KeepsDigest):
    """Base of a message that also keeps the bytes it was decoded from, its canonical
    encoding (decoding is strict, so re-encoding a decoded message gives exactly the bytes it
    came from). Encoding it again, inside a batch or a block record, appends those bytes
    instead of encoding each field anew. Only decoding sets them: a message built in code is
    encoded field by field, as before."""

    __slots__ = ("_checked", "_wire")
    _wire: bytes
    _checked: tuple[bytes, bool]


def _probe() -> None:
    """Compiled, this is not a Python function: how the module knows it was compiled."""


_COMPILED: Final = not isinstance(_probe, types.FunctionType)


def _register(cls: type[Message]) -> None:
    """Register `cls` under its TAG; in pure Python, also make its instances immutable."""
    assert cls.TAG not in _BY_TAG, f"duplicate tag {cls.TAG}"
    _BY_TAG[cls.TAG] = cls
    if not _COMPILED:
        _freeze(cls)


def _freeze(cls: type[Message]) -> None:
    """Pure Python: refuse assignments to `cls`'s fields (as a frozen dataclass does) and
    replace its `__init__` by one that stores each field through its slot's descriptor.

    Why the descriptor: with `__setattr__` refusing fields, `__init__` must store around it;
    `object.__setattr__` finds the slot by name each time, the descriptor's `__set__` is
    what it ends in (a six-field REPLY: 1.1-1.4 us against 0.6-0.9). The signature is the
    written-out `__init__`'s (same names and order), so keyword construction works as
    before. Compiled classes need none of this: their fields are read-only."""
    fields = cls.FIELDS
    env: dict[str, Any] = {}
    body = []
    for i, name in enumerate(fields):
        env[f"_set{i}"] = vars(cls)[name].__set__
        body.append(f"    _set{i}(self, {name})")
    code = f"def __init__(self, {', '.join(fields)}):\n" + "\n".join(body) + "\n"
    exec(compile(code, f"<init {cls.__name__}>", "exec"), env)  # our own code
    init = env["__init__"]
    init.__qualname__ = f"{cls.__name__}.__init__"
    init.__module__ = __name__
    setattr(cls, "__init__", init)  # noqa: B010 (mypy refuses assigning to a method)
    setattr(cls, "__setattr__", _frozen_setattr)  # noqa: B010
    setattr(cls, "__delattr__", _frozen_delattr)  # noqa: B010


def _frozen_setattr(self: Message, name: str, value: Any) -> None:
    if name in type(self).FIELDS:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _frozen_delattr(self: Message, name: str) -> None:
    if name in type(self).FIELDS:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
    object.__delattr__(self, name)


def replace(msg: _M, **changes: Any) -> _M:
    """A copy of `msg` with the fields in `changes` changed (what `dataclasses.replace` does
    for a dataclass); TypeError for a name that is not one of its fields."""
    cls = type(msg)
    unknown = sorted(set(changes) - set(cls.FIELDS))
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {unknown[0]!r}")
    values = msg._values()
    return cls(*[changes.get(name, value) for name, value in zip(cls.FIELDS, values, strict=True)])


def encode(msg: Message) -> bytes:
    """Return the canonical bytes of `msg`."""
    out: list[bytes] = []
    msg._encode_into(out)
    return b"".join(out)


def decode(data: object) -> Message:
    """Decode one complete message from untrusted `data`; raise DecodeError if malformed."""
    if type(data) is bytes:
        buf = data
    elif isinstance(data, _BYTES_LIKE):
        buf = bytes(data)
    else:
        raise DecodeError("not bytes")
    if not buf:
        raise DecodeError("empty message")
    if len(buf) > MAX_MESSAGE_BYTES:
        raise DecodeError("message too large")
    tag = buf[0]
    cls = _BY_TAG.get(tag)
    if cls is None:
        raise DecodeError(f"unknown message tag {tag}")
    try:
        msg, end = _decode_tagged(buf, tag, cls)
    except DecodeError:
        raise
    except (TypeError, ValueError, struct.error, RecursionError) as exc:  # defensive
        raise DecodeError(f"malformed {cls.__name__}: {exc}") from exc
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} trailing bytes after {cls.__name__}")
    return msg


_BYTES_LIKE: Final = (bytes, bytearray, memoryview)  # bytes: a subclass of it


def _decode_tagged(buf: bytes, tag: int, cls: type[Message]) -> tuple[Message, int]:
    """`cls._decode_from(buf, 1)`, calling the decoders of the messages every batch carries
    directly (compiled, a call through the class object boxes its arguments and result)."""
    if tag == 5:
        return Commit._decode_from(buf, 1)
    if tag == 4:
        return Prepare._decode_from(buf, 1)
    if tag == 6:
        return Reply._decode_from(buf, 1)
    if tag == 3:
        return PrePrepare._decode_from(buf, 1)
    if tag == 1:
        return Request._decode_from(buf, 1)
    return cls._decode_from(buf, 1)


def digest_of(data: bytes) -> bytes:
    """D(m) of the paper: SHA-256 of canonical bytes."""
    return hashlib.sha256(data).digest()


def kind_of(msg: Message) -> str:
    """The paper's name of a message type, e.g. 'PRE-PREPARE' (used in metrics)."""
    return msg.KIND


def message_class(tag: int) -> type[Message] | None:
    """The message class registered under `tag`, if any."""
    return _BY_TAG.get(tag)


_EMPTY: Final = _U32.pack(0)  # an empty bytes field: its length, zero

#: How many requests' `unsigned()` bytes are remembered (oldest forgotten first), and the
#: largest op remembered: at most about 2 x 4096 x 64 KiB held.
UNSIGNED_KEPT = 4096
_UNSIGNED_MAX_OP = 64 * 1024
# (op, timestamp, client, session) -> Request.unsigned(): a pure function of those fields
# (the signature is not among them), so remembering it changes speed, never results.
_unsigned: OrderedDict[tuple[bytes, int, str, int], bytes] = OrderedDict()


# ---------------------------------------------------------------------------------------------
# The messages. Replica ids inside messages are indices into the membership (0..n-1).


class Request(_KeepsWire):
    """⟨REQUEST, o, t, c⟩σc (§4.1), signed by the client with ECDSA P-256.

    `session` lets one client identity keep several requests outstanding: exactly-once is kept
    per (client, session), each session having one request in flight as in the paper.
    `signature` covers `unsigned()`; the request digest excludes the signature so that digests
    (and hence batch digests and traces) do not depend on signature bytes.
    """

    __slots__ = ("client", "op", "session", "signature", "timestamp")
    TAG: ClassVar[int] = 1
    KIND: ClassVar[str] = "REQUEST"
    FIELDS: ClassVar[tuple[str, ...]] = ("op", "timestamp", "client", "session", "signature")
    op: Final[bytes]
    timestamp: Final[int]
    client: Final[str]
    session: Final[int]
    signature: Final[bytes]

    def __init__(self, op: bytes, timestamp: int, client: str, session: int,
                 signature: bytes) -> None:
        self.op = op
        self.timestamp = timestamp
        self.client = client
        self.session = session
        self.signature = signature

    def _values(self) -> tuple[Any, ...]:
        return (self.op, self.timestamp, self.client, self.session, self.signature)

    def unsigned(self) -> bytes:
        """The bytes the client signs: this request encoded with an empty signature.

        A decoded request cuts them from the bytes it came from (the signature field is
        last: its 4-byte length and its bytes become a zero length). A request built in code
        encodes them, remembered (see `_unsigned`): the client signs them and, in the
        simulator, every replica checks the same request."""
        try:
            wire = self._wire
        except AttributeError:
            pass
        else:
            return wire[:len(wire) - 4 - len(self.signature)] + _EMPTY
        key = (self.op, self.timestamp, self.client, self.session)
        raw = _unsigned.get(key)
        if raw is None:
            raw = encode(Request(self.op, self.timestamp, self.client, self.session, b""))
            if len(self.op) <= _UNSIGNED_MAX_OP:
                if len(_unsigned) >= UNSIGNED_KEPT:
                    _unsigned.popitem(last=False)
                _unsigned[key] = raw
        return raw

    def digest(self) -> bytes:
        """D(m) of `unsigned()`, computed once per request object (see `_KeepsDigest`)."""
        try:
            return self._digest
        except AttributeError:
            pass
        digest = digest_of(self.unsigned())
        self._digest = digest
        return digest

    def checked_under(self, public: bytes | None) -> bool | None:
        """The answer of checking this request's signature under the public key `public`, as
        remembered by `remember_check`; None if it was not checked under that key. Sound
        because a request is frozen: its signed bytes and signature never change, so the
        answer for one key never does. Another key (a replica that holds a different one for
        the client) misses and checks for itself."""
        try:
            checked = self._checked
        except AttributeError:
            return None
        return checked[1] if public is not None and checked[0] == public else None

    def remember_check(self, public: bytes | None, ok: bool) -> None:
        """Remember the answer of checking the signature under `public` (one key: the last;
        nothing for None, a client with no key, whose check is always False)."""
        if public is not None:
            self._checked = (public, ok)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.client, self.session, self.timestamp)

    def _encode_into(self, out: list[bytes]) -> None:
        try:
            wire = self._wire
        except AttributeError:
            pass
        else:
            out.append(wire)
            return
        out.append(b'\x01')
        _enc_bytes(self.op, out)
        out.append(_U64.pack(self.timestamp))
        _enc_bytes(self.client.encode(), out)
        out.append(_U64.pack(self.session))
        _enc_bytes(self.signature, out)

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[Request, int]:
        start = pos - 1  # its tag
        op, pos = _dec_bytes(buf, pos)
        timestamp, pos = _dec_int(buf, pos)
        client, pos = _dec_str(buf, pos)
        session, pos = _dec_int(buf, pos)
        signature, pos = _dec_bytes(buf, pos)
        msg = Request(op, timestamp, client, session, signature)
        msg._wire = buf[start:pos]
        return msg, pos


_register(Request)


class Batch(_KeepsDigest):
    """The requests ordered at one sequence number, with the block timestamp the primary chose.

    The timestamp is agreed in consensus (it is covered by the digest), so state machines may
    read it deterministically. An empty batch is the paper's null request (§4.4).
    """

    __slots__ = ("requests", "timestamp_ns")
    TAG: ClassVar[int] = 2
    KIND: ClassVar[str] = "BATCH"
    FIELDS: ClassVar[tuple[str, ...]] = ("timestamp_ns", "requests")
    timestamp_ns: Final[int]
    requests: Final[tuple[Request, ...]]

    def __init__(self, timestamp_ns: int, requests: tuple[Request, ...]) -> None:
        self.timestamp_ns = timestamp_ns
        self.requests = requests

    def _values(self) -> tuple[Any, ...]:
        return (self.timestamp_ns, self.requests)

    def digest(self) -> bytes:
        """The batch digest: its timestamp and its requests' digests, computed once per batch
        object (see `_KeepsDigest`)."""
        try:
            return self._digest
        except AttributeError:
            pass
        h = hashlib.sha256(b"medbft-batch")
        h.update(_U64.pack(self.timestamp_ns))
        for req in self.requests:
            h.update(req.digest())
        digest = h.digest()
        self._digest = digest
        return digest

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(_S_BQ.pack(2, self.timestamp_ns))
        _enc_items(self.requests, out, Request)

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[Batch, int]:
        timestamp_ns, pos = _dec_int(buf, pos)
        requests, pos = _dec_requests(buf, pos)
        return Batch(timestamp_ns, requests), pos


_register(Batch)

NULL_BATCH = Batch(0, ())
"""The null request that fills gaps in a NEW-VIEW's O set."""


class PrePrepare(Message):
    """⟨⟨PRE-PREPARE, v, n, d⟩, m⟩ (§4.2): the primary's proposal with the batch piggybacked."""

    __slots__ = ("batch", "digest", "seq", "view")
    TAG: ClassVar[int] = 3
    KIND: ClassVar[str] = "PRE-PREPARE"
    FIELDS: ClassVar[tuple[str, ...]] = ("view", "seq", "digest", "batch")
    view: Final[int]
    seq: Final[int]
    digest: Final[bytes]
    batch: Final[Batch]

    def __init__(self, view: int, seq: int, digest: bytes, batch: Batch) -> None:
        self.view = view
        self.seq = seq
        self.digest = digest
        self.batch = batch

    def _values(self) -> tuple[Any, ...]:
        return (self.view, self.seq, self.digest, self.batch)

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(_S_BQQ.pack(3, self.view, self.seq))
        _enc_bytes(self.digest, out)
        _enc_nested(self.batch, out, Batch)

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[PrePrepare, int]:
        if pos + 16 > len(buf):
            raise DecodeError("truncated integer")
        view, seq = _S_QQ.unpack_from(buf, pos)
        pos += 16
        digest, pos = _dec_bytes(buf, pos)
        batch, pos = _dec_batch(buf, pos)
        return PrePrepare(view, seq, digest, batch), pos


_register(PrePrepare)


class Prepare(Message):
    """⟨PREPARE, v, n, d, i⟩ (§4.2), sent by backups only."""

    __slots__ = ("digest", "replica", "seq", "view")
    TAG: ClassVar[int] = 4
    KIND: ClassVar[str] = "PREPARE"
    FIELDS: ClassVar[tuple[str, ...]] = ("view", "seq", "digest", "replica")
    view: Final[int]
    seq: Final[int]
    digest: Final[bytes]
    replica: Final[int]

    def __init__(self, view: int, seq: int, digest: bytes, replica: int) -> None:
        self.view = view
        self.seq = seq
        self.digest = digest
        self.replica = replica

    def _values(self) -> tuple[Any, ...]:
        return (self.view, self.seq, self.digest, self.replica)

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(_S_BQQ.pack(4, self.view, self.seq))
        _enc_bytes(self.digest, out)
        out.append(_U64.pack(self.replica))

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[Prepare, int]:
        if pos + 16 > len(buf):
            raise DecodeError("truncated integer")
        view, seq = _S_QQ.unpack_from(buf, pos)
        pos += 16
        digest, pos = _dec_bytes(buf, pos)
        replica, pos = _dec_int(buf, pos)
        return Prepare(view, seq, digest, replica), pos


_register(Prepare)


class Commit(Message):
    """⟨COMMIT, v, n, D(m), i⟩ (§4.2)."""

    __slots__ = ("digest", "replica", "seq", "view")
    TAG: ClassVar[int] = 5
    KIND: ClassVar[str] = "COMMIT"
    FIELDS: ClassVar[tuple[str, ...]] = ("view", "seq", "digest", "replica")
    view: Final[int]
    seq: Final[int]
    digest: Final[bytes]
    replica: Final[int]

    def __init__(self, view: int, seq: int, digest: bytes, replica: int) -> None:
        self.view = view
        self.seq = seq
        self.digest = digest
        self.replica = replica

    def _values(self) -> tuple[Any, ...]:
        return (self.view, self.seq, self.digest, self.replica)

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(_S_BQQ.pack(5, self.view, self.seq))
        _enc_bytes(self.digest, out)
        out.append(_U64.pack(self.replica))

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[Commit, int]:
        if pos + 16 > len(buf):
            raise DecodeError("truncated integer")
        view, seq = _S_QQ.unpack_from(buf, pos)
        pos += 16
        digest, pos = _dec_bytes(buf, pos)
        replica, pos = _dec_int(buf, pos)
        return Commit(view, seq, digest, replica), pos


_register(Commit)


class Reply(Message):
    """⟨REPLY, v, t, c, i, r⟩ (§4.1), MAC'd for its one client."""

    __slots__ = ("client", "replica", "result", "session", "timestamp", "view")
    TAG: ClassVar[int] = 6
    KIND: ClassVar[str] = "REPLY"
    FIELDS: ClassVar[tuple[str, ...]] = ("view", "timestamp", "client", "session", "replica",
                                         "result")
    view: Final[int]
    timestamp: Final[int]
    client: Final[str]
    session: Final[int]
    replica: Final[int]
    result: Final[bytes]

    def __init__(self, view: int, timestamp: int, client: str, session: int, replica: int,
                 result: bytes) -> None:
        self.view = view
        self.timestamp = timestamp
        self.client = client
        self.session = session
        self.replica = replica
        self.result = result

    def _values(self) -> tuple[Any, ...]:
        return (self.view, self.timestamp, self.client, self.session, self.replica, self.result)

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(_S_BQQ.pack(6, self.view, self.timestamp))
        _enc_bytes(self.client.encode(), out)
        out.append(_S_QQ.pack(self.session, self.replica))
        _enc_bytes(self.result, out)

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[Reply, int]:
        if pos + 16 > len(buf):
            raise DecodeError("truncated integer")
        view, timestamp = _S_QQ.unpack_from(buf, pos)
        pos += 16
        client, pos = _dec_str(buf, pos)
        if pos + 16 > len(buf):
            raise DecodeError("truncated integer")
        session, replica = _S_QQ.unpack_from(buf, pos)
        pos += 16
        result, pos = _dec_bytes(buf, pos)
        return Reply(view, timestamp, client, session, replica, result), pos


_register(Reply)


class Checkpoint(Message):
    """⟨CHECKPOINT, n, d, i⟩σi (§4.3): signed, because 2f+1 of them travel as a proof."""

    __slots__ = ("digest", "replica", "seq", "signature")
    TAG: ClassVar[int] = 7
    KIND: ClassVar[str] = "CHECKPOINT"
    FIELDS: ClassVar[tuple[str, ...]] = ("seq", "digest", "replica", "signature")
    seq: Final[int]
    digest: Final[bytes]
    replica: Final[int]
    signature: Final[bytes]

    def __init__(self, seq: int, digest: bytes, replica: int, signature: bytes) -> None:
        self.seq = seq
        self.digest = digest
        self.replica = replica
        self.signature = signature

    def _values(self) -> tuple[Any, ...]:
        return (self.seq, self.digest, self.replica, self.signature)

    def unsigned(self) -> bytes:
        return encode(Checkpoint(self.seq, self.digest, self.replica, b""))

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(_S_BQ.pack(7, self.seq))
        _enc_bytes(self.digest, out)
        out.append(_U64.pack(self.replica))
        _enc_bytes(self.signature, out)

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[Checkpoint, int]:
        seq, pos = _dec_int(buf, pos)
        digest, pos = _dec_bytes(buf, pos)
        replica, pos = _dec_int(buf, pos)
        signature, pos = _dec_bytes(buf, pos)
        return Checkpoint(seq, digest, replica, signature), pos


_register(Checkpoint)


class SeqDigest(Message):
    """A (n, d, v) triple: one entry of a VIEW-CHANGE's P or Q set, or of a NEW-VIEW's O set."""

    __slots__ = ("digest", "seq", "view")
    TAG: ClassVar[int] = 8
    KIND: ClassVar[str] = "SEQ-DIGEST"
    FIELDS: ClassVar[tuple[str, ...]] = ("seq", "digest", "view")
    seq: Final[int]
    digest: Final[bytes]
    view: Final[int]

    def __init__(self, seq: int, digest: bytes, view: int) -> None:
        self.seq = seq
        self.digest = digest
        self.view = view

    def _values(self) -> tuple[Any, ...]:
        return (self.seq, self.digest, self.view)

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(_S_BQ.pack(8, self.seq))
        _enc_bytes(self.digest, out)
        out.append(_U64.pack(self.view))

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[SeqDigest, int]:
        seq, pos = _dec_int(buf, pos)
        digest, pos = _dec_bytes(buf, pos)
        view, pos = _dec_int(buf, pos)
        return SeqDigest(seq, digest, view), pos


_register(SeqDigest)


class ViewChange(Message):
    """⟨VIEW-CHANGE, v+1, n, C, P, Q, i⟩σi (§4.4; the Q set is from Castro's TOCS 2002).

    `checkpoint_proof` is C: 2f+1 signed CHECKPOINTs proving `stable_seq` (empty at 0).
    `prepared` is P: for each seq above `stable_seq` prepared here, the highest view and
    digest. `preprepared` is Q: for each such seq, the (digest, latest view) pairs
    pre-prepared here. Prepares are MAC'd, not signed, so P and Q are claims vouched for by
    this message's signature; the NEW-VIEW decision procedure (node.pbft.decide_new_view) only
    trusts a claim that a quorum does not contradict and f+1 replicas back, which keeps
    safety without signing every PREPARE.
    """

    __slots__ = ("checkpoint_proof", "prepared", "preprepared", "replica", "signature",
                 "stable_seq", "view")
    TAG: ClassVar[int] = 9
    KIND: ClassVar[str] = "VIEW-CHANGE"
    FIELDS: ClassVar[tuple[str, ...]] = ("view", "stable_seq", "checkpoint_proof", "prepared",
                                         "preprepared", "replica", "signature")
    view: Final[int]
    stable_seq: Final[int]
    checkpoint_proof: Final[tuple[Checkpoint, ...]]
    prepared: Final[tuple[SeqDigest, ...]]
    preprepared: Final[tuple[SeqDigest, ...]]
    replica: Final[int]
    signature: Final[bytes]

    def __init__(self, view: int, stable_seq: int, checkpoint_proof: tuple[Checkpoint, ...],
                 prepared: tuple[SeqDigest, ...], preprepared: tuple[SeqDigest, ...],
                 replica: int, signature: bytes) -> None:
        self.view = view
        self.stable_seq = stable_seq
        self.checkpoint_proof = checkpoint_proof
        self.prepared = prepared
        self.preprepared = preprepared
        self.replica = replica
        self.signature = signature

    def _values(self) -> tuple[Any, ...]:
        return (self.view, self.stable_seq, self.checkpoint_proof, self.prepared, self.preprepared,
                self.replica, self.signature)

    def unsigned(self) -> bytes:
        return encode(replace(self, signature=b""))

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(_S_BQQ.pack(9, self.view, self.stable_seq))
        _enc_items(self.checkpoint_proof, out, Checkpoint)
        _enc_items(self.prepared, out, SeqDigest)
        _enc_items(self.preprepared, out, SeqDigest)
        out.append(_U64.pack(self.replica))
        _enc_bytes(self.signature, out)

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[ViewChange, int]:
        if pos + 16 > len(buf):
            raise DecodeError("truncated integer")
        view, stable_seq = _S_QQ.unpack_from(buf, pos)
        pos += 16
        checkpoint_proof, pos = _dec_items(buf, pos, Checkpoint)
        prepared, pos = _dec_items(buf, pos, SeqDigest)
        preprepared, pos = _dec_items(buf, pos, SeqDigest)
        replica, pos = _dec_int(buf, pos)
        signature, pos = _dec_bytes(buf, pos)
        return ViewChange(view, stable_seq, checkpoint_proof, prepared, preprepared, replica,
                          signature), pos


_register(ViewChange)


class NewView(Message):
    """⟨NEW-VIEW, v+1, V, O⟩σp (§4.4). O holds (n, d) per seq; bodies are fetched by digest."""

    __slots__ = ("assignments", "replica", "signature", "view", "view_changes")
    TAG: ClassVar[int] = 10
    KIND: ClassVar[str] = "NEW-VIEW"
    FIELDS: ClassVar[tuple[str, ...]] = ("view", "view_changes", "assignments", "replica",
                                         "signature")
    view: Final[int]
    view_changes: Final[tuple[ViewChange, ...]]
    assignments: Final[tuple[SeqDigest, ...]]
    replica: Final[int]
    signature: Final[bytes]

    def __init__(self, view: int, view_changes: tuple[ViewChange, ...],
                 assignments: tuple[SeqDigest, ...], replica: int, signature: bytes) -> None:
        self.view = view
        self.view_changes = view_changes
        self.assignments = assignments
        self.replica = replica
        self.signature = signature

    def _values(self) -> tuple[Any, ...]:
        return (self.view, self.view_changes, self.assignments, self.replica, self.signature)

    def unsigned(self) -> bytes:
        return encode(replace(self, signature=b""))

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(_S_BQ.pack(10, self.view))
        _enc_items(self.view_changes, out, ViewChange)
        _enc_items(self.assignments, out, SeqDigest)
        out.append(_U64.pack(self.replica))
        _enc_bytes(self.signature, out)

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[NewView, int]:
        view, pos = _dec_int(buf, pos)
        view_changes, pos = _dec_items(buf, pos, ViewChange)
        assignments, pos = _dec_items(buf, pos, SeqDigest)
        replica, pos = _dec_int(buf, pos)
        signature, pos = _dec_bytes(buf, pos)
        return NewView(view, view_changes, assignments, replica, signature), pos


_register(NewView)


class FetchBatch(Message):
    """Ask peers for the batch whose digest is known (from a NEW-VIEW) but whose body is not."""

    __slots__ = ("digest", "replica")
    TAG: ClassVar[int] = 11
    KIND: ClassVar[str] = "FETCH-BATCH"
    FIELDS: ClassVar[tuple[str, ...]] = ("digest", "replica")
    digest: Final[bytes]
    replica: Final[int]

    def __init__(self, digest: bytes, replica: int) -> None:
        self.digest = digest
        self.replica = replica

    def _values(self) -> tuple[Any, ...]:
        return (self.digest, self.replica)

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(b'\x0b')
        _enc_bytes(self.digest, out)
        out.append(_U64.pack(self.replica))

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[FetchBatch, int]:
        digest, pos = _dec_bytes(buf, pos)
        replica, pos = _dec_int(buf, pos)
        return FetchBatch(digest, replica), pos


_register(FetchBatch)


class BatchData(Message):
    """A batch body; the receiver checks it against the digest it asked for."""

    __slots__ = ("batch", "replica")
    TAG: ClassVar[int] = 12
    KIND: ClassVar[str] = "BATCH-DATA"
    FIELDS: ClassVar[tuple[str, ...]] = ("batch", "replica")
    batch: Final[Batch]
    replica: Final[int]

    def __init__(self, batch: Batch, replica: int) -> None:
        self.batch = batch
        self.replica = replica

    def _values(self) -> tuple[Any, ...]:
        return (self.batch, self.replica)

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(b'\x0c')
        _enc_nested(self.batch, out, Batch)
        out.append(_U64.pack(self.replica))

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[BatchData, int]:
        batch, pos = _dec_batch(buf, pos)
        replica, pos = _dec_int(buf, pos)
        return BatchData(batch, replica), pos


_register(BatchData)


class FetchState(Message):
    """State transfer request: 'I have executed up to `last_executed`' (`stable_seq` 0), or
    'send me chunk `chunk` of your stable checkpoint `stable_seq`'."""

    __slots__ = ("chunk", "last_executed", "replica", "stable_seq")
    TAG: ClassVar[int] = 13
    KIND: ClassVar[str] = "FETCH-STATE"
    FIELDS: ClassVar[tuple[str, ...]] = ("last_executed", "stable_seq", "chunk", "replica")
    last_executed: Final[int]
    stable_seq: Final[int]
    chunk: Final[int]
    replica: Final[int]

    def __init__(self, last_executed: int, stable_seq: int, chunk: int, replica: int) -> None:
        self.last_executed = last_executed
        self.stable_seq = stable_seq
        self.chunk = chunk
        self.replica = replica

    def _values(self) -> tuple[Any, ...]:
        return (self.last_executed, self.stable_seq, self.chunk, self.replica)

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(_S_BQQQQ.pack(13, self.last_executed, self.stable_seq, self.chunk, self.replica))

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[FetchState, int]:
        if pos + 32 > len(buf):
            raise DecodeError("truncated integer")
        last_executed, stable_seq, chunk, replica = _S_QQQQ.unpack_from(buf, pos)
        pos += 32
        return FetchState(last_executed, stable_seq, chunk, replica), pos


_register(FetchState)


class CommittedBatch(Message):
    """One batch the sender has executed, in a STATE-DATA answer."""

    __slots__ = ("batch", "seq", "view")
    TAG: ClassVar[int] = 14
    KIND: ClassVar[str] = "COMMITTED-BATCH"
    FIELDS: ClassVar[tuple[str, ...]] = ("seq", "view", "batch")
    seq: Final[int]
    view: Final[int]
    batch: Final[Batch]

    def __init__(self, seq: int, view: int, batch: Batch) -> None:
        self.seq = seq
        self.view = view
        self.batch = batch

    def _values(self) -> tuple[Any, ...]:
        return (self.seq, self.view, self.batch)

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(_S_BQQ.pack(14, self.seq, self.view))
        _enc_nested(self.batch, out, Batch)

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[CommittedBatch, int]:
        if pos + 16 > len(buf):
            raise DecodeError("truncated integer")
        seq, view = _S_QQ.unpack_from(buf, pos)
        pos += 16
        batch, pos = _dec_batch(buf, pos)
        return CommittedBatch(seq, view, batch), pos


_register(CommittedBatch)


class StateData(Message):
    """State transfer answer: the sender's stable checkpoint (when newer than the asker's: its
    proof, the hashes of its snapshot's chunks and one chunk with its index), the batches it
    executed after that point, its view and the NEW-VIEW that started it (encoded; empty in
    view 0). An answer to a chunk request carries no batches and no NEW-VIEW."""

    __slots__ = ("checkpoint_proof", "chunk", "chunk_hashes", "chunk_index", "committed",
                 "new_view", "replica", "stable_seq", "view")
    TAG: ClassVar[int] = 15
    KIND: ClassVar[str] = "STATE-DATA"
    FIELDS: ClassVar[tuple[str, ...]] = ("stable_seq", "checkpoint_proof", "chunk_hashes",
                                         "chunk_index", "chunk", "committed", "view", "new_view",
                                         "replica")
    stable_seq: Final[int]
    checkpoint_proof: Final[tuple[Checkpoint, ...]]
    chunk_hashes: Final[tuple[bytes, ...]]
    chunk_index: Final[int]
    chunk: Final[bytes]
    committed: Final[tuple[CommittedBatch, ...]]
    view: Final[int]
    new_view: Final[bytes]
    replica: Final[int]

    def __init__(self, stable_seq: int, checkpoint_proof: tuple[Checkpoint, ...],
                 chunk_hashes: tuple[bytes, ...], chunk_index: int, chunk: bytes,
                 committed: tuple[CommittedBatch, ...], view: int, new_view: bytes,
                 replica: int) -> None:
        self.stable_seq = stable_seq
        self.checkpoint_proof = checkpoint_proof
        self.chunk_hashes = chunk_hashes
        self.chunk_index = chunk_index
        self.chunk = chunk
        self.committed = committed
        self.view = view
        self.new_view = new_view
        self.replica = replica

    def _values(self) -> tuple[Any, ...]:
        return (self.stable_seq, self.checkpoint_proof, self.chunk_hashes, self.chunk_index,
                self.chunk, self.committed, self.view, self.new_view, self.replica)

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(_S_BQ.pack(15, self.stable_seq))
        _enc_items(self.checkpoint_proof, out, Checkpoint)
        _enc_bytes_items(self.chunk_hashes, out)
        out.append(_U64.pack(self.chunk_index))
        _enc_bytes(self.chunk, out)
        _enc_items(self.committed, out, CommittedBatch)
        out.append(_U64.pack(self.view))
        _enc_bytes(self.new_view, out)
        out.append(_U64.pack(self.replica))

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[StateData, int]:
        stable_seq, pos = _dec_int(buf, pos)
        checkpoint_proof, pos = _dec_items(buf, pos, Checkpoint)
        chunk_hashes, pos = _dec_bytes_items(buf, pos)
        chunk_index, pos = _dec_int(buf, pos)
        chunk, pos = _dec_bytes(buf, pos)
        committed, pos = _dec_items(buf, pos, CommittedBatch)
        view, pos = _dec_int(buf, pos)
        new_view, pos = _dec_bytes(buf, pos)
        replica, pos = _dec_int(buf, pos)
        return StateData(stable_seq, checkpoint_proof, chunk_hashes, chunk_index, chunk,
                         committed, view, new_view, replica), pos


_register(StateData)


class Envelope(Message):
    """What travels on a link: the sender's id, one encoded message, and a MAC for the receiver.

    The MAC is keyed BLAKE2b (32 bytes) under the sender-receiver session key (empty for
    client REQUESTs, which carry an ECDSA signature instead). The paper's authenticator holds
    one MAC per receiver because it used IP multicast; we send point to point, so each copy
    carries only the MAC its receiver checks: the same O(n) MACs to generate per multicast,
    one to verify.
    """

    __slots__ = ("mac", "payload", "sender")
    TAG: ClassVar[int] = 100
    KIND: ClassVar[str] = "ENVELOPE"
    FIELDS: ClassVar[tuple[str, ...]] = ("sender", "payload", "mac")
    sender: Final[str]
    payload: Final[bytes]
    mac: Final[bytes]

    def __init__(self, sender: str, payload: bytes, mac: bytes) -> None:
        self.sender = sender
        self.payload = payload
        self.mac = mac

    def _values(self) -> tuple[Any, ...]:
        return (self.sender, self.payload, self.mac)

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(b'd')
        _enc_bytes(self.sender.encode(), out)
        _enc_bytes(self.payload, out)
        _enc_bytes(self.mac, out)

    @staticmethod
    def _decode_from(buf: bytes, pos: int) -> tuple[Envelope, int]:
        sender, pos = _dec_str(buf, pos)
        payload, pos = _dec_bytes(buf, pos)
        mac, pos = _dec_bytes(buf, pos)
        return Envelope(sender, payload, mac), pos


_register(Envelope)
