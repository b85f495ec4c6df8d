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
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import typing
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

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
]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Hard limit on one encoded message: a decoder never allocates more than this."""

_MAX_ITEMS = 1 << 16
_MAX_STR = 1024
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


class DecodeError(ValueError):
    """Raised when untrusted bytes are not a valid encoding of a known message."""


# ---------------------------------------------------------------------------------------------
# Field codecs. Each codec appends bytes to a list, or reads from (buf, pos) -> (value, pos).

Encoder = Callable[[Any, list[bytes]], None]
Decoder = Callable[[bytes, int], tuple[Any, int]]


def _enc_int(value: int, out: list[bytes]) -> None:
    out.append(_U64.pack(value))


def _dec_int(buf: bytes, pos: int) -> tuple[int, int]:
    end = pos + 8
    if end > len(buf):
        raise DecodeError("truncated integer")
    return _U64.unpack_from(buf, pos)[0], end


def _enc_bytes(value: bytes, out: list[bytes]) -> None:
    out.append(_U32.pack(len(value)))
    out.append(value)


def _dec_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(buf):
        raise DecodeError("truncated length")
    size = _U32.unpack_from(buf, pos)[0]
    start = pos + 4
    end = start + size
    if end > len(buf):
        raise DecodeError("truncated bytes field")
    return buf[start:end], end


def _enc_str(value: str, out: list[bytes]) -> None:
    _enc_bytes(value.encode(), out)


def _dec_str(buf: bytes, pos: int) -> tuple[str, int]:
    raw, end = _dec_bytes(buf, pos)
    if len(raw) > _MAX_STR:
        raise DecodeError("string field too long")
    try:
        return raw.decode(), end
    except UnicodeDecodeError as exc:
        raise DecodeError("string field is not UTF-8") from exc


def _enc_bool(value: bool, out: list[bytes]) -> None:
    out.append(b"\x01" if value else b"\x00")


def _dec_bool(buf: bytes, pos: int) -> tuple[bool, int]:
    if pos >= len(buf):
        raise DecodeError("truncated bool")
    byte = buf[pos]
    if byte > 1:
        raise DecodeError("bool out of range")
    return byte == 1, pos + 1


def _tuple_codec(item_enc: Encoder, item_dec: Decoder) -> tuple[Encoder, Decoder]:
    def enc(value: tuple[Any, ...], out: list[bytes]) -> None:
        out.append(_U32.pack(len(value)))
        for item in value:
            item_enc(item, out)

    def dec(buf: bytes, pos: int) -> tuple[tuple[Any, ...], int]:
        if pos + 4 > len(buf):
            raise DecodeError("truncated count")
        count = _U32.unpack_from(buf, pos)[0]
        if count > _MAX_ITEMS:
            raise DecodeError("too many items")
        pos += 4
        items = []
        for _ in range(count):
            item, pos = item_dec(buf, pos)
            items.append(item)
        return tuple(items), pos

    return enc, dec


def _message_codec(cls: type[Message]) -> tuple[Encoder, Decoder]:
    def enc(value: Message, out: list[bytes]) -> None:
        if type(value) is not cls:
            raise TypeError(f"expected {cls.__name__}, got {type(value).__name__}")
        value._encode_into(out)

    def dec(buf: bytes, pos: int) -> tuple[Message, int]:
        if pos >= len(buf) or buf[pos] != cls.TAG:
            raise DecodeError(f"expected nested {cls.__name__}")
        return cls._decode_from(buf, pos + 1)

    return enc, dec


def _codec_for(annotation: Any) -> tuple[Encoder, Decoder]:
    if annotation is int:
        return _enc_int, _dec_int
    if annotation is bytes:
        return _enc_bytes, _dec_bytes
    if annotation is str:
        return _enc_str, _dec_str
    if annotation is bool:
        return _enc_bool, _dec_bool
    if typing.get_origin(annotation) is tuple:
        (item, _ellipsis) = typing.get_args(annotation)
        return _tuple_codec(*_codec_for(item))
    if isinstance(annotation, type) and issubclass(annotation, Message):
        return _message_codec(annotation)
    raise TypeError(f"no codec for {annotation!r}")


_BY_TAG: dict[int, type[Message]] = {}


class Message:
    """Base of every message: subclasses are frozen slotted dataclasses with a unique TAG."""

    __slots__ = ()
    TAG: ClassVar[int] = 0
    KIND: ClassVar[str] = ""
    _encoders: ClassVar[tuple[tuple[str, Encoder], ...]]
    _decoders: ClassVar[tuple[Decoder, ...]]

    def _encode_into(self, out: list[bytes]) -> None:
        out.append(bytes((self.TAG,)))
        for name, enc in self._encoders:
            enc(getattr(self, name), out)

    @classmethod
    def _decode_from(cls, buf: bytes, pos: int) -> tuple[Message, int]:
        values = []
        for dec in cls._decoders:
            value, pos = dec(buf, pos)
            values.append(value)
        return cls(*values), pos


class _KeepsDigest(Message):
    """Base of a message that remembers its digest once computed (in a slot that is not a
    field: not encoded, compared, hashed or copied by `dataclasses.replace`). A message is
    frozen, so the digest of its fields never changes; every replica that holds the same
    object (the simulator shares one decoded message among its receivers) computes it once."""

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


_T = typing.TypeVar("_T")


@typing.dataclass_transform(frozen_default=True)
def _message(tag: int, kind: str) -> Callable[[type[_T]], type[_T]]:
    """Class decorator: make a frozen slotted dataclass and register its codec under `tag`."""

    def wrap(cls: type[_T]) -> type[_T]:
        dc: Any = dataclass(frozen=True, slots=True)(cls)
        dc.TAG = tag
        dc.KIND = kind
        hints = typing.get_type_hints(dc)
        codecs = [(f.name, _codec_for(hints[f.name])) for f in dataclasses.fields(dc)]
        dc._encoders = tuple((name, c[0]) for name, c in codecs)
        dc._decoders = tuple(c[1] for _, c in codecs)
        _fast_init(dc)
        _compile_codec(dc, [(f.name, hints[f.name]) for f in dataclasses.fields(dc)])
        assert tag not in _BY_TAG, f"duplicate tag {tag}"
        _BY_TAG[tag] = dc
        return dc

    return wrap


def _fast_init(cls: type[Message]) -> None:
    """Replace a message class's dataclass `__init__` by one that stores each field through
    its slot's descriptor.

    Why: a frozen dataclass's `__init__` stores every field with `object.__setattr__` (its own
    `__setattr__` refuses), which finds the field's slot by name each time: building a
    six-field REPLY took 1.1-1.4 us here. Every message a replica decodes or sends is built
    this way. The slot descriptor's `__set__` is what `object.__setattr__` ends in, called
    directly: 0.6-0.9 us for the same REPLY (interleaved in one process). The message
    stays frozen (assigning a field afterwards still raises), and the signature is the
    dataclass's (same names, order and defaults), so keyword construction and
    `dataclasses.replace` work as before. A class whose fields are not all plain init fields
    (a default factory, an `init=False` field, a `__post_init__`) keeps the dataclass's."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if hasattr(cls, "__post_init__") or any(
            not f.init or f.default_factory is not dataclasses.MISSING for f in fields):
        return
    env: dict[str, Any] = {}
    params, body = ["self"], []
    for i, f in enumerate(fields):
        env[f"_set{i}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            env[f"_default{i}"] = f.default
            params.append(f"{f.name}=_default{i}")
        body.append(f"    _set{i}(self, {f.name})")
    code = f"def __init__({', '.join(params)}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(compile(code, f"<init {cls.__name__}>", "exec"), env)  # our own code
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]


def _compile_codec(cls: type[Message], fields: list[tuple[str, Any]]) -> None:
    """Replace the generic field loop of `cls` by straight-line code generated for its fields.

    Why: encoding and decoding are the simulator's hottest path (a third of its time with the
    generic loop). Runs of integers become one struct call; bytes and str fields are inlined;
    other fields (tuples, nested messages, bools) still go through their codec functions. The
    bytes produced and the errors raised are exactly those of the generic codec
    (`_encoders`/`_decoders`); tests/test_messages.py checks every encoding against the
    format written out field by field. A `_KeepsWire` message's decoder also keeps the bytes
    it read, and its encoder appends them when present.
    """
    env: dict[str, Any] = {"DecodeError": DecodeError, "_U32": _U32, "_MAX_STR": _MAX_STR,
                           "cls": cls, "_set_wire": _KeepsWire.__dict__["_wire"].__set__}
    keeps_wire = issubclass(cls, _KeepsWire)
    enc_lines = ["def _encode_into(self, out):"]
    if keeps_wire:  # the bytes it was decoded from, when it was decoded
        enc_lines += ["    try:", "        wire = self._wire", "    except AttributeError:",
                      "        pass", "    else:", "        out.append(wire)", "        return"]
    enc_lines.append("    append = out.append")
    dec_lines = ["def _decode_from(buf, pos):", "    size = len(buf)"]
    if keeps_wire:
        dec_lines.append("    start = pos - 1")  # its tag
    ints: list[str] = []
    first = True

    def flush_ints() -> None:
        nonlocal first
        if not ints and not first:
            return
        fmt = ">" + ("B" if first else "") + "Q" * len(ints)
        key = f"_S{len(env)}"
        env[key] = struct.Struct(fmt)
        args = (["TAG"] if first else []) + [f"self.{n}" for n in ints]
        enc_lines.append(f"    append({key}.pack({', '.join(args)}))")
        if ints:
            dkey = f"_D{len(env)}"
            env[dkey] = struct.Struct(">" + "Q" * len(ints))
            dec_lines.append(f"    if pos + {8 * len(ints)} > size:")
            dec_lines.append("        raise DecodeError('truncated integer')")
            dec_lines.append(f"    {', '.join('v_' + n for n in ints)}, = "
                             f"{dkey}.unpack_from(buf, pos)")
            dec_lines.append(f"    pos += {8 * len(ints)}")
        ints.clear()
        first = False

    env["TAG"] = cls.TAG
    for name, ann in fields:
        if ann is int:
            ints.append(name)
            continue
        flush_ints()
        if ann is bytes or ann is str:
            value = f"self.{name}.encode()" if ann is str else f"self.{name}"
            enc_lines += [f"    v = {value}", "    append(_U32.pack(len(v)))", "    append(v)"]
            dec_lines += [
                "    if pos + 4 > size:", "        raise DecodeError('truncated length')",
                "    end = pos + 4 + _U32.unpack_from(buf, pos)[0]",
                "    if end > size:", "        raise DecodeError('truncated bytes field')",
                f"    v_{name} = buf[pos + 4:end]", "    pos = end",
            ]
            if ann is str:
                dec_lines += [
                    f"    if len(v_{name}) > _MAX_STR:",
                    "        raise DecodeError('string field too long')",
                    "    try:", f"        v_{name} = v_{name}.decode()",
                    "    except UnicodeDecodeError as exc:",
                    "        raise DecodeError('string field is not UTF-8') from exc",
                ]
        else:
            enc, dec = _codec_for(ann)
            env[f"_enc_{name}"], env[f"_dec_{name}"] = enc, dec
            enc_lines.append(f"    _enc_{name}(self.{name}, out)")
            dec_lines.append(f"    v_{name}, pos = _dec_{name}(buf, pos)")
    flush_ints()
    dec_lines.append(f"    msg = cls({', '.join('v_' + n for n, _ in fields)})")
    if keeps_wire:
        dec_lines.append("    _set_wire(msg, buf[start:pos])")
    dec_lines.append("    return msg, pos")
    code = "\n".join(enc_lines) + "\n\n" + "\n".join(dec_lines) + "\n"
    exec(compile(code, f"<codec {cls.__name__}>", "exec"), env)  # our own code
    cls._encode_into = env["_encode_into"]  # type: ignore[method-assign]
    cls._decode_from = staticmethod(env["_decode_from"])  # type: ignore[method-assign,assignment]


def encode(msg: Message) -> bytes:
    """Return the canonical bytes of `msg`."""
    out: list[bytes] = []
    msg._encode_into(out)
    return b"".join(out)


def decode(data: bytes) -> Message:
    """Decode one complete message from untrusted `data`; raise DecodeError if malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("not bytes")
    buf = bytes(data)
    if not buf:
        raise DecodeError("empty message")
    if len(buf) > MAX_MESSAGE_BYTES:
        raise DecodeError("message too large")
    cls = _BY_TAG.get(buf[0])
    if cls is None:
        raise DecodeError(f"unknown message tag {buf[0]}")
    try:
        msg, end = cls._decode_from(buf, 1)
    except DecodeError:
        raise
    except (TypeError, ValueError, struct.error, RecursionError) as exc:  # defensive
        raise DecodeError(f"malformed {cls.__name__}: {exc}") from exc
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} trailing bytes after {cls.__name__}")
    return msg


def digest_of(data: bytes) -> bytes:
    """D(m) of the paper: SHA-256 of canonical bytes."""
    return hashlib.sha256(data).digest()


def kind_of(msg: Message) -> str:
    """The paper's name of a message type, e.g. 'PRE-PREPARE' (used in metrics)."""
    return msg.KIND


# ---------------------------------------------------------------------------------------------
# The messages. Replica ids inside messages are indices into the membership (0..n-1).


@_message(1, "REQUEST")
class Request(_KeepsWire):
    """⟨REQUEST, o, t, c⟩σc (§4.1), signed by the client with ECDSA P-256.

    `session` lets one client identity keep several requests outstanding: exactly-once is kept
    per (client, session), each session having one request in flight as in the paper.
    `signature` covers `unsigned()`; the request digest excludes the signature so that digests
    (and hence batch digests and traces) do not depend on signature bytes.
    """

    op: bytes
    timestamp: int
    client: str
    session: int
    signature: bytes

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
        _set(self, "_digest", digest)
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
            _set(self, "_checked", (public, ok))

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.client, self.session, self.timestamp)


_EMPTY = _U32.pack(0)  # an empty bytes field: its length, zero
_set = object.__setattr__  # the remembered slots of a frozen message


#: How many requests' `unsigned()` bytes are remembered (oldest forgotten first), and the
#: largest op remembered: at most about 2 x 4096 x 64 KiB held.
UNSIGNED_KEPT = 4096
_UNSIGNED_MAX_OP = 64 * 1024
# (op, timestamp, client, session) -> Request.unsigned(): a pure function of those fields
# (the signature is not among them), so remembering it changes speed, never results.
_unsigned: OrderedDict[tuple[bytes, int, str, int], bytes] = OrderedDict()


@_message(2, "BATCH")
class Batch(_KeepsDigest):
    """The requests ordered at one sequence number, with the block timestamp the primary chose.

    The timestamp is agreed in consensus (it is covered by the digest), so state machines may
    read it deterministically. An empty batch is the paper's null request (§4.4).
    """

    timestamp_ns: int
    requests: tuple[Request, ...]

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
        _set(self, "_digest", digest)
        return digest


NULL_BATCH = Batch(0, ())
"""The null request that fills gaps in a NEW-VIEW's O set."""


@_message(3, "PRE-PREPARE")
class PrePrepare(Message):
    """⟨⟨PRE-PREPARE, v, n, d⟩, m⟩ (§4.2): the primary's proposal with the batch piggybacked."""

    view: int
    seq: int
    digest: bytes
    batch: Batch


@_message(4, "PREPARE")
class Prepare(Message):
    """⟨PREPARE, v, n, d, i⟩ (§4.2), sent by backups only."""

    view: int
    seq: int
    digest: bytes
    replica: int


@_message(5, "COMMIT")
class Commit(Message):
    """⟨COMMIT, v, n, D(m), i⟩ (§4.2)."""

    view: int
    seq: int
    digest: bytes
    replica: int


@_message(6, "REPLY")
class Reply(Message):
    """⟨REPLY, v, t, c, i, r⟩ (§4.1), MAC'd for its one client."""

    view: int
    timestamp: int
    client: str
    session: int
    replica: int
    result: bytes


@_message(7, "CHECKPOINT")
class Checkpoint(Message):
    """⟨CHECKPOINT, n, d, i⟩σi (§4.3): signed, because 2f+1 of them travel as a proof."""

    seq: int
    digest: bytes
    replica: int
    signature: bytes

    def unsigned(self) -> bytes:
        return encode(Checkpoint(self.seq, self.digest, self.replica, b""))


@_message(8, "SEQ-DIGEST")
class SeqDigest(Message):
    """A (n, d, v) triple: one entry of a VIEW-CHANGE's P or Q set, or of a NEW-VIEW's O set."""

    seq: int
    digest: bytes
    view: int


@_message(9, "VIEW-CHANGE")
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

    view: int
    stable_seq: int
    checkpoint_proof: tuple[Checkpoint, ...]
    prepared: tuple[SeqDigest, ...]
    preprepared: tuple[SeqDigest, ...]
    replica: int
    signature: bytes

    def unsigned(self) -> bytes:
        return encode(dataclasses.replace(self, signature=b""))


@_message(10, "NEW-VIEW")
class NewView(Message):
    """⟨NEW-VIEW, v+1, V, O⟩σp (§4.4). O holds (n, d) per seq; bodies are fetched by digest."""

    view: int
    view_changes: tuple[ViewChange, ...]
    assignments: tuple[SeqDigest, ...]
    replica: int
    signature: bytes

    def unsigned(self) -> bytes:
        return encode(dataclasses.replace(self, signature=b""))


@_message(11, "FETCH-BATCH")
class FetchBatch(Message):
    """Ask peers for the batch whose digest is known (from a NEW-VIEW) but whose body is not."""

    digest: bytes
    replica: int


@_message(12, "BATCH-DATA")
class BatchData(Message):
    """A batch body; the receiver checks it against the digest it asked for."""

    batch: Batch
    replica: int


@_message(13, "FETCH-STATE")
class FetchState(Message):
    """State transfer request: 'I have executed up to `last_executed`' (`stable_seq` 0), or
    'send me chunk `chunk` of your stable checkpoint `stable_seq`'."""

    last_executed: int
    stable_seq: int
    chunk: int
    replica: int


@_message(14, "COMMITTED-BATCH")
class CommittedBatch(Message):
    """One batch the sender has executed, in a STATE-DATA answer."""

    seq: int
    view: int
    batch: Batch


@_message(15, "STATE-DATA")
class StateData(Message):
    """State transfer answer: the sender's stable checkpoint (when newer than the asker's: its
    proof, the hashes of its snapshot's chunks and one chunk with its index), the batches it
    executed after that point, its view and the NEW-VIEW that started it (encoded; empty in
    view 0). An answer to a chunk request carries no batches and no NEW-VIEW."""

    stable_seq: int
    checkpoint_proof: tuple[Checkpoint, ...]
    chunk_hashes: tuple[bytes, ...]
    chunk_index: int
    chunk: bytes
    committed: tuple[CommittedBatch, ...]
    view: int
    new_view: bytes
    replica: int


@_message(100, "ENVELOPE")
class Envelope(Message):
    """What travels on a link: the sender's id, one encoded message, and a MAC for the receiver.

    The MAC is keyed BLAKE2b (32 bytes) under the sender-receiver session key (empty for
    client REQUESTs, which carry an ECDSA signature instead). The paper's authenticator holds
    one MAC per receiver because it used IP multicast; we send point to point, so each copy
    carries only the MAC its receiver checks: the same O(n) MACs to generate per multicast,
    one to verify.
    """

    sender: str
    payload: bytes
    mac: bytes


def message_class(tag: int) -> type[Message] | None:
    """The message class registered under `tag`, if any."""
    return _BY_TAG.get(tag)
