"""The asyncio shell around a sans-I/O replica: events in from a transport and timers, effects
out to the transport, timers and a trace sink.

Why this exists: the protocol core must run unchanged on the simulator's virtual-time loop
and on a real asyncio loop. This runtime is the only code between them and the core; it knows
nothing of which loop it is on (it uses the integer-nanosecond helpers of the virtual loop
when present and plain `loop.time()` otherwise).

A CPU model may be attached (simulation): each event is then processed only when the node's
single CPU is free, its cost (from the core's operation counters) keeps the CPU busy, and the
effects take place when the processing ends, so crypto and O(n^2) load queue up as they would
on a real machine. Without one, effects take place at once (real mode: the real CPU pays).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from node.crypto import Costs
from node.events import (
    CancelTimer,
    Effect,
    Event,
    Multicast,
    Receive,
    Send,
    SetTimer,
    Start,
    Timeout,
    Trace,
)

__all__ = ["CostModel", "NodeRuntime", "TraceSink", "Transport"]


class Transport(Protocol):
    """Puts messages on the wire. A transport may also offer
    `multicast(src, to: tuple[str, ...], data: tuple[bytes, ...], kind)`, which must deliver
    exactly what sending each copy in order would (the simulator's does it in one go, the
    MQTT transport publishes a multicast to every other replica once); the runtime sends the
    copies one by one when it does not."""

    def send(self, src: str, to: str, data: bytes, kind: str) -> None: ...


class Core(Protocol):
    """What a runtime drives: a replica core (every `Event`) or a client core (`Receive` and
    `Timeout` only). `step` returns effects: the runtime carries out `Send`, `SetTimer`,
    `CancelTimer`, `Trace` and `Persist` and hands any other kind (a client's `Accepted`) to
    `on_other`."""

    id: str
    costs: Costs

    def step(self, event: Any, now_ns: int) -> Sequence[object]: ...


CostModel = Callable[[tuple[int, ...], tuple[int, ...]], int]
"""(counters before, counters after) -> nanoseconds of CPU the step took."""

TraceSink = Callable[[str, int, Trace], None]
"""(node id, time in ns, trace effect) -> None."""


def loop_now_ns(loop: asyncio.AbstractEventLoop) -> int:
    now = getattr(loop, "now_ns", None)
    return now if type(now) is int else round(loop.time() * 1e9)


def call_later_ns(
    loop: asyncio.AbstractEventLoop, delay_ns: int, callback: Callable[..., Any], *args: Any
) -> asyncio.TimerHandle:
    exact = getattr(loop, "call_later_ns", None)
    if exact is not None:
        return exact(delay_ns, callback, *args)  # type: ignore[no-any-return]
    return loop.call_later(delay_ns / 1e9, callback, *args)


class NodeRuntime:
    """Owns one core; feeds it events; carries out its effects."""

    def __init__(
        self,
        core: Core,
        transport: Transport,
        loop: asyncio.AbstractEventLoop,
        *,
        cost_model: CostModel | None = None,
        trace: TraceSink | None = None,
        on_other: Callable[[Effect | Any], None] | None = None,
    ) -> None:
        self.core = core
        self.id = core.id
        self.transport = transport
        self._multicast: Callable[[str, tuple[str, ...], tuple[bytes, ...], str], None] | None
        self._multicast = getattr(transport, "multicast", None)
        self.loop = loop
        self.cost_model = cost_model
        self.trace_sink = trace
        self.on_other = on_other
        self.crashed = False
        self.busy_ns = 0
        self.slowdown = 1.0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._inbox: deque[Event] = deque()
        self._busy_until_ns = 0
        # A loop that keeps integer virtual time (the simulator's) is read directly.
        self._virtual_clock = type(getattr(loop, "now_ns", None)) is int
        self._wakeup: asyncio.TimerHandle | None = None
        self._pending_apply: asyncio.TimerHandle | None = None

    @property
    def core(self) -> Core:
        return self._core

    @core.setter
    def core(self, core: Core) -> None:
        """A fault may swap the core (a Byzantine shell around the replica, and back)."""
        self._core = core
        # A replica takes a message's bytes directly (`Replica.receive`: no Receive event
        # built per message); other cores, and a Byzantine shell, take the event.
        self._receive_bytes: Callable[[bytes, int], Sequence[object]] | None = getattr(
            core, "receive", None)

    # -- inputs -------------------------------------------------------------------------------

    def start(self, recovering: bool = False) -> None:
        self.crashed = False
        self._submit(Start(recovering))

    def receive(self, data: bytes) -> None:
        if self.crashed:
            return
        if self.cost_model is None:  # the common path, once per message: no queue
            loop = self.loop
            now = loop.now_ns if self._virtual_clock else loop_now_ns(loop)  # type: ignore[attr-defined]
            fast = self._receive_bytes
            effects = fast(data, now) if fast is not None else self._core.step(Receive(data), now)
            if effects:  # most messages change state and send nothing
                self._apply(effects)
        else:
            self._submit(Receive(data))

    def crash(self) -> None:
        """Stop: nothing in or out, timers off; the core (durable state) is kept."""
        self.crashed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._inbox.clear()
        for pending in (self._wakeup, self._pending_apply):
            if pending is not None:
                pending.cancel()
        self._wakeup = self._pending_apply = None
        self._busy_until_ns = 0

    def recover(self) -> None:
        self.start(recovering=True)

    # -- processing ---------------------------------------------------------------------------

    def _submit(self, event: Event) -> None:
        if self.cost_model is None:
            self._apply(self._core.step(event, loop_now_ns(self.loop)))
            return
        self._inbox.append(event)
        if self._wakeup is None:
            self._drain()

    def _drain(self) -> None:
        self._wakeup = None
        loop = self.loop
        now = loop.now_ns if self._virtual_clock else loop_now_ns(loop)  # type: ignore[attr-defined]
        if now < self._busy_until_ns:
            self._wakeup = call_later_ns(loop, self._busy_until_ns - now, self._drain)
            return
        if not self._inbox or self.crashed:
            return
        event = self._inbox.popleft()
        core = self._core
        before = core.costs.snapshot()
        effects = core.step(event, now)
        assert self.cost_model is not None
        cost = round(self.cost_model(before, core.costs.snapshot()) * self.slowdown)
        self.busy_ns += cost
        self._busy_until_ns = now + cost
        if cost > 0:
            if self._inbox:
                # The effects and the next event are both due at now + cost, the one right
                # after the other: one timer runs both, in that order (as two would).
                self._pending_apply = self._wakeup = call_later_ns(
                    loop, cost, self._apply_then_drain, effects)
            else:
                self._pending_apply = call_later_ns(loop, cost, self._apply_later, effects)
            return
        self._apply(effects)
        if self._inbox:
            self._wakeup = call_later_ns(loop, cost, self._drain)

    def _apply_later(self, effects: Sequence[object]) -> None:
        self._pending_apply = None
        self._apply(effects)

    def _apply_then_drain(self, effects: Sequence[object]) -> None:
        self._pending_apply = None
        self._apply(effects)
        self._drain()

    def apply(self, effects: Sequence[object]) -> None:
        """Carry out effects produced outside `step` (e.g. a client's `submit`)."""
        self._apply(effects)

    def _apply(self, effects: Sequence[Any]) -> None:
        if self.crashed or not effects:
            return
        send, me = self.transport.send, self.id
        for eff in effects:
            kind = type(eff)
            if kind is Send:
                send(me, eff.to, eff.data, eff.kind)
            elif kind is Multicast:
                if self._multicast is not None:
                    self._multicast(me, eff.to, eff.data, eff.kind)
                else:
                    for to, data in zip(eff.to, eff.data, strict=True):
                        send(me, to, data, eff.kind)
            elif kind is SetTimer:
                old = self._timers.get(eff.key)  # type: ignore[union-attr]
                if old is not None:
                    old.cancel()
                self._timers[eff.key] = call_later_ns(  # type: ignore[union-attr]
                    self.loop, eff.delay_ns, self._fire, eff.key  # type: ignore[union-attr]
                )
            elif kind is CancelTimer:
                handle = self._timers.pop(eff.key, None)  # type: ignore[union-attr]
                if handle is not None:
                    handle.cancel()
            elif kind is Trace:
                if self.trace_sink is not None:
                    self.trace_sink(self.id, loop_now_ns(self.loop), eff)
            elif self.on_other is not None:
                self.on_other(eff)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        if not self.crashed:
            self._submit(Timeout(key))
