"""The ledger's per-transaction shortcuts give exactly what the plain computation gives.

Why this exists: `Ledger.execute` runs on every replica for every transaction, so it skips
work it can prove redundant (a block header encoded once, a row's digest term remembered,
the calendar date remembered per day, ...). Each shortcut must be invisible in every byte
of the results, the blocks and the digests; these tests compare each one with the
computation it replaces.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from ledger_support import DAY, GTIN, SECOND, Harness, epc, ev, genesis

from node import messages as m
from node.ledger import CheckedLedger, Ledger
from node.ledger.queries import verify_chain
from node.ledger.state import _ENC, _MASK, State, _listed, _row_hash
from node.statemachine import BlockInfo


def _scratch_acc(st: State) -> int:
    acc = 0
    for table, rows in st.tables.items():
        for key, value in rows.items():
            acc += _row_hash(table, key, value)
    return acc & _MASK


def test_block_entries_are_hashed_as_their_canonical_encoding() -> None:
    h = Harness()
    assert h.commission([1, 2, 3]) == "ok"
    assert h.ship("manufacturer-1", [1, 2], "dist-1") == "ok"
    two = [h.request("distributor-1", "EPCIS_RECEIVE", epcs=[epc(1)], event_hash=ev("r1")),
           h.request("distributor-1", "EPCIS_RECEIVE", epcs=[epc(2)], event_hash=ev("r2")),
           h.request("distributor-1", "EPCIS_RECEIVE", epcs=[epc(9)], event_hash=ev("r9"))]
    assert h.block(*two) == ["ok", "ok", "rejected:unknown-epc"]
    assert h.block() == []  # an empty block too
    st = h.ledger.state
    head = bytes(32)
    for entry in st.blocks.entries:
        head = hashlib.sha256(head + _ENC.encode(entry).encode()).digest()
        assert hashlib.sha256(_ENC.encode(entry[:-1]).encode()).hexdigest() == entry[-1]
    assert head == st.blocks.head
    assert verify_chain(h.ledger)["ok"]


def test_the_remembered_date_is_the_date_of_every_block_time() -> None:
    ledger = Ledger(Harness().ledger.genesis)
    epoch = ledger.genesis.epoch_ns
    stamps = [0, 1, SECOND - 1, DAY - 1, DAY, DAY + 1, 5 * DAY - 1, 3 * DAY, 400 * DAY + 7,
              DAY - 1]
    for ts in stamps:
        now = epoch + ts
        assert ledger._today(now) == datetime.fromtimestamp(now // 10**9,
                                                            tz=UTC).date().isoformat()
    # ... and a block whose agreed time crosses midnight sees the new day's date.
    h = Harness()
    assert h.commission([1], expiry="2025-03-02") == "ok"          # day 0: 2025-03-01
    h.ts += DAY
    assert h.commission([2], expiry="2025-03-02") == "ok"          # 2025-03-02: still valid
    h.ts += DAY
    assert h.commission([3], expiry="2025-03-02") == "rejected:expired"


def test_remembered_row_terms_keep_the_multiset_digest_exact() -> None:
    st = State()
    st.put("units", "a", ("g", "lot", "org", "active", None))
    st.put("units", "b", ("g", "lot", "org", "active", None))
    st.put("units", "a", ("g", "lot", "org", "in_transit", "x"))
    st.put("lots", "lot", ("g", "2026-01-01", "org", None))
    st.put("units", "b", None)
    st.put("units", "b", ("g", "lot", "org2", "active", None))
    assert st.acc == _scratch_acc(st)
    # A row replaced behind put's back (tampering) is hashed afresh when put overwrites it,
    # as the plain computation does: subtract the term of the row actually stored.
    row = st.tables["units"]["a"]
    stolen = (*row[:2], "thief", *row[3:])
    st.tables["units"]["a"] = stolen
    before = st.acc
    st.put("units", "a", row)
    assert st.acc == (before - _row_hash("units", "a", stolen)
                      + _row_hash("units", "a", row)) & _MASK


def test_a_restored_state_digests_and_continues_like_the_original() -> None:
    h = Harness()
    assert h.commission([1, 2]) == "ok"
    assert h.ship("manufacturer-1", [1], "dist-1") == "ok"
    other = Ledger(h.ledger.genesis)
    other.restore(h.ledger.snapshot())
    assert other.digest() == h.ledger.digest()
    req = h.request("distributor-1", "EPCIS_RECEIVE", epcs=[epc(1)], event_hash=ev("r"))
    block = BlockInfo(99, 0, h.ts + SECOND)
    assert h.ledger.execute([req], block) == other.execute([req], block) == [b"ok"]
    assert other.digest() == h.ledger.digest()
    assert other.state.acc == _scratch_acc(other.state) == _scratch_acc(h.ledger.state)
    assert GTIN in other.state.tables["gtins"]


def test_block_header_text_is_its_canonical_encoding() -> None:
    from node.ledger.ledger import _header_text

    hexes = (bytes(32).hex(), hashlib.sha256(b"r").hexdigest(), hashlib.sha256(b"s").hexdigest())
    for seq, ts in ((1, 0), (10**12, 2**63), (True, 5), (3, 1.5), (0, -7)):
        header = (7, seq, ts, *hexes, 2)
        assert _header_text(header) == _ENC.encode(header)


def test_a_remembered_transaction_decodes_as_json_loads_does() -> None:
    """Every caller gets json.loads's result, as its own dict (lists and dicts included)."""
    import json

    from node.ledger import encode_tx, txs

    ops = [encode_tx("EPCIS_SHIP", to="dist-1", epcs=[epc(1), epc(2)], event_hash=ev("x")),
           encode_tx("CONSENT_GRANT", consent_id="c-9", patient="pp:" + "a" * 20,
                     grantee="role:clinician", actions=["access"], purposes=["TREAT"],
                     period={"start": "2025-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
                     doc_commitment="sha256:" + "0" * 64),
           encode_tx("RECALL_ACK", recall_id="recall-1", on_hand=3)]
    for op in ops:
        first = txs.decode_tx(op)           # checked (or remembered from before)
        again = txs.decode_tx(op)           # remembered: a copy of the remembered decoding
        assert op in txs._checked and type(txs._checked[op]) is dict
        assert again == first == json.loads(op)
        assert list(again) == list(json.loads(op))
        assert again is not first
        for key, value in again.items():    # no mutable part shared with another caller
            if isinstance(value, (list, dict)):
                assert value is not first[key] and value is not txs._checked[op][key]
        again["epcs" if "epcs" in again else "kind"] = "changed"
        if "period" in again:
            again["period"]["start"] = "changed"
        assert txs.decode_tx(op) == json.loads(op)


def test_remembered_row_terms_are_the_row_hashes() -> None:
    from node.ledger.state import _row_term, _row_terms

    rows = [("units", "u1", ("g", "lot", "org", "active", None)),
            ("units", "u1", ("g", "lot", "org", "active", None)),     # remembered
            ("units", "u1", ("g", "lot", "org", "in_transit", "é\"\\")),
            ("incidents", "i1", ("epc:x", "c", "p", (1, 2), True, "open")),
            ("incidents", "i1", ("epc:x", "c", "p", (1, 2), 1, "open")),  # == the row above
            ("acks", "a1", ("p", 1.0, 1, (3, 4), 5)),
            ("acks", "a1", ("p", 1, 1, (3, 4), 5)),
            ("lots", "l", ("g", "2026-01-01", "org", None)),
            ("units", "u1", "not-a-tuple")]
    for table, key, value in rows:
        assert _row_term(table, key, value) == _row_hash(table, key, value)
    assert ("units", "u1", ("g", "lot", "org", "active", None)) in _row_terms
    assert not any(table in ("incidents", "acks") for table, _, _ in _row_terms)


def test_the_store_takes_what_python_takes() -> None:
    """`State` is compiled in the native build, where a typed argument is checked: keys and
    patients that are not strings, and rows (tuples, as the rules build them) holding any
    values, are stored and digested as plain Python does, never refused with a TypeError
    (this test runs under both builds: tests/test_native.py)."""
    st = State()
    st.put("units", 7, ("g", "lot", "org", True, 1.5, [1]))
    st.put("lots", "l", ("g", "2026-01-01", "org", None))
    st.put("lots", ("k",), ("g", "2026-01-02", "org", None))
    st.put("units", 7, None)
    st.count("ok", 3)
    st.add_audit(("t", 1, "actor", "x"), 12)
    assert st.get("units", 7) is None and st.get("lots", ("k",)) is not None
    assert st.acc == _scratch_acc(st) and st.stats["ok"] == {3: 1}
    assert st.audit_of_patient[12] == [0]


def test_remembered_leaves_are_the_leaves() -> None:
    from node.ledger.ledger import tx_leaf
    from node.messages import Request

    def plain(req: Request) -> bytes:
        head = f"{req.client}\x00{req.session}\x00{req.timestamp}\x00".encode()
        return hashlib.sha256(b"\x00" + head + req.op).digest()

    reqs = [Request(b'{"kind":"X"}', 5, "clinician-1", 1, b""),
            Request(b'{"kind":"X"}', 5, "clinician-1", 1, b"sig"),   # same leaf
            Request(b'{"kind":"X"}', 5, "clinician-1", True, b""),   # == 1, another leaf
            Request(b'{"kind":"X"}', 5, "clinician-1\x001", 0, b""),
            Request(b'{"kind":"Y"}', 5, "clinician-1", 1, b"")]
    for _ in range(2):
        assert [tx_leaf(r) for r in reqs] == [plain(r) for r in reqs]
    # Pure Python, the third request's session is True, another leaf than 1's; compiled, the
    # request's int field stored it as 1 (node.messages), so it is the first request again.
    assert len({tx_leaf(r) for r in reqs}) == (3 if m._COMPILED else 4)


def test_remembered_chain_links_are_the_links() -> None:
    from node.ledger.state import _link, _plain

    def plain_link(head: bytes, entry: tuple[object, ...]) -> bytes:
        return hashlib.sha256(head + _ENC.encode(entry).encode()).digest()

    head = hashlib.sha256(b"h").digest()
    entries: list[tuple[object, ...]] = [
        (3, 0, "EPCIS_SHIP", "mfr-1", (epc(1), epc(2)), "dist-1", ev("s")),
        (3, 0, "EPCIS_SHIP", "mfr-1", (epc(1), epc(2)), "dist-1", ev("s")),   # remembered
        (3, 0, "IMMUNIZATION_ADMINISTER", "h-1", (epc(3),), ("pp:x", "LOT", "imm-1"), ""),
        (3, 0, "a", "ACCESS_DECISION", "pp:x", "permit", True),     # == the next entry
        (3, 0, "a", "ACCESS_DECISION", "pp:x", "permit", 1),
        (3, 0, "a", "ACCESS_DECISION", "pp:x", "permit", 1.0),
        (3, 0, "a", "x", ((1, (2, False)),), None, "é"),
        (3, 0, "a", "x", ((1, (2, 0)),), None, "é"),
    ]
    for _ in range(2):
        for entry in entries:
            assert _link(head, entry) == plain_link(head, entry)
    assert [_plain(e) for e in entries] == [True, True, True, False, True, False, False, True]
    st = State()
    for entry in entries:
        st.audit.append(entry)
    assert st.audit.recompute() == st.audit.head


def test_remembered_block_hashes_are_the_hashes() -> None:
    from node.ledger.state import _block_hashes, block_sha256

    for data in (b"", b"x" * 213, bytes(range(256)), b"x" * 213):
        assert block_sha256(data) == hashlib.sha256(data).digest()
    assert b"x" * 213 in _block_hashes


def test_replicas_share_block_entries_only_when_they_print_alike() -> None:
    from node.ledger.ledger import _shared_entry

    h = Harness()
    req = h.request("manufacturer-1", "EPCIS_COMMISSION", epcs=[epc(1)], event_hash=ev("c1"))
    a, b = Ledger(h.ledger.genesis), Ledger(h.ledger.genesis)  # two replicas, one block
    assert a.execute([req], BlockInfo(1, 0, SECOND)) == b.execute([req], BlockInfo(1, 0, SECOND))
    assert a.state.blocks.entries[0] is b.state.blocks.entries[0]
    assert verify_chain(a)["ok"] and verify_chain(b)["ok"]
    # 1 == 1.0 == True, and they print differently: such an entry is never handed back shared
    ints = _shared_entry((7, 8, "x"))
    assert _shared_entry((7, 8, "x")) is ints
    assert type(_shared_entry((7, 8.0, "x"))[1]) is float
    assert type(_shared_entry((7, True, "x"))[1]) is bool


def _plain_snapshot(st: State, marks: tuple[int, int, int] | None = None) -> str:
    """The snapshot text as one encoding of the whole object (what `to_json` was)."""
    events, audit, blocks = marks or (len(st.events.entries), len(st.audit.entries),
                                      len(st.blocks.entries))
    return _ENC.encode({"v": 1, "tables": _listed(st.tables),
                        "events": st.events.entries[:events],
                        "audit": st.audit.entries[:audit],
                        "blocks": st.blocks.entries[:blocks], "stats": st.stats})


def test_snapshots_encode_only_new_log_entries_and_equal_the_whole_encoding() -> None:
    """A snapshot's log texts are kept and extended, never re-encoded from the start; the
    text is exactly the one-piece encoding, at every length, after earlier and shorter
    snapshots, and after an entry was replaced (tampered) in place."""
    h = Harness()
    st = h.ledger.state
    assert st.to_json() == _plain_snapshot(st)
    assert h.commission([1, 2, 3]) == "ok"
    first = st.to_json()
    assert first == _plain_snapshot(st)
    kept_events = st.events._encoded[1]
    assert h.ship("manufacturer-1", [1, 2], "dist-1") == "ok"
    assert h.block() == []
    assert st.to_json() == _plain_snapshot(st)
    assert st.events._encoded[1].startswith(kept_events[:-1])  # extended, not rebuilt
    # A shorter cut (an older checkpoint) after a longer one.
    short = (1, 1, 1)
    text = st._snapshot_text(st.tables, *short, st.stats)
    assert text == _plain_snapshot(st, short)
    assert st.to_json() == _plain_snapshot(st)
    # An entry replaced in place, even by an equal one that prints differently (False == 0).
    entry = st.blocks.entries[0]
    st.blocks.entries[0] = (*entry[:-1], "tampered")
    assert st.to_json() == _plain_snapshot(st) != first
    flag = st.events.entries[0]
    st.events.entries[0] = tuple(False if v == 0 and type(v) is int else v for v in flag)
    assert st.events.entries[0] == flag
    assert st.to_json() == _plain_snapshot(st)
    assert _ENC.encode(flag) in first and _ENC.encode(st.events.entries[0]) not in first


# -- blocks replayed from another ledger of the process (Executions) --------------------------

def _everything(ledger: Ledger) -> tuple[object, ...]:
    """All a ledger holds that an execution writes: snapshot, digest, summary, the derived
    indexes, the views and the remembered checkpoint versions."""
    st = ledger.state
    indexes = tuple(sorted((k, list(v)) for k, v in idx.items() if v) for idx in (
        st.trace_idx, st.lot_units, st.lot_patients, st.consents_of, st.audit_of_patient,
        st.audit_of_actor))
    return (ledger.snapshot(), ledger.digest(), ledger.summary(), indexes, dict(ledger.views),
            {seq: ledger.snapshot_at(seq) for seq in sorted(st.marks)})


def _recorded_blocks() -> list[tuple[list[object], BlockInfo]]:
    """The blocks of a hand-built flow touching every kind of write: rows put, overwritten
    and indexed, events and audit entries, a counterfeit's incident, rejections, an access
    decision, a block of several requests and an empty one."""
    import ledger_support
    from test_ledger_rules import hand_built_flow
    blocks: list[tuple[list[object], BlockInfo]] = []
    real = CheckedLedger.execute

    def record(self: CheckedLedger, requests: list[object], block: BlockInfo) -> list[bytes]:
        blocks.append((list(requests), block))
        return real(self, requests, block)  # type: ignore[arg-type]

    CheckedLedger.execute = record  # type: ignore[method-assign]
    try:
        h = hand_built_flow()
        assert h.commission([1]) == "rejected:counterfeit-suspected"
        assert h.grant("patient-1", "hospital-1", "clinician-1") == "ok"
        assert h.anchor("clinician-1", "patient-1", "hospital-1") == "ok"
        assert h.tx("clinician-1", "ACCESS_REQUEST", patient=ledger_support.pp(
            "patient-1", "hospital-1"), record_id="r-1", purpose="TREAT") == "permit:custodian"
        assert h.tx("patient-1", "CONSENT_REVOKE", consent_id="c-1") == "ok"
        assert h.tx("patient-2", "RECALL_CLOSE", recall_id="recall-1").startswith("rejected:")
        assert h.block(h.request("distributor-1", "RECALL_ACK", recall_id="recall-1",
                                 on_hand=1),
                       h.request("distributor-1", "RECALL_ACK", recall_id="recall-1",
                                 on_hand=1)) == ["ok", "rejected:already-acked"]
        assert h.block() == []
    finally:
        CheckedLedger.execute = real  # type: ignore[method-assign]
    return blocks


def test_a_replayed_block_leaves_exactly_what_executing_it_leaves() -> None:
    from node.ledger import Executions

    blocks = _recorded_blocks()
    g = genesis()
    executions = Executions()
    plain, first, second = Ledger(g), Ledger(g, executions), Ledger(g, executions)
    for i, (requests, block) in enumerate(blocks):
        expected = plain.execute(requests, block)  # type: ignore[arg-type]
        hits = executions.hits
        assert first.execute(requests, block) == expected  # type: ignore[arg-type]
        assert executions.hits == hits, "the first ledger computes the block"
        assert second.execute(requests, block) == expected  # type: ignore[arg-type]
        assert executions.hits == hits + 1, "the second replays it"
        if i % 4 == 3:  # checkpoints: the versions a snapshot at them needs are kept alike
            for ledger in (plain, first, second):
                ledger.checkpoint(block.seq)
        assert _everything(first) == _everything(plain), i
        assert _everything(second) == _everything(plain), i
    assert verify_chain(second)["ok"]
    assert executions.hits == len(blocks) and executions.misses == len(blocks)


def test_a_ledger_with_another_state_computes_its_blocks() -> None:
    """Tampered, or given another block first: its digest differs, so nothing is replayed
    into it, and it ends as a ledger without the memo would."""
    from medbft.harm import tamper_ledger
    from node.ledger import Executions

    blocks = _recorded_blocks()
    g = genesis()
    half = len(blocks) - 5  # after the counterfeit's audit entry
    for target in ("audit", "blocks", "state"):
        executions = Executions()
        honest, tampered, plain = Ledger(g, executions), Ledger(g, executions), Ledger(g)
        for requests, block in blocks[:half]:
            for ledger in (honest, tampered, plain):
                ledger.execute(requests, block)  # type: ignore[arg-type]
        assert "nothing altered" not in tamper_ledger(tampered, target)
        tamper_ledger(plain, target)
        for requests, block in blocks[half:]:
            honest.execute(requests, block)  # type: ignore[arg-type]
            hits = executions.hits
            assert tampered.execute(requests, block) == plain.execute(  # type: ignore[arg-type]
                requests, block)  # type: ignore[arg-type]
            assert executions.hits == hits, target
            assert _everything(tampered) == _everything(plain), target
        assert _everything(tampered) != _everything(honest)
    # A block of other requests, or at another seq or time, is another block.
    executions = Executions()
    a, b = Ledger(g, executions), Ledger(g, executions)
    requests, block = blocks[0]
    a.execute(requests, block)  # type: ignore[arg-type]
    b.execute(requests, BlockInfo(block.seq, block.view, block.timestamp_ns + 1))  # type: ignore[arg-type]
    b2 = Ledger(g, executions)
    b2.execute(requests, BlockInfo(block.seq + 1, block.view, block.timestamp_ns))  # type: ignore[arg-type]
    assert executions.hits == 0 and executions.misses == 3
    assert a.digest() != b.digest() and a.digest() != b2.digest()


def test_executions_forget_the_oldest_block_beyond_their_bound() -> None:
    from node.ledger import Executions

    executions = Executions(limit=2)
    for key in ("a", "b", "c"):
        executions.put(key, key)
    assert executions.get("a") is None and executions.get("c") == "c"
    assert (executions.hits, executions.misses) == (1, 1)


def test_admission_is_asked_once_per_process_and_per_genesis(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import node.ledger.ledger as ledger_module
    from node.ledger import Executions

    h = Harness()
    ops = [h.request("manufacturer-1", "GTIN_REGISTER", gtin=GTIN).op,
           h.request("manufacturer-1", "EPCIS_SHIP", epcs=[epc(1)], to="nowhere",
                     event_hash=ev("s")).op,
           b"not json", b'{"kind": "NO_SUCH_KIND"}']
    g, other = genesis(), genesis((("client-9", "clinician"),))
    expected = [Ledger(g).admissible(op) for op in ops]
    assert expected[0] is None and all(v is not None for v in expected[1:])
    decoded: list[bytes] = []
    real = ledger_module.decode_tx

    def counting(op: bytes) -> dict[str, object]:
        decoded.append(op)
        return real(op)

    monkeypatch.setattr(ledger_module, "decode_tx", counting)
    executions = Executions()
    first, second = Ledger(g, executions), Ledger(g, executions)
    assert [first.admissible(op) for op in ops] == expected
    assert len(decoded) == len(ops)
    assert [second.admissible(op) for op in ops] == expected
    assert len(decoded) == len(ops), "the second replica asks nobody"
    assert [Ledger(other, executions).admissible(op) for op in ops] == expected
    assert len(decoded) == 2 * len(ops), "another genesis is asked again"
    # The replica whose verdict came from the record decodes the op when it executes it.
    assert second.execute([h.request("manufacturer-1", "GTIN_REGISTER", gtin=GTIN)],
                          BlockInfo(1, 0, SECOND)) == [b"ok"]


def test_requests_alike_but_for_session_or_timestamp_make_other_blocks() -> None:
    """The same op from the same client in another session or at another timestamp is another
    transaction (its Merkle leaf differs): a block of it is computed, not replayed, and its
    header is its own."""
    from node.ledger import Executions

    h = Harness()
    req = h.request("manufacturer-1", "GTIN_REGISTER", gtin=GTIN)
    others = [m.replace(req, session=req.session + 1),
              m.replace(req, timestamp=req.timestamp + 1)]
    g = genesis()
    executions = Executions()
    block = BlockInfo(1, 0, SECOND)
    first = Ledger(g, executions)
    first.execute([req], block)
    for other in others:
        ledger, plain = Ledger(g, executions), Ledger(g)
        assert ledger.execute([other], block) == plain.execute([other], block)
        assert _everything(ledger) == _everything(plain)
        assert ledger.state.blocks.entries != first.state.blocks.entries
    assert executions.hits == 0
