"""medbft/traffic/workload.py: simulated clients on the virtual-time loop, with no replicas.
The closed loop keeps `outstanding` requests in flight per client and refills a session the
moment its reply settles; the open loop offers Poisson arrivals at `rate` whether or not the
replies come, opening sessions (then queueing) as needed. One seed gives one arrival sequence.
Replies are handed in as the client core's `Accepted` effects."""

from __future__ import annotations

import functools
import itertools
import random
from types import SimpleNamespace
from typing import Any

import pytest

import medbft.traffic.workload as workload_module
from medbft.traffic.workload import IDLE_RETRY_NS, Workload
from node import messages as m
from node.client import Accepted, Client
from node.crypto import Costs, Keyring
from node.runtime import NodeRuntime
from sim.loop import VirtualTimeLoop
from sim.memnet import make_membership

MS = 1_000_000
S = 1_000_000_000


class Wire:
    """A transport that records each REQUEST as (time, client, session, timestamp, op)."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self.loop = loop
        self.requests: list[tuple[int, str, int, int, bytes]] = []

    def send(self, src: str, to: str, data: bytes, kind: str) -> None:
        req = m.decode(m.decode(data).payload)
        assert isinstance(req, m.Request) and kind == "REQUEST" and to == "r0"
        self.requests.append((self.loop.now_ns, src, req.session, req.timestamp, req.op))


def make(loop: VirtualTimeLoop, spec: Any, clients: int = 1, seed: int = 1,
         duration_ns: int = S, **kw: Any) -> tuple[Workload, Wire]:
    membership, idents = make_membership(4, clients)
    pubs = membership.public_keys()
    wire = Wire(loop)
    cores: dict[str, tuple[Client, NodeRuntime]] = {}
    holder: list[Workload] = []
    for c in membership.clients:
        core = Client(membership, Keyring(idents[c.id], pubs, Costs()), 10 * S)
        on_other = functools.partial(lambda cid, eff: holder[0].on_effect(cid, eff), c.id)
        cores[c.id] = (core, NodeRuntime(core, wire, loop, on_other=on_other))
    w = Workload(spec, cores, duration_ns, random.Random(seed), **kw)
    holder.append(w)
    w.replica_keys = {r: Keyring(idents[r], pubs, Costs())  # type: ignore[attr-defined]
                      for r in ("r0", "r1")}
    return w, wire


def closed(outstanding: int, **kw: Any) -> SimpleNamespace:
    return SimpleNamespace(outstanding=outstanding, rate_per_s=None, op_size_bytes=16, **kw)


def open_loop(rate: float) -> SimpleNamespace:
    return SimpleNamespace(outstanding=None, rate_per_s=rate, op_size_bytes=16)


def settle(w: Workload, cid: str, session: int, timestamp: int) -> None:
    """f+1 = 2 replicas reply `ok` to the request, through the client's core and runtime."""
    for index, rid in enumerate(("r0", "r1")):
        payload = m.encode(m.Reply(0, timestamp, cid, session, index, b"ok"))
        mac = w.replica_keys[rid].mac(cid, rid.encode() + b"\x00" + payload)  # type: ignore
        w.clients[cid][1].receive(m.encode(m.Envelope(rid, payload, mac)))


# -- closed loop ---------------------------------------------------------------------------------


def test_closed_loop_starts_outstanding_requests_per_client_at_once(vloop: VirtualTimeLoop) -> None:
    w, wire = make(vloop, closed(3), clients=2)
    w.start()
    assert [(t, c, s, ts) for t, c, s, ts, _ in wire.requests] == [
        (0, "client-1", 0, 1), (0, "client-1", 1, 1), (0, "client-1", 2, 1),
        (0, "client-2", 0, 1), (0, "client-2", 1, 1), (0, "client-2", 2, 1)]
    assert (w.submitted, w.settled, len(w.outstanding)) == (6, 0, 6)
    vloop.run_until_ns(2 * S)
    assert len(wire.requests) == 6, "no reply, no new request: the loop is closed"


def test_closed_loop_refills_a_session_when_its_reply_settles(vloop: VirtualTimeLoop) -> None:
    w, wire = make(vloop, closed(2))
    submitted: list[str] = []
    w.on_submit = submitted.append
    w.start()
    vloop.run_until_ns(30 * MS)
    settle(w, "client-1", 1, 1)
    assert wire.requests[-1][:4] == (30 * MS, "client-1", 1, 2)
    record = w.records["client-1/1/1"]
    assert (record.submit_ns, record.commit_ns, record.latency_ns) == (0, 30 * MS, 30 * MS)
    assert (w.submitted, w.settled) == (3, 1)
    assert submitted == ["client-1/0/1", "client-1/1/1", "client-1/1/2"]


def test_closed_loop_stops_refilling_after_the_duration(vloop: VirtualTimeLoop) -> None:
    w, wire = make(vloop, closed(1), duration_ns=100 * MS)
    w.start()
    vloop.run_until_ns(150 * MS)
    settle(w, "client-1", 0, 1)
    assert len(wire.requests) == 1
    assert w.free_sessions["client-1"] == [0]


def test_a_reply_to_an_old_timestamp_or_another_effect_is_ignored(vloop: VirtualTimeLoop) -> None:
    w, wire = make(vloop, closed(1))
    w.start()
    w.on_effect("client-1", Accepted(0, 7, b"ok", 0))  # not the request in flight
    w.on_effect("client-1", object())
    assert (w.settled, len(wire.requests)) == (0, 1)


# -- open loop -----------------------------------------------------------------------------------


def test_open_loop_offers_the_rate_without_waiting_for_replies(vloop: VirtualTimeLoop) -> None:
    w, wire = make(vloop, open_loop(200.0), duration_ns=2 * S)
    w.start()
    vloop.run_until_ns(3 * S)
    times = [t for t, *_ in wire.requests]
    assert 340 <= len(times) <= 460, "about 200/s for 2 s"
    assert times == sorted(times) and times[0] > 0 and times[-1] < 2 * S
    # Nothing settled, so each arrival opened its own session.
    assert [s for _, _, s, _, _ in wire.requests] == list(range(len(times)))
    assert w.submitted == len(times) and w.settled == 0


def test_open_loop_splits_the_rate_among_clients(vloop: VirtualTimeLoop) -> None:
    w, wire = make(vloop, open_loop(400.0), clients=4, duration_ns=2 * S)
    w.start()
    vloop.run_until_ns(3 * S)
    per_client = {c: sum(1 for _, cid, *_ in wire.requests if cid == c)
                  for c in ("client-1", "client-2", "client-3", "client-4")}
    assert all(140 <= k <= 260 for k in per_client.values()), per_client


def test_open_loop_arrival_gaps_are_exponential(vloop: VirtualTimeLoop) -> None:
    w, wire = make(vloop, open_loop(1000.0), duration_ns=5 * S, seed=3)
    w.start()
    vloop.run_until_ns(6 * S)
    times = [0] + [t for t, *_ in wire.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean = sum(gaps) / len(gaps)
    assert 0.9 * MS < mean < 1.1 * MS
    # Memoryless: about e^-1 of the gaps exceed the mean (a fixed interval would give 0).
    assert 0.32 < sum(1 for g in gaps if g > mean) / len(gaps) < 0.42


def test_open_loop_reuses_a_free_session(vloop: VirtualTimeLoop) -> None:
    w, wire = make(vloop, open_loop(100.0))
    w.start()
    while not wire.requests:
        vloop.run_for_ns(MS)
    settle(w, "client-1", 0, 1)
    assert w.free_sessions["client-1"] == [0]
    n = len(wire.requests)
    while len(wire.requests) == n:
        vloop.run_for_ns(MS)
    assert wire.requests[-1][2:4] == (0, 2), "the next arrival takes the free session 0"


def test_open_loop_queues_arrivals_beyond_the_session_bound(
        vloop: VirtualTimeLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workload_module, "MAX_SESSIONS_PER_CLIENT", 2)
    w, wire = make(vloop, open_loop(100.0))
    w.start()
    while w.submitted < 4:
        vloop.run_for_ns(MS)
    assert len(wire.requests) == 2 and len(w.backlog["client-1"]) == 2
    queued_at = w.backlog["client-1"][0]
    now = vloop.now_ns
    settle(w, "client-1", 1, 1)
    assert wire.requests[-1][:4] == (now, "client-1", 1, 2)
    assert w.records["client-1/1/2"].submit_ns == queued_at, "latency counts from arrival"
    assert w.submitted == 4, "a queued arrival is counted once"


# -- determinism ---------------------------------------------------------------------------------


def _trace(spec: Any, seed: int) -> list[tuple[int, str, int, int, bytes]]:
    loop = VirtualTimeLoop()
    try:
        w, wire = make(loop, spec, clients=2, seed=seed, duration_ns=S)
        w.start()
        loop.run_until_ns(2 * S)
        return wire.requests
    finally:
        loop.close()


def test_one_seed_gives_one_workload_and_another_seed_another() -> None:
    first = _trace(open_loop(300.0), seed=7)
    assert first == _trace(open_loop(300.0), seed=7)
    other = _trace(open_loop(300.0), seed=8)
    assert [t for t, *_ in other] != [t for t, *_ in first]
    assert [op for *_, op in other] != [op for *_, op in first]


def test_ops_are_put_requests_of_the_configured_size(vloop: VirtualTimeLoop) -> None:
    w, wire = make(vloop, closed(2))
    w.start()
    for *_, op in wire.requests:
        verb, key, value = op.decode().split(" ")
        assert verb == "put" and key.startswith("k") and len(value) == 16
    assert wire.requests[0][4] != wire.requests[1][4]


# -- supplied traffic ----------------------------------------------------------------------------


class Ops:
    """Traffic that has nothing to submit before `ready_ns`, then numbered ops."""

    def __init__(self, ready_ns: int) -> None:
        self.ready_ns = ready_ns
        self.asked: list[tuple[str, int, int]] = []
        self.results: list[tuple[str, int, bytes]] = []
        self.followups: list[Any] = []

    def next_op(self, client: str, session: int, now_ns: int) -> bytes | None:
        self.asked.append((client, session, now_ns))
        return None if now_ns < self.ready_ns else f"op{len(self.asked)}".encode()

    def on_result(self, client: str, session: int, result: bytes, now_ns: int) -> None:
        self.results.append((client, session, result))
        self.answered_at = now_ns


def test_when_the_traffic_has_nothing_the_session_asks_again_later(
        vloop: VirtualTimeLoop) -> None:
    ops = Ops(ready_ns=2 * IDLE_RETRY_NS + 1)
    w, wire = make(vloop, closed(1), ops=ops)
    w.start()
    vloop.run_until_ns(4 * IDLE_RETRY_NS)
    assert [t for _, _, t in ops.asked] == [0, IDLE_RETRY_NS, 2 * IDLE_RETRY_NS,
                                            3 * IDLE_RETRY_NS]
    assert [(t, op) for t, _, _, _, op in wire.requests] == [(3 * IDLE_RETRY_NS, b"op4")]
    vloop.run_until_ns(4 * IDLE_RETRY_NS + 5 * MS)
    settle(w, "client-1", 0, 1)
    assert ops.results == [("client-1", 0, b"ok")]
    assert ops.answered_at == 4 * IDLE_RETRY_NS + 5 * MS, "told when the answer came"


def test_an_identity_the_traffic_never_has_anything_for_is_not_asked_again(
        vloop: VirtualTimeLoop) -> None:
    """`ops.never_acts(client)` (a ledger auditor): its sessions ask once and stop, where
    they would ask every IDLE_RETRY_NS for the whole run; the others are asked as before."""
    ops = Ops(ready_ns=S)
    ops.never_acts = lambda cid: cid == "client-1"  # type: ignore[attr-defined]
    w, _ = make(vloop, closed(2), clients=2, ops=ops)
    assert w.idle_forever == {"client-1"}
    w.start()
    vloop.run_until_ns(5 * IDLE_RETRY_NS)
    asked = [(c, t) for c, _, t in ops.asked]
    assert [t for c, t in asked if c == "client-1"] == [0, 0]
    assert len([t for c, t in asked if c == "client-2"]) == 2 * 6
    assert w.submitted == 0


def test_a_gated_client_waits_and_its_latency_counts_the_wait(vloop: VirtualTimeLoop) -> None:
    gate = {"open": False}
    w, wire = make(vloop, closed(1), may_submit=lambda cid: gate["open"])
    w.start()
    vloop.run_until_ns(5 * IDLE_RETRY_NS - 1)
    assert wire.requests == []
    gate["open"] = True
    vloop.run_until_ns(6 * IDLE_RETRY_NS)
    assert [t for t, *_ in wire.requests] == [5 * IDLE_RETRY_NS]
    assert w.records["client-1/0/1"].submit_ns == 0, "the time at the closed gate counts"
