"""Layer 2: an in-memory cluster of real replicas and clients, delivered by hand."""

from __future__ import annotations

import pytest

from node import messages as m
from node.config import Config
from sim.memnet import InMemoryCluster, Packet

SECOND = 1_000_000_000


def committed_everywhere(c: InMemoryCluster, live: list[str] | None = None) -> set[int]:
    live = live or list(c.replicas)
    return {c.replicas[r].last_executed for r in live}


def assert_agreement(c: InMemoryCluster) -> None:
    by_seq: dict[int, set[str]] = {}
    for rid in c.replicas:
        for seq, digest in c.executed(rid):
            by_seq.setdefault(seq, set()).add(digest)
    assert all(len(d) == 1 for d in by_seq.values()), by_seq


@pytest.mark.parametrize("n", [4, 5, 7, 10])
def test_normal_case_message_counts_match_the_expected_numbers(n: int) -> None:
    c = InMemoryCluster(n=n)
    c.submit(b"put a 1")
    c.deliver_all()
    assert len(c.accepted) == 1
    assert c.sent_kinds() == {
        "REQUEST": 1, "PRE-PREPARE": n - 1, "PREPARE": (n - 1) ** 2,
        "COMMIT": n * (n - 1), "REPLY": n,
    }
    assert sum(c.sent_kinds().values()) == 2 * n * n - n + 1


def test_with_f_silent_backups_messages_match_the_expected_numbers() -> None:
    c = InMemoryCluster(n=4)
    c.crash("r3")
    c.submit(b"put a 1")
    c.deliver_all()
    assert len(c.accepted) == 1
    assert sum(c.sent_kinds().values()) == 22


def test_primary_crash_view_change_then_progress_4_4() -> None:
    c = InMemoryCluster(n=4)
    c.submit(b"put a 1")
    c.deliver_all()
    c.crash("r0")
    c.submit(b"put a 2")
    c.deliver_all()
    c.advance(SECOND)  # client timeout: broadcast; backups relay and arm timers
    c.advance(SECOND)  # view-change timers fire; NEW-VIEW
    assert [a.view for _, a in c.accepted] == [0, 1]
    assert {c.replicas[r].view for r in ("r1", "r2", "r3")} == {1}
    assert committed_everywhere(c, ["r1", "r2", "r3"]) == {2}
    assert_agreement(c)


def test_prepared_request_survives_view_change_4_4() -> None:
    """The primary's COMMITs never leave it: backups prepared seq 1 but cannot commit (only 2 of
    3 commits); after the view change the new view must carry the same digest at seq 1."""
    c = InMemoryCluster(n=4)
    c.intercept = lambda p: [] if p.src == "r0" and p.kind == "COMMIT" else [p]
    c.crash("r3")
    c.submit(b"put a 1")
    c.deliver_all()
    digests = {c.replicas[r].log.slots[1].digest for r in ("r1", "r2")}
    assert all(c.replicas[r].log.slots[1].prepared for r in ("r1", "r2"))
    c.crash("r0")
    c.recover("r3")
    c.advance(3 * SECOND)
    assert c.accepted, "r0's reply plus one from the new view settle the request"
    assert all(c.replicas[r].view >= 1 for r in ("r1", "r2", "r3"))
    executions = [(s, d) for r in ("r1", "r2", "r3") for s, d in c.executed(r)]
    assert executions and {d for s, d in executions if s == 1} == {d.hex() for d in digests}
    assert_agreement(c)


def test_log_stays_bounded_by_checkpoints_4_3() -> None:
    cfg = Config(checkpoint_interval=4, watermark_window=8)
    c = InMemoryCluster(n=4, config=cfg)
    for i in range(40):
        c.submit(f"put k {i}".encode())
        c.deliver_all()
    assert len(c.accepted) == 40
    for r in c.replicas.values():
        assert r.h == 40
        assert len(r.log.slots) <= cfg.watermark_window
        assert len(r.log.executed) <= cfg.watermark_window
        assert all(s > r.h for s in r.checkpoints.votes)


def test_restarted_replica_catches_up_by_state_transfer() -> None:
    cfg = Config(checkpoint_interval=4, watermark_window=8)
    c = InMemoryCluster(n=4, config=cfg)
    c.crash("r3")
    for i in range(14):
        c.submit(f"put k {i}".encode())
        c.deliver_all()
    assert c.replicas["r3"].last_executed == 0
    c.recover("r3")
    c.deliver_all()
    r3 = c.replicas["r3"]
    assert r3.last_executed == 14, "checkpoint 12 plus batches 13, 14 vouched by f+1"
    assert r3.sm.snapshot() == c.replicas["r0"].sm.snapshot()
    assert_agreement(c)


def test_lost_pre_prepare_is_recovered_without_a_view_change() -> None:
    c = InMemoryCluster(n=4)
    c.intercept = lambda p: [] if (p.dst == "r3" and p.kind == "PRE-PREPARE") else [p]
    for i in range(3):
        c.submit(f"put k {i}".encode())
        c.deliver_all()
    assert c.replicas["r3"].last_executed == 0
    c.intercept = None
    c.advance(SECOND)
    assert c.replicas["r3"].last_executed == 3
    assert all(r.view == 0 and r.view_active for r in c.replicas.values())


def test_f_plus_1_crashed_commits_nothing_and_stays_safe_4_5() -> None:
    c = InMemoryCluster(n=4)
    c.submit(b"put a 1")
    c.deliver_all()
    c.crash("r2")
    c.crash("r3")
    c.submit(b"put a 2")
    c.deliver_all()
    c.advance(10 * SECOND)
    assert len(c.accepted) == 1
    assert {c.replicas[r].last_executed for r in ("r0", "r1")} == {1}
    r1 = c.replicas["r1"]
    # §4.5.2 rule 1: with only 2f replicas alive no quorum of VIEW-CHANGEs forms, so the
    # survivors wait in view 1 (re-sending VIEW-CHANGE) instead of racing ahead alone.
    assert r1.view == 1 and not r1.view_active
    assert_agreement(c)


def test_equivocating_primary_cannot_split_honest_replicas() -> None:
    """The primary sends a different batch to r3 than to r1 and r2: at most one can gather a
    prepare quorum, and no two honest replicas execute different batches."""
    c = InMemoryCluster(n=4)
    other = InMemoryCluster(n=4)  # same seed: same keys; used to mint a second valid batch
    other.submit(b"put evil 1")
    alt = next(p for p in other.queue if p.kind == "REQUEST")
    alt_req = m.decode(m.decode(alt.data).payload)

    def equivocate(p: Packet) -> list[Packet]:
        if p.src == "r0" and p.kind == "PRE-PREPARE" and p.dst == "r3":
            env = m.decode(p.data)
            pp = m.decode(env.payload)
            batch = m.Batch(pp.batch.timestamp_ns, (alt_req,))  # type: ignore[attr-defined]
            forged = m.PrePrepare(pp.view, pp.seq, batch.digest(), batch)  # type: ignore
            keys = c.replicas["r0"].keys
            payload = m.encode(forged)
            mac = keys.mac("r3", b"r0\x00" + payload)
            return [Packet(p.src, p.dst, m.encode(m.Envelope("r0", payload, mac)), p.kind)]
        return [p]

    c.intercept = equivocate
    c.submit(b"put a 1")
    c.deliver_all()
    c.advance(5 * SECOND)
    assert_agreement(c)
    assert c.accepted, "the client still gets an answer"


def test_restart_from_disk_keeps_votes_and_state() -> None:
    """Durable mode: a replica rebuilt from its Persist records (checkpoint, blocks, votes)
    has the same state, remembers the digest it pre-prepared, and catches up."""
    cfg = Config(checkpoint_interval=4, watermark_window=8, durable=True)
    c = InMemoryCluster(n=4, config=cfg)
    for i in range(10):
        c.submit(f"put k {i}".encode())
        c.deliver_all()
    c.intercept = lambda p: [] if p.kind == "COMMIT" else [p]  # seq 11 prepares, never commits
    c.submit(b"put k 10")
    c.deliver_all()
    pinned = c.replicas["r3"].log.slots[11].digest
    c.crash("r3")
    before = c.replicas["r3"].sm.snapshot()
    r3 = c.restart_from_disk("r3")
    assert r3.last_executed == 10 and r3.sm.snapshot() == before
    assert r3.log.slots[11].pre_prepared and r3.log.slots[11].digest == pinned
    assert 11 in r3.log.prepared
    c.intercept = None
    c.advance(3 * SECOND)
    assert_agreement(c)
    assert c.replicas["r3"].last_executed == c.replicas["r0"].last_executed == 11
