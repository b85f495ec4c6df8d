"""A replica restored from an older copy of its database catches up on an idle network.

Why this exists: a restarted replica asks for state once; if nobody answers in time (links
still coming up) and no client traffic shows it is behind, it used to stay behind for good,
and answers that arrived late were dropped. These check, in the hand-driven in-memory
cluster (deterministic), that it retries with backoff and uses late answers.
"""

from __future__ import annotations

import copy

from node.config import Config
from node.pbft.transfer import PERSISTENT_IDLE_ROUNDS
from sim.memnet import InMemoryCluster, Packet

CONFIG = Config(durable=True, checkpoint_interval=4, watermark_window=8)


def _behind_after_restore() -> InMemoryCluster:
    """r3 restarts from the copy of its disk taken after 2 of 10 requests."""
    c = InMemoryCluster(n=4, config=CONFIG)
    old = None
    for i in range(10):
        c.submit(f"put k{i} v{i}".encode())
        c.deliver_all()
        if i == 1:
            old = copy.deepcopy(c.disk["r3"])
    assert old is not None and c.replicas["r0"].last_executed == 10
    c.crash("r3")
    c.disk["r3"] = old
    return c


def test_a_restored_replica_retries_until_it_catches_up_on_an_idle_network() -> None:
    c = _behind_after_restore()
    c.isolate("r3")  # its links are not up yet: the first FETCH-STATEs are lost
    r3 = c.restart_from_disk("r3")
    assert r3.last_executed == 2
    c.deliver_all()
    c.advance(3 * CONFIG.fetch_timeout_ns)
    assert r3.last_executed == 2
    c.heal()
    c.advance(30_000_000_000)  # no client traffic: only its own retries can help
    assert r3.last_executed == 10
    assert r3.sm.digest() == c.replicas["r0"].sm.digest()
    # Bounded: once caught up it stops asking after a bounded number of idle rounds.
    fetches = sum(1 for p in c.sent if p.src == "r3" and p.kind == "FETCH-STATE")
    c.advance(60_000_000_000)
    assert sum(1 for p in c.sent if p.src == "r3" and p.kind == "FETCH-STATE") == fetches
    assert not r3.transfer.fetching


def test_retries_back_off_in_virtual_time() -> None:
    c = _behind_after_restore()
    c.isolate("r3")
    c.restart_from_disk("r3")
    c.deliver_all()
    rounds = []
    for _ in range(8):
        due = c.timers["r3"]["fetch"]
        rounds.append(due - c.now_ns)
        c.advance(due - c.now_ns)
    t = CONFIG.fetch_timeout_ns
    assert rounds == [t, 2 * t, 4 * t, 8 * t, 16 * t, 32 * t, 32 * t, 32 * t]


def test_a_late_answer_with_newer_state_is_used() -> None:
    c = _behind_after_restore()
    held: list[Packet] = []

    def hold(pkt: Packet) -> list[Packet]:
        if pkt.dst == "r3" and pkt.kind == "STATE-DATA":
            held.append(pkt)
            return []
        return [pkt]

    c.intercept = hold
    r3 = c.restart_from_disk("r3")
    c.deliver_all()
    for _ in range(PERSISTENT_IDLE_ROUNDS + 1):
        c.fire("r3", "fetch")
        c.deliver_all()
    assert not r3.transfer.fetching and r3.last_executed == 2 and held
    c.intercept = None
    c.queue.extend(held)  # the answers arrive after the fetch gave up
    c.deliver_all()
    c.advance(10 * CONFIG.fetch_timeout_ns)
    assert r3.last_executed == 10
    assert r3.sm.digest() == c.replicas["r0"].sm.digest()
