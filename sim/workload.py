"""Simulated clients: closed loop (`outstanding` requests per client) or open loop (Poisson
`rate`), submitting signed requests through the real client core.

Why this exists: the load shape decides what a run measures. A closed loop measures latency
at a fixed concurrency (throughput follows Little's law, X = N / L); an open loop offers a
rate whether or not the system keeps up, which is what exposes queueing and overload.
Each client identity runs sessions (one request in flight each, as in the paper); the open
loop opens a new session when all are busy, up to a bound, and queues arrivals beyond it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from node.client import Accepted, Client
from node.runtime import NodeRuntime, call_later_ns, loop_now_ns
from sim.metrics import RequestRecord

__all__ = ["Workload"]

MAX_SESSIONS_PER_CLIENT = 1024


class Workload:
    def __init__(
        self,
        spec: object,
        clients: dict[str, tuple[Client, NodeRuntime]],
        duration_ns: int,
        rng: random.Random,
        on_submit: Callable[[str], None] = lambda key: None,
    ) -> None:
        self.spec = spec
        self.clients = clients
        self.duration_ns = duration_ns
        self.rng = rng
        self.on_submit = on_submit
        self.records: dict[str, RequestRecord] = {}
        self.outstanding: dict[tuple[str, int], RequestRecord] = {}
        self.free_sessions: dict[str, list[int]] = {c: [] for c in clients}
        self.sessions_open: dict[str, int] = {c: 0 for c in clients}
        self.backlog: dict[str, deque[int]] = {c: deque() for c in clients}
        self.op_size = int(getattr(spec, "op_size_bytes", 64))
        self.submitted = 0
        self.settled = 0
        self.loop = next(iter(clients.values()))[1].loop if clients else None
        self._counter = 0

    # -- starting -----------------------------------------------------------------------------

    def start(self) -> None:
        outstanding = getattr(self.spec, "outstanding", None)
        rate = getattr(self.spec, "rate_per_s", None)
        for cid in sorted(self.clients):
            if outstanding:
                for session in range(outstanding):
                    self._submit(cid, session, loop_now_ns(self._loop(cid)))
            elif rate:
                self._schedule_arrival(cid, rate / len(self.clients))

    def _loop(self, cid: str):  # type: ignore[no-untyped-def]
        return self.clients[cid][1].loop

    def _schedule_arrival(self, cid: str, rate_per_s: float) -> None:
        gap_ns = round(self.rng.expovariate(rate_per_s) * 1e9)
        loop = self._loop(cid)
        if loop_now_ns(loop) + gap_ns >= self.duration_ns:
            return
        call_later_ns(loop, gap_ns, self._arrival, cid, rate_per_s)

    def _arrival(self, cid: str, rate_per_s: float) -> None:
        now = loop_now_ns(self._loop(cid))
        free = self.free_sessions[cid]
        if free:
            self._submit(cid, free.pop(), now)
        elif self.sessions_open[cid] < MAX_SESSIONS_PER_CLIENT:
            self._submit(cid, self.sessions_open[cid], now)
        else:
            self.backlog[cid].append(now)
            self.submitted += 1
        self._schedule_arrival(cid, rate_per_s)

    # -- requests -----------------------------------------------------------------------------

    def _op(self) -> bytes:
        self._counter += 1
        key = f"k{self.rng.randrange(1_000_000)}"
        value = self.rng.randbytes(max(1, self.op_size // 2)).hex()[: self.op_size]
        return f"put {key} {value}".encode()

    def _submit(self, cid: str, session: int, arrived_ns: int, counted: bool = False) -> None:
        client, runtime = self.clients[cid]
        self.sessions_open[cid] = max(self.sessions_open[cid], session + 1)
        effects = client.submit(session, self._op())
        record = RequestRecord(cid, session, client.timestamps[session], arrived_ns)
        self.records[record.key] = record
        self.on_submit(record.key)
        self.outstanding[(cid, session)] = record
        if not counted:
            self.submitted += 1
        runtime.apply(effects)

    def on_effect(self, cid: str, eff: object) -> None:
        if type(eff) is not Accepted:
            return
        record = self.outstanding.pop((cid, eff.session), None)
        if record is None or record.timestamp != eff.timestamp:
            return
        now = loop_now_ns(self._loop(cid))
        record.commit_ns = now
        record.view = eff.view
        self.settled += 1
        if self.backlog[cid]:
            self._submit(cid, eff.session, self.backlog[cid].popleft(), counted=True)
        elif getattr(self.spec, "outstanding", None) and now < self.duration_ns:
            self._submit(cid, eff.session, now)
        else:
            self.free_sessions[cid].append(eff.session)
