"""Tests for node.messages: round trips, canonical encoding, and hostile-input decoding.

Every replica, client and checker computes digests, signatures and MACs over these bytes, so the
encoding must be a bijection between messages and byte strings: each message has exactly one
encoding, and the decoder accepts exactly those encodings and rejects everything else with
DecodeError (never another exception), since it reads bytes straight off the network.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import struct
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import messages as m
from node.envelope import open_envelope
from node.messages import (
    MAX_MESSAGE_BYTES,
    NULL_BATCH,
    Batch,
    BatchData,
    Checkpoint,
    Commit,
    CommittedBatch,
    DecodeError,
    Envelope,
    FetchBatch,
    FetchState,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    Reply,
    Request,
    SeqDigest,
    StateData,
    ViewChange,
    decode,
    digest_of,
    encode,
    kind_of,
)

ROOT = Path(__file__).resolve().parent.parent
U64 = struct.Struct(">Q")
U32 = struct.Struct(">I")
MAX_U64 = (1 << 64) - 1


def u64(value: int) -> bytes:
    return U64.pack(value)


def lp(data: bytes) -> bytes:
    """A length-prefixed bytes/str field as the format specifies (u32 big-endian length)."""
    return U32.pack(len(data)) + data


# ---------------------------------------------------------------------------------------------
# Realistic sample messages, nested ones included


def _d(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


REQ1 = Request(b"put patient/17 {\"bp\": \"120/80\"}", 1_700_000_000_000, "client-1", 0,
               b"\x11" * 64)
REQ2 = Request(b"get patient/17", 1_700_000_000_001, "client-2", 3, b"\x22" * 64)
REQ3 = Request(b"", 0, "h\u00f4pital-\u00e9t\u00e9-\U0001f3e5", MAX_U64, b"")
BATCH = Batch(1_700_000_000_123_456_789, (REQ1, REQ2, REQ3))
PRE_PREPARE = PrePrepare(2, 129, BATCH.digest(), BATCH)
PREPARE = Prepare(2, 129, BATCH.digest(), 3)
COMMIT = Commit(2, 129, BATCH.digest(), 1)
REPLY = Reply(2, 1_700_000_000_000, "client-1", 0, 3, b"ok: stored")
CHECKPOINTS = tuple(Checkpoint(128, _d("state@128"), i, bytes([i]) * 64) for i in range(3))
SEQ_DIGESTS = (SeqDigest(129, BATCH.digest(), 2), SeqDigest(130, _d("b130"), 1))
VIEW_CHANGES = tuple(
    ViewChange(3, 128, CHECKPOINTS, SEQ_DIGESTS, (*SEQ_DIGESTS, SeqDigest(131, _d("x"), 0)),
               i, bytes([0x40 + i]) * 64)
    for i in range(3)
)
VIEW_CHANGE_EMPTY = ViewChange(1, 0, (), (), (), 2, b"\x99" * 64)
NEW_VIEW = NewView(3, VIEW_CHANGES, (SeqDigest(129, BATCH.digest(), 3),
                                      SeqDigest(130, NULL_BATCH.digest(), 3)), 3, b"\x33" * 64)
FETCH_BATCH = FetchBatch(_d("missing"), 2)
BATCH_DATA = BatchData(BATCH, 0)
FETCH_STATE = FetchState(127, 0, 0, 3)
FETCH_CHUNK = FetchState(127, 256, 17, 3)
COMMITTED = (CommittedBatch(129, 2, BATCH), CommittedBatch(130, 3, NULL_BATCH))
STATE_DATA = StateData(128, CHECKPOINTS, (_d("chunk-0"), _d("chunk-1")), 0,
                       b"snapshot-bytes" * 10, COMMITTED, 3, encode(NEW_VIEW), 1)
STATE_DATA_EMPTY = StateData(0, (), (), 0, b"", (), 0, b"", 0)
ENVELOPE = Envelope("hospital-1", encode(PRE_PREPARE), b"\x5a" * 32)
ENVELOPE_CLIENT = Envelope("client-1", encode(REQ1), b"")

SAMPLES: dict[str, Message] = {
    "request": REQ1,
    "request-unicode-max": REQ3,
    "batch": BATCH,
    "null-batch": NULL_BATCH,
    "pre-prepare": PRE_PREPARE,
    "prepare": PREPARE,
    "commit": COMMIT,
    "reply": REPLY,
    "checkpoint": CHECKPOINTS[0],
    "seq-digest": SEQ_DIGESTS[0],
    "view-change": VIEW_CHANGES[0],
    "view-change-empty": VIEW_CHANGE_EMPTY,
    "new-view": NEW_VIEW,
    "fetch-batch": FETCH_BATCH,
    "batch-data": BATCH_DATA,
    "fetch-state": FETCH_STATE,
    "fetch-chunk": FETCH_CHUNK,
    "committed-batch": COMMITTED[0],
    "state-data": STATE_DATA,
    "state-data-empty": STATE_DATA_EMPTY,
    "envelope": ENVELOPE,
    "envelope-client": ENVELOPE_CLIENT,
}
SAMPLE_IDS = list(SAMPLES)
SAMPLE_LIST = list(SAMPLES.values())
ENCODED = [encode(msg) for msg in SAMPLE_LIST]


def test_samples_cover_every_registered_message_type() -> None:
    assert {type(msg) for msg in SAMPLE_LIST} == set(m._BY_TAG.values())
    exported = {getattr(m, name) for name in m.__all__}
    exported_types = {t for t in exported if isinstance(t, type) and issubclass(t, Message)}
    assert exported_types - {Message} == set(m._BY_TAG.values())


def test_tags_and_kinds_are_unique() -> None:
    classes = list(m._BY_TAG.values())
    assert len({cls.TAG for cls in classes}) == len(classes)
    assert len({cls.KIND for cls in classes}) == len(classes)
    assert all(tag == cls.TAG for tag, cls in m._BY_TAG.items())
    assert kind_of(PRE_PREPARE) == "PRE-PREPARE"
    assert kind_of(ENVELOPE) == "ENVELOPE"


@pytest.mark.parametrize("msg", SAMPLE_LIST, ids=SAMPLE_IDS)
def test_a_message_builds_and_compares_as_a_frozen_dataclass_would(msg: Message) -> None:
    """Messages are written-out classes (compiled to native classes by the optional build),
    standing in for the frozen dataclasses they were: positional and keyword construction,
    equality and hashing by class and values, the dataclass repr, immutable fields,
    `replace`. The same in pure Python and compiled (tests/test_native.py runs this file
    under the compiled build)."""
    cls = type(msg)
    values = {name: getattr(msg, name) for name in cls.FIELDS}
    assert list(values) == list(_field_types(cls))  # FIELDS: the annotated fields, in order
    positional = cls(*values.values())
    by_name = cls(**values)
    assert positional == by_name == msg and hash(positional) == hash(msg)
    assert (positional != msg) is False
    # (equal, not the same object: compiled, an int field is a machine word, boxed when read)
    assert all(getattr(by_name, k) == v and type(getattr(by_name, k)) is type(v)
               for k, v in values.items())
    assert repr(msg) == f"{cls.__name__}(" + ", ".join(
        f"{k}={v!r}" for k, v in values.items()) + ")"
    name = next(iter(values))
    with pytest.raises(AttributeError):  # FrozenInstanceError in pure Python
        setattr(positional, name, values[name])
    with pytest.raises(AttributeError):
        delattr(positional, name)
    assert getattr(positional, name) == values[name]
    with pytest.raises(AttributeError):
        positional.not_a_field = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        cls(*list(values.values())[:-1])  # a field missing
    with pytest.raises(TypeError):
        cls(*values.values(), None)  # one too many
    assert m.replace(msg) == msg and m.replace(msg) is not msg
    with pytest.raises(TypeError, match="no field 'nope'"):
        m.replace(msg, nope=1)
    # Another class with equal values is not equal (a dataclass compares classes too).
    if cls is Prepare:
        assert msg != Commit(*values.values())


def test_how_a_message_is_frozen_depends_on_the_build() -> None:
    """Compiled: the fields are read-only attributes of a native class. Pure Python: a
    `__setattr__` refuses them (FrozenInstanceError, as a frozen dataclass did) and an
    `__init__` with the written-out signature stores through the slots."""
    if m._COMPILED:
        with pytest.raises(AttributeError, match="not writable"):
            PREPARE.view = 2  # type: ignore[misc]
        assert not hasattr(Prepare.__init__, "__code__")
    else:
        with pytest.raises(dataclasses.FrozenInstanceError):
            PREPARE.view = 2  # type: ignore[misc]
        assert "<init " in Prepare.__init__.__code__.co_filename
        assert list(inspect.signature(Prepare).parameters) == list(Prepare.FIELDS)
    assert PREPARE.view == 2


def test_replace_changes_only_the_named_fields() -> None:
    changed = m.replace(PREPARE, view=PREPARE.view + 1)
    assert type(changed) is Prepare and changed.view == PREPARE.view + 1
    assert (changed.seq, changed.digest, changed.replica) == (
        PREPARE.seq, PREPARE.digest, PREPARE.replica)


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("msg", SAMPLE_LIST, ids=SAMPLE_IDS)
def test_round_trip(msg: Message) -> None:
    data = encode(msg)
    assert data[0] == msg.TAG
    back = decode(data)
    assert type(back) is type(msg)
    assert back == msg
    assert encode(back) == data


def test_nested_round_trip_preserves_structure() -> None:
    nv = decode(encode(NEW_VIEW))
    assert isinstance(nv, NewView)
    assert len(nv.view_changes) == 3
    vc = nv.view_changes[1]
    assert isinstance(vc, ViewChange)
    assert vc.checkpoint_proof == CHECKPOINTS
    assert all(isinstance(c, Checkpoint) for c in vc.checkpoint_proof)
    assert all(isinstance(p, SeqDigest) for p in vc.prepared + vc.preprepared)
    assert isinstance(vc.checkpoint_proof, tuple) and isinstance(vc.prepared, tuple)

    pp = decode(encode(PRE_PREPARE))
    assert isinstance(pp, PrePrepare) and isinstance(pp.batch, Batch)
    assert pp.batch.requests == (REQ1, REQ2, REQ3)
    assert pp.batch.digest() == pp.digest

    sd = decode(encode(STATE_DATA))
    assert isinstance(sd, StateData)
    assert sd.committed == COMMITTED
    assert decode(sd.new_view) == NEW_VIEW

    env = decode(encode(ENVELOPE))
    assert isinstance(env, Envelope)
    assert decode(env.payload) == PRE_PREPARE


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode(PRE_PREPARE)
    assert decode(bytearray(data)) == PRE_PREPARE
    assert decode(memoryview(data)) == PRE_PREPARE

    class Raw(bytes):
        pass

    assert decode(Raw(data)) == PRE_PREPARE


# ---------------------------------------------------------------------------------------------
# Canonical encoding


def test_equal_messages_encode_to_equal_bytes() -> None:
    # Built independently (no shared objects), equal by value.
    a = PrePrepare(2, 129, bytes(BATCH.digest()),
                   Batch(BATCH.timestamp_ns, tuple(m.replace(r) for r in BATCH.requests)))
    b = PrePrepare(2, 129, BATCH.digest(), BATCH)
    assert a == b and a is not b
    assert encode(a) == encode(b)
    c = NewView(NEW_VIEW.view, tuple(m.replace(v) for v in NEW_VIEW.view_changes),
                tuple(NEW_VIEW.assignments), NEW_VIEW.replica, bytes(NEW_VIEW.signature))
    assert encode(c) == encode(NEW_VIEW)


@pytest.mark.parametrize("msg", SAMPLE_LIST, ids=SAMPLE_IDS)
def test_encoding_is_stable(msg: Message) -> None:
    assert encode(msg) == encode(msg)


def test_known_encoding_matches_the_documented_layout() -> None:
    # tag, then fields in declaration order: u64 big-endian ints, u32-length-prefixed bytes.
    digest = bytes(range(32))
    msg = Prepare(1, 2, digest, 3)
    expected = b"\x04" + u64(1) + u64(2) + lp(digest) + u64(3)
    assert encode(msg) == expected
    assert encode(msg) == expected  # twice: no hidden state
    assert encode(msg).hex() == (
        "04" "0000000000000001" "0000000000000002" "00000020"
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "0000000000000003"
    )

    req = Request(b"op", 5, "c\u00e9", 7, b"sig")
    assert encode(req) == (
        b"\x01" + lp(b"op") + u64(5) + lp("c\u00e9".encode()) + u64(7) + lp(b"sig"))

    batch = Batch(9, (req,))
    assert encode(batch) == b"\x02" + u64(9) + U32.pack(1) + encode(req)
    assert encode(NULL_BATCH) == b"\x02" + u64(0) + U32.pack(0)

    env = Envelope("r", b"\x04", b"")
    assert encode(env) == bytes([100]) + lp(b"r") + lp(b"\x04") + lp(b"")


def test_request_digest_excludes_signature() -> None:
    signed = Request(b"op", 42, "client-1", 0, b"\x01" * 64)
    resigned = m.replace(signed, signature=b"\x02" * 64)
    unsigned = m.replace(signed, signature=b"")
    assert encode(signed) != encode(resigned)
    assert signed.digest() == resigned.digest() == unsigned.digest()
    assert signed.unsigned() == encode(unsigned)
    assert signed.digest() == hashlib.sha256(encode(unsigned)).digest() == digest_of(
        encode(unsigned))
    # ... but it covers every other field.
    for change in ({"op": b"op2"}, {"timestamp": 43}, {"client": "client-2"}, {"session": 1}):
        assert m.replace(signed, **change).digest() != signed.digest(), change


def test_signed_messages_unsigned_form_blanks_only_the_signature() -> None:
    cp = CHECKPOINTS[1]
    assert cp.unsigned() == encode(m.replace(cp, signature=b""))
    assert cp.unsigned() == m.replace(cp, signature=b"\xff" * 64).unsigned()
    vc = VIEW_CHANGES[0]
    assert vc.unsigned() == encode(m.replace(vc, signature=b""))
    assert vc.unsigned() != m.replace(vc, replica=9).unsigned()
    assert NEW_VIEW.unsigned() == encode(m.replace(NEW_VIEW, signature=b""))


def test_batch_digest_depends_on_timestamp_and_request_order() -> None:
    base = Batch(1000, (REQ1, REQ2))
    assert base.digest() == Batch(1000, (REQ1, REQ2)).digest()
    assert Batch(1001, (REQ1, REQ2)).digest() != base.digest()
    assert Batch(1000, (REQ2, REQ1)).digest() != base.digest()
    assert Batch(1000, (REQ1,)).digest() != base.digest()
    assert Batch(1000, ()).digest() != Batch(1001, ()).digest()
    assert NULL_BATCH.digest() == Batch(0, ()).digest()
    # The batch digest, like the request digest, does not depend on signatures.
    resigned = Batch(1000, (m.replace(REQ1, signature=b"\x00" * 64), REQ2))
    assert resigned.digest() == base.digest()
    assert len(base.digest()) == 32


def test_digest_of_is_sha256() -> None:
    assert digest_of(b"abc") == hashlib.sha256(b"abc").digest()


def test_encode_rejects_wrong_nested_type() -> None:
    # Compiled, the constructor refuses it (its field is typed); in pure Python, encoding does.
    with pytest.raises(TypeError):
        encode(PrePrepare(0, 1, b"", REQ1))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode(Batch(0, (REQ1, PREPARE)))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Hostile input: DecodeError and nothing else


def test_decode_empty() -> None:
    with pytest.raises(DecodeError):
        decode(b"")


@pytest.mark.parametrize("tag", [0, 16, 99, 101, 255])
def test_decode_unknown_tag(tag: int) -> None:
    assert tag not in m._BY_TAG
    with pytest.raises(DecodeError):
        decode(bytes([tag]))
    with pytest.raises(DecodeError):
        decode(bytes([tag]) + encode(PREPARE)[1:])


def test_decode_rejects_non_bytes() -> None:
    for bad in ("\x04abc", None, 4, [4, 0]):
        with pytest.raises(DecodeError):
            decode(bad)  # type: ignore[arg-type]


def test_decode_rejects_oversized_message() -> None:
    with pytest.raises(DecodeError):
        decode(b"\x64" + b"\x00" * MAX_MESSAGE_BYTES)


@pytest.mark.parametrize("data", ENCODED, ids=SAMPLE_IDS)
def test_decode_every_truncation(data: bytes) -> None:
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:cut])


@pytest.mark.parametrize("data", ENCODED, ids=SAMPLE_IDS)
def test_decode_trailing_bytes(data: bytes) -> None:
    for extra in (b"\x00", b"\xff", data):
        with pytest.raises(DecodeError):
            decode(data + extra)


@pytest.mark.parametrize("count", [(1 << 16) + 1, 0xFFFF_FFFF])
def test_decode_oversized_count(count: int) -> None:
    # Batch: tag, u64 timestamp, u32 count of requests.
    with pytest.raises(DecodeError):
        decode(b"\x02" + u64(0) + U32.pack(count))
    # ... even followed by plenty of bytes.
    with pytest.raises(DecodeError):
        decode(b"\x02" + u64(0) + U32.pack(count) + encode(REQ1) * 4)
    # ViewChange: the count of its checkpoint proof.
    vc = b"\x09" + u64(1) + u64(0) + U32.pack(count)
    with pytest.raises(DecodeError):
        decode(vc)


def test_decode_count_larger_than_remaining_items() -> None:
    data = b"\x02" + u64(0) + U32.pack(1 << 16)
    with pytest.raises(DecodeError):
        decode(data)
    data = b"\x02" + u64(0) + U32.pack(2) + encode(REQ1)
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("size", [33, 1 << 20, 0xFFFF_FFFF])
def test_decode_oversized_bytes_length(size: int) -> None:
    # FetchBatch: tag, bytes digest, u64 replica. Length claims more than is there.
    with pytest.raises(DecodeError):
        decode(b"\x0b" + U32.pack(size) + b"\x00" * 32 + u64(0))


def _request_with_raw_client(raw: bytes) -> bytes:
    return b"\x01" + lp(b"op") + u64(1) + lp(raw) + u64(0) + lp(b"s" * 64)


def test_decode_request_with_raw_client_helper_is_valid() -> None:
    assert decode(_request_with_raw_client(b"client-1")) == Request(
        b"op", 1, "client-1", 0, b"s" * 64)


@pytest.mark.parametrize(
    "raw",
    [b"\xff", b"client-\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf5\x80\x80\x80",
     b"\x80"],
    ids=["ff", "fe", "overlong-nul", "surrogate", "truncated-seq", "beyond-unicode", "lone-cont"],
)
def test_decode_invalid_utf8_in_string_field(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(_request_with_raw_client(raw))
    # Same check in other string fields: Reply.client and Envelope.sender.
    reply = b"\x06" + u64(0) + u64(0) + lp(raw) + u64(0) + u64(0) + lp(b"")
    with pytest.raises(DecodeError):
        decode(reply)
    with pytest.raises(DecodeError):
        decode(bytes([100]) + lp(raw) + lp(b"") + lp(b""))


def test_decode_overlong_string_field() -> None:
    assert isinstance(decode(_request_with_raw_client(b"a" * m._MAX_STR)), Request)
    with pytest.raises(DecodeError):
        decode(_request_with_raw_client(b"a" * (m._MAX_STR + 1)))


def _nested_tag_offset_pre_prepare(pp: PrePrepare) -> int:
    return 1 + 8 + 8 + 4 + len(pp.digest)


def test_decode_nested_message_with_wrong_tag() -> None:
    data = bytearray(encode(PRE_PREPARE))
    off = _nested_tag_offset_pre_prepare(PRE_PREPARE)
    assert data[off] == Batch.TAG
    for wrong in (0, Request.TAG, PrePrepare.TAG, CommittedBatch.TAG, 100, 255):
        data[off] = wrong
        with pytest.raises(DecodeError):
            decode(bytes(data))

    # A Checkpoint in a ViewChange's proof replaced by a SeqDigest (same leading fields shape).
    vc = ViewChange(1, 5, (), (), (), 0, b"")
    good = encode(m.replace(vc, checkpoint_proof=(CHECKPOINTS[0],)))
    head = b"\x09" + u64(1) + u64(5) + U32.pack(1)
    assert good.startswith(head)
    forged = head + encode(SeqDigest(5, b"d", 0)) + good[len(head) + len(encode(CHECKPOINTS[0])):]
    with pytest.raises(DecodeError):
        decode(forged)

    # A ViewChange inside a NewView with the tag of a NewView.
    nv = bytearray(encode(NewView(2, (VIEW_CHANGE_EMPTY,), (), 1, b"")))
    off = 1 + 8 + 4
    assert nv[off] == ViewChange.TAG
    nv[off] = NewView.TAG
    with pytest.raises(DecodeError):
        decode(bytes(nv))

    # Requests inside a Batch inside a BatchData.
    bd = bytearray(encode(BatchData(Batch(1, (REQ1,)), 0)))
    off = 1 + 1 + 8 + 4
    assert bd[off] == Request.TAG
    bd[off] = Batch.TAG
    with pytest.raises(DecodeError):
        decode(bytes(bd))


def test_decode_nested_message_missing_entirely() -> None:
    # A PrePrepare that ends right where its batch should start.
    data = encode(PRE_PREPARE)
    with pytest.raises(DecodeError):
        decode(data[:_nested_tag_offset_pre_prepare(PRE_PREPARE)])


# ---------------------------------------------------------------------------------------------
# Property tests

_TEXT = st.text(max_size=12)
_SMALL_BYTES = st.binary(max_size=40)


def _strategy_for(annotation: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    if annotation is int:
        return st.one_of(st.integers(0, 300), st.integers(0, MAX_U64))
    if annotation is bytes:
        return _SMALL_BYTES
    if annotation is str:
        return _TEXT
    if annotation is bool:
        return st.booleans()
    if typing.get_origin(annotation) is tuple:
        (item, _ellipsis) = typing.get_args(annotation)
        return st.lists(_strategy_for(item, depth + 1), max_size=3 if depth == 0 else 2).map(
            tuple)
    if isinstance(annotation, type) and issubclass(annotation, Message):
        return _message_strategy(annotation, depth + 1)
    raise TypeError(annotation)


def _annotated_fields() -> dict[str, dict[str, Any]]:
    """class name -> {field: type}, from the source's `name: Final[T]` annotations, in order
    (read from the source: the compiled classes keep no annotations)."""
    tree = ast.parse((ROOT / "node" / "messages.py").read_text())
    found: dict[str, dict[str, Any]] = {}
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for item in cls.body:
            if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                    and isinstance(item.annotation, ast.Subscript)
                    and ast.unparse(item.annotation.value) == "Final"):
                found.setdefault(cls.name, {})[item.target.id] = eval(  # our own source
                    ast.unparse(item.annotation.slice), vars(m))
    return found


_ANNOTATED = _annotated_fields()


def _field_types(cls: type[Message]) -> dict[str, Any]:
    """Each field's type (`name: Final[T]` in the class), in the order declared."""
    return _ANNOTATED[cls.__name__]


def _message_strategy(cls: type[Message], depth: int = 0) -> st.SearchStrategy[Message]:
    fields = [_strategy_for(ann, depth) for ann in _field_types(cls).values()]
    return st.tuples(*fields).map(lambda values: cls(*values))


MESSAGES = st.one_of([_message_strategy(cls) for cls in m._BY_TAG.values()])


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES)
def test_property_arbitrary_messages_round_trip(msg: Message) -> None:
    data = encode(msg)
    assert reference_encode(msg) == data
    back = decode(data)
    assert back == msg
    assert type(back) is type(msg)
    assert encode(back) == data
    assert reference_encode(back) == data


@given(MESSAGES, MESSAGES)
def test_property_encoding_is_injective(a: Message, b: Message) -> None:
    assert (encode(a) == encode(b)) == (a == b)


def reference_encode(msg: Message) -> bytes:
    """The canonical encoding written out from the module docstring's rules, field by field,
    independent of the generated codecs and of any bytes a message kept from decoding."""
    types = _field_types(type(msg))

    def field(value: Any, ann: Any) -> bytes:
        if ann is int:
            return struct.pack(">Q", value)
        if ann is bool:
            return bytes((1 if value else 0,))
        if ann is bytes or ann is str:
            raw = value.encode() if ann is str else value
            return struct.pack(">I", len(raw)) + raw
        if typing.get_origin(ann) is tuple:
            item = typing.get_args(ann)[0]
            return struct.pack(">I", len(value)) + b"".join(field(v, item) for v in value)
        return reference_encode(value)

    return bytes((msg.TAG,)) + b"".join(field(getattr(msg, name), ann)
                                         for name, ann in types.items())


def _check_decode(data: bytes) -> None:
    try:
        msg = decode(data)
    except DecodeError:
        return
    assert isinstance(msg, Message)
    assert encode(msg) == data
    # What was accepted is the canonical encoding of what it decoded to: so the bytes a
    # decoded request keeps (and encodes again, inside a batch) are exactly its fields'.
    assert reference_encode(msg) == data


@given(st.binary(max_size=300))
def test_property_arbitrary_bytes(data: bytes) -> None:
    _check_decode(data)


@given(st.sampled_from(sorted(m._BY_TAG)), st.binary(max_size=300))
def test_property_arbitrary_bytes_after_a_valid_tag(tag: int, body: bytes) -> None:
    _check_decode(bytes([tag]) + body)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.one_of(st.sampled_from(ENCODED), MESSAGES.map(encode))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set", "count"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            i = draw(st.integers(0, len(data) - 1))
            del data[i:i + draw(st.integers(1, 8))]
        elif op == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "count" and len(data) >= 4:
            # Overwrite 4 bytes with a big-endian length/count value of interest.
            i = draw(st.integers(0, len(data) - 4))
            value = draw(st.sampled_from([0, 1, 2, 255, 1 << 16, (1 << 16) + 1, 0xFFFF_FFFF]))
            data[i:i + 4] = U32.pack(value)
    return bytes(data)


@settings(max_examples=300)
@given(mutated_encodings())
def test_property_mutated_encodings(data: bytes) -> None:
    _check_decode(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(sender=st.text(max_size=8), payload=st.binary(max_size=40), mac=st.binary(max_size=40),
       cut=st.integers(0, 120), flip=st.integers(0, 120), extra=st.binary(max_size=3))
def test_open_envelope_agrees_with_decode_on_valid_and_damaged_bytes(
        sender: str, payload: bytes, mac: bytes, cut: int, flip: int, extra: bytes) -> None:
    """The hot-path envelope reader accepts exactly what decode() accepts as an Envelope,
    with the same fields, for intact, truncated, bit-flipped and extended encodings."""
    good = m.encode(m.Envelope(sender, payload, mac))
    damaged = bytearray(good[:cut] if cut < len(good) else good + extra)
    if damaged and flip < len(damaged):
        damaged[flip] ^= 0x41
    for data in (good, bytes(damaged)):
        try:
            expected: Any = m.decode(data)
        except m.DecodeError:
            expected = None
        if not isinstance(expected, m.Envelope):
            with pytest.raises(m.DecodeError):
                open_envelope(data)
        else:
            assert open_envelope(data) == (expected.sender, expected.payload, expected.mac)


def test_request_unsigned_is_remembered_without_changing_it() -> None:
    """Request.unsigned() is remembered by (op, timestamp, client, session): the same bytes
    as encoding the request with an empty signature, whatever the signature, and an op too
    large to remember is still encoded right."""
    req = m.Request(b"put k v", 7, "client-1", 0, b"\x01" * 64)
    expected = m.encode(m.Request(b"put k v", 7, "client-1", 0, b""))
    assert req.unsigned() == expected
    assert req.unsigned() is req.unsigned()  # remembered
    forged = m.Request(b"put k v", 7, "client-1", 0, b"\x02" * 64)
    assert forged.unsigned() == expected  # the signature is not signed over
    assert m.Request(b"put k w", 7, "client-1", 0, b"").unsigned() != expected
    big = m.Request(b"x" * (m._UNSIGNED_MAX_OP + 1), 1, "client-1", 0, b"")
    assert big.unsigned() == m.encode(m.Request(big.op, 1, "client-1", 0, b""))
    assert (big.op, 1, "client-1", 0) not in m._unsigned


def test_a_decoded_request_encodes_from_the_bytes_it_came_from() -> None:
    """A decoded request keeps its bytes: encoding it again (alone, or inside a batch and a
    block record) appends them, and its signed bytes are cut from them; a request built in
    code, or copied with a changed field, is encoded from its fields."""
    built = m.Request(b'{"kind":"X"}', 9, "client-1", 3, b"\x07" * 70)
    data = encode(built)
    got = decode(data)
    assert isinstance(got, Request)
    assert encode(got) is got._wire and got._wire == data  # no field encoded again
    assert got.unsigned() == encode(m.replace(built, signature=b""))
    assert got.digest() == built.digest() == m.digest_of(got.unsigned())
    inside = decode(encode(Batch(5, (built, built))))
    assert isinstance(inside, Batch)
    assert [r._wire for r in inside.requests] == [data, data]
    assert encode(CommittedBatch(2, 0, inside)) == encode(CommittedBatch(2, 0, Batch(5, (
        built, built))))
    changed = m.replace(got, signature=b"\x08" * 70)
    assert not hasattr(changed, "_wire")
    assert encode(changed) == reference_encode(changed) != data
    assert changed.unsigned() == got.unsigned()


def test_digests_are_computed_once_per_object_and_equal_for_equal_messages() -> None:
    req = m.Request(b"op", 1, "client-1", 0, b"sig")
    batch = Batch(11, (req,))
    assert req.digest() is req.digest()
    assert batch.digest() is batch.digest()
    again = decode(encode(batch))
    assert isinstance(again, Batch)
    assert again.digest() == batch.digest() == hashlib.sha256(
        b"medbft-batch" + struct.pack(">Q", 11) + req.digest()).digest()
    # The remembered digest is not a field: it changes neither equality, hash nor encoding.
    assert again == batch and hash(again) == hash(batch)
    other = m.replace(batch, timestamp_ns=12)
    assert other.digest() != batch.digest()
