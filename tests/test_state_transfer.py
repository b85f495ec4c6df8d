"""State transfer in chunks and checkpoints that serialise nothing: a replica that lags fetches a
state larger than one message, a corrupted chunk is dropped and fetched elsewhere, checkpoint
digests are functions of the state alone, and remembered checkpoints restore exactly."""

from __future__ import annotations

import random

from node import messages as m
from node.config import Config
from node.ledger.state import State
from node.pbft.checkpoint import CHUNK_BYTES
from node.statemachine import KeyValueStore
from sim.memnet import InMemoryCluster, Packet

SECOND = 1_000_000_000
BIG_VALUES = 18  # x 1 MiB: the snapshot is larger than MAX_MESSAGE_BYTES (16 MiB)


def _big_cluster() -> InMemoryCluster:
    """r3 crashed; r0..r2 hold > 16 MiB of state and took checkpoints 4, 8, 12 over it."""
    c = InMemoryCluster(n=4, config=Config(checkpoint_interval=4, watermark_window=8))
    c.crash("r3")
    for rid in ("r0", "r1", "r2"):
        sm = c.replicas[rid].sm
        assert isinstance(sm, KeyValueStore)
        for i in range(BIG_VALUES):
            sm.put(f"big-{i:02d}", chr(ord("a") + i) * (1024 * 1024))
    for i in range(14):
        c.submit(f"put k {i}".encode())
        c.deliver_all()
    assert c.replicas["r0"].h == 12
    return c


def _state_data(p: Packet) -> m.StateData | None:
    if p.kind != "STATE-DATA":
        return None
    sd = m.decode(m.decode(p.data).payload)  # type: ignore[attr-defined]
    assert isinstance(sd, m.StateData)
    return sd


def _recover_r3(c: InMemoryCluster, seconds: int) -> None:
    """Restart r3 and give it up to `seconds` of virtual time to catch up to seq 14."""
    c.recover("r3")
    c.deliver_all()
    for _ in range(seconds):
        if c.replicas["r3"].last_executed == 14:
            break
        c.advance(SECOND)


def test_a_lagging_replica_transfers_a_state_larger_than_one_message() -> None:
    c = _big_cluster()
    _recover_r3(c, seconds=5)
    r3, r0 = c.replicas["r3"], c.replicas["r0"]
    assert len(r0.sm.snapshot()) > m.MAX_MESSAGE_BYTES
    assert r3.last_executed == 14
    assert r3.sm.digest() == r0.sm.digest() and r3.sm.snapshot() == r0.sm.snapshot()
    assert r3.h == 12 and r3.checkpoints.holds_stable
    datas = [p for p in c.sent if p.kind == "STATE-DATA"]
    assert max(len(p.data) for p in datas) < m.MAX_MESSAGE_BYTES
    chunks = {sd.chunk_index for p in datas if (sd := _state_data(p)) and sd.chunk_hashes}
    assert len(chunks) > m.MAX_MESSAGE_BYTES // CHUNK_BYTES
    assert not any(v for k, v in r3.dropped.items() if "chunk" in str(k) or "snapshot" in str(k))


def test_a_corrupted_chunk_is_dropped_and_fetched_from_another_replica() -> None:
    c = _big_cluster()

    def corrupt(p: Packet) -> list[Packet]:
        sd = _state_data(p)
        if p.src != "r1" or sd is None or sd.chunk_index == 0 or not sd.chunk_hashes:
            return [p]
        bad = m.StateData(sd.stable_seq, sd.checkpoint_proof, sd.chunk_hashes, sd.chunk_index,
                          b"\x00" + sd.chunk[1:], sd.committed, sd.view, sd.new_view,
                          sd.replica)
        payload = m.encode(bad)
        mac = c.replicas["r1"].keys.mac(p.dst, b"r1\x00" + payload)
        return [Packet(p.src, p.dst, m.encode(m.Envelope("r1", payload, mac)), p.kind)]

    c.intercept = corrupt
    _recover_r3(c, seconds=10)
    r3, r0 = c.replicas["r3"], c.replicas["r0"]
    assert r3.last_executed == 14
    assert r3.sm.digest() == r0.sm.digest()
    bad = sum(v for k, v in r3.dropped.items() if "state chunk does not match its hash" in str(k))
    assert bad > 0, r3.dropped


def test_checkpoint_digests_agree_and_serialise_nothing() -> None:
    c = InMemoryCluster(n=4, config=Config(checkpoint_interval=4, watermark_window=8))
    calls = []
    for r in c.replicas.values():
        sm = r.sm
        assert isinstance(sm, KeyValueStore)
        sm.snapshot_at = lambda seq, _f=sm.snapshot_at: calls.append(seq) or _f(seq)  # type: ignore
    for i in range(13):
        c.submit(f"put k{i % 3} {i}".encode())
        c.deliver_all()
    digests = {(p, t.fields["seq"]): t.fields["digest"] for p, t in c.traces
               if t.event == "checkpoint"}
    for seq in (4, 8, 12):
        assert len({digests[(r, seq)] for r in c.replicas}) == 1
    assert all(r.h == 12 for r in c.replicas.values())
    assert calls == [], "nothing is serialised when no one asks for state"


def test_kv_digest_is_a_function_of_the_state_alone() -> None:
    a, b = KeyValueStore(), KeyValueStore()
    a.put("x", "1")
    a.put("y", "2")
    a.put("x", "3")
    b.put("y", "2")
    b.put("x", "3")
    assert a.digest() == b.digest() and a.snapshot() == b.snapshot()
    c = KeyValueStore()
    c.restore(a.snapshot())
    assert c.digest() == a.digest()


def test_remembered_checkpoints_serialise_the_state_they_had() -> None:
    rng = random.Random(5)
    kv, st = KeyValueStore(), State()
    seen_kv: dict[int, bytes] = {}
    seen_st: dict[int, str] = {}
    for seq in range(1, 40):
        for _ in range(rng.randrange(4)):
            kv.put(f"k{rng.randrange(8)}", str(rng.randrange(100)))
            key = f"r{rng.randrange(8)}"
            st.put("records", key, None if rng.random() < 0.2 else (rng.randrange(9), key))
            st.add_event((seq, 0, "EV", "org", (), None, ""))
            st.count("ok", rng.choice("ab"))
        if seq % 3 == 0:
            kv.checkpoint(seq)
            st.mark(seq)
            seen_kv[seq], seen_st[seq] = kv.snapshot(), st.to_json()
        if seq % 9 == 0:
            kv.release(seq - 6)
            st.release(seq - 6)
    for seq in seen_kv:
        if seq >= 30:
            assert kv.snapshot_at(seq) == seen_kv[seq]
            assert st.to_json_at(seq) == seen_st[seq]
