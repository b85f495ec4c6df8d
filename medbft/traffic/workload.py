"""Simulated clients: closed loop (`outstanding` requests per client) or open loop (Poisson
`rate`), submitting signed requests through the real client core.

Why this exists: the load shape decides what a run measures. A closed loop measures latency
at a fixed concurrency (throughput follows Little's law, X = N / L); an open loop offers a
rate whether or not the system keeps up, which is what exposes queueing and overload.
Each client identity runs sessions (one request in flight each, as in the paper); the open
loop opens a new session when all are busy, up to a bound, and queues arrivals beyond it.

What is submitted comes from `ops` when given (the healthcare ledger's traffic,
medbft/traffic/ledger.py: `next_op(client, session, now_ns) -> bytes | None` and
`on_result(client, session, result, now_ns)`), else tiny `put k v` ops (protocol tests). When
`ops` has nothing for an identity right now, its session asks again `IDLE_RETRY_NS` later; when
`may_submit(client)` is false (its organisation's gateway node is down), it waits likewise.
An identity for which `ops.never_acts(client)` is true (an auditor: it only reads, and acts
in scripted stories only) is not asked again: its sessions asked every 20 ms for the whole
run and never got anything (at n = 4, 800 idle asks against 1,111 requests in 2 s).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

from medbft.metrics import RequestRecord
from node.client import Accepted, Client
from node.runtime import NodeRuntime, call_later_ns, loop_now_ns

__all__ = ["Workload"]

MAX_SESSIONS_PER_CLIENT = 1024
IDLE_RETRY_NS = 20_000_000
SCRIPTED_SESSION_BASE = 1_000_000  # sessions of scripted (story) transactions


class Workload:
    def __init__(
        self,
        spec: object,
        clients: dict[str, tuple[Client, NodeRuntime]],
        duration_ns: int,
        rng: random.Random,
        on_submit: Callable[[str], None] = lambda key: None,
        ops: Any = None,
        may_submit: Callable[[str], bool] | None = None,
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
        self.ops = ops
        self.may_submit = may_submit
        self.scripted_sessions = 0
        never_acts = getattr(ops, "never_acts", None)
        self.idle_forever = frozenset(
            c for c in clients if never_acts is not None and never_acts(c))
        """Identities `ops` never has a transaction for (see the module docstring)."""

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
        for at_ns, build in getattr(self.ops, "script", list)():
            if self.loop is not None:
                call_later_ns(self.loop, at_ns, self._scripted, build)

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

    def _next_op(self, cid: str, session: int) -> bytes | None:
        if self.ops is None:
            return self._op()
        op: bytes | None = self.ops.next_op(cid, session, loop_now_ns(self._loop(cid)))
        return op

    def _retry(self, cid: str, session: int, arrived_ns: int | None, counted: bool) -> None:
        now = loop_now_ns(self._loop(cid))
        if now < self.duration_ns:
            self._submit(cid, session, now if arrived_ns is None else arrived_ns, counted)
        elif counted:
            self.submitted -= 1  # a queued arrival that never found anything to submit

    def _scripted(self, build: Callable[[], list[tuple[str, Any]]]) -> None:
        for cid, pending in build():
            if cid in self.clients:
                self.scripted_sessions += 1
                session = SCRIPTED_SESSION_BASE + self.scripted_sessions
                self._submit(cid, session, loop_now_ns(self._loop(cid)),
                             op=self.ops.submit_scripted(cid, session, pending))

    def submit_one(self, cid: str) -> None:
        """One request more from `cid`, now, in a session of its own that ends when it is
        answered (a scenario's `request` fault; the studio's "send a client request")."""
        if cid not in self.clients:
            return
        self.scripted_sessions += 1
        self._submit(cid, SCRIPTED_SESSION_BASE + self.scripted_sessions,
                     loop_now_ns(self._loop(cid)))

    def _submit(self, cid: str, session: int, arrived_ns: int, counted: bool = False,
                op: bytes | None = None) -> None:
        client, runtime = self.clients[cid]
        if session < SCRIPTED_SESSION_BASE:  # reserve the session even while it waits
            self.sessions_open[cid] = max(self.sessions_open[cid], session + 1)
        gated = op is None and self.may_submit is not None and not self.may_submit(cid)
        op = op if op is not None or gated else self._next_op(cid, session)
        if op is None:  # the gateway is down (the wait counts), or nothing to do right now
            if not gated and cid in self.idle_forever:
                if counted:  # as _retry does once the run is over
                    self.submitted -= 1
                return
            call_later_ns(self._loop(cid), IDLE_RETRY_NS, self._retry, cid, session,
                          arrived_ns if gated else None, counted)
            return
        effects = client.submit(session, op)
        record = RequestRecord(cid, session, client.timestamps[session], arrived_ns)
        key = record.key  # a property that formats the key: once per request
        self.records[key] = record
        self.on_submit(key)
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
        if self.ops is not None:
            self.ops.on_result(cid, eff.session, eff.result, now)
            while self.ops.followups:
                self._scripted(lambda: [self.ops.followups.pop(0)])
        if eff.session >= SCRIPTED_SESSION_BASE:
            return
        if self.backlog[cid]:
            self._submit(cid, eff.session, self.backlog[cid].popleft(), counted=True)
        elif getattr(self.spec, "outstanding", None) and now < self.duration_ns:
            self._submit(cid, eff.session, now)
        else:
            self.free_sessions[cid].append(eff.session)
