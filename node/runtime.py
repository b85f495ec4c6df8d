"""The asyncio shell around a sans-I/O replica: events in from a transport and timers, effects
out to the transport, timers and a trace sink.

Why this exists: the protocol core must run unchanged on the simulator's virtual-time loop
and on a real asyncio loop. This runtime is the only code between them and the core; it knows
nothing of which loop it is on (it uses the integer-nanosecond helpers of the virtual loop
when present and plain `loop.time()` otherwise).

A CPU model may be attached (simulation): each event is then processed only when the node's
single CPU is free, its cost (from the core's operation counters) keeps the CPU busy, and the
effects take place when the processing ends, so crypto and O(n^2) load queue up as they would
on a real machine. Runtimes may share a `Processor` (the simulator's clients: one load
generator) and a machine's `Cores` (a whole cluster on one host): a step then also waits for a
free core. Without a model, effects take place at once (real mode: the real CPU pays).
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

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

# The effect types as Final names: compiled (medbft native build), a Final module constant is
# a C static, where any other module-level name is a dictionary lookup on every use.
_SEND: Final = Send
_MULTICAST: Final = Multicast
_SET_TIMER: Final = SetTimer
_CANCEL_TIMER: Final = CancelTimer
_TRACE: Final = Trace

__all__ = ["Cores", "CostModel", "NodeRuntime", "Processor", "TraceSink", "Transport"]


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


LaterNs = Callable[..., asyncio.TimerHandle]
"""`later(delay_ns, callback, *args)`: a timer on one loop (`later_ns`)."""


def later_ns(loop: asyncio.AbstractEventLoop) -> LaterNs:
    """`call_later_ns` bound to `loop` once: the virtual loop's own exact method, or float
    seconds on any other loop. A runtime with a CPU model sets a timer per simulated step,
    so the lookup is not repeated per timer."""
    exact: LaterNs | None = getattr(loop, "call_later_ns", None)
    if exact is not None:
        return exact
    return functools.partial(call_later_ns, loop)


StepLater = Callable[[int, Callable[[Any], object], Any], object]
"""`later(delay_ns, callback, arg)`: a CPU-model timer (`step_timers`); cancel it with the
function `step_timers` returned beside it."""


def step_timers(loop: asyncio.AbstractEventLoop) -> tuple[StepLater, Callable[[Any], None]]:
    """How a runtime with a CPU model times its steps, and how it cancels such a timer. It
    sets one per simulated message, so on the virtual loop these are its handle-free
    `call_plain_ns` timers; any other loop gets ordinary timer handles."""
    plain = getattr(loop, "call_plain_ns", None)
    if plain is not None:
        return plain, loop.cancel_plain  # type: ignore[attr-defined]
    return later_ns(loop), _cancel_handle


def _cancel_handle(handle: asyncio.TimerHandle) -> None:
    handle.cancel()


class Processor:
    """One serial CPU (a process's thread): busy until `busy_until_ns`. A replica has its own;
    the simulator's clients share one, as one load-generator process would."""

    __slots__ = ("busy_until_ns",)

    def __init__(self) -> None:
        self.busy_until_ns = 0


class Cores:
    """A machine's cores, shared by the processors of every runtime on it (simulation, with a
    CPU model): a step runs only while it holds a core. A runtime that finds none free waits
    in line; cores that come free go to the runtimes in the order they asked, like a fair
    scheduler's run queue (a runtime that just finished a step and has more to do goes to the
    back of the line, it does not keep its core)."""

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        if count < 1:
            raise ValueError(f"a machine needs at least one core, not {count}")
        self.free_at = [0] * count
        self.loop = loop
        self._waiting: deque[Callable[[], None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def request(self, now: int, granted: Callable[[], None]) -> bool:
        """True: a core is free now and nobody waits, so the caller takes it at once (and then
        calls `hold`). False: `granted` is called when a core is the caller's."""
        if not self._waiting and min(self.free_at) <= now:
            return True
        self._waiting.append(granted)
        self._arm(now)
        return False

    def hold(self, now: int, cost_ns: int) -> None:
        """The caller, given a core at `now`, keeps it for `cost_ns`."""
        free_at = self.free_at
        i = free_at.index(min(free_at))
        free_at[i] = now + cost_ns

    def _arm(self, now: int) -> None:
        if self._timer is None and self._waiting:
            self._timer = call_later_ns(self.loop, max(0, min(self.free_at) - now), self._grant)

    def _grant(self) -> None:
        """Hand every core free now to the longest waiters (each grantee calls `hold` or, with
        nothing left to do, passes its turn on by not holding)."""
        self._timer = None
        now = loop_now_ns(self.loop)
        while self._waiting and min(self.free_at) <= now:
            self._waiting.popleft()()
        self._arm(now)


class NodeRuntime:
    """Owns one core; feeds it events; carries out its effects."""

    def __init__(
        self,
        core: Core,
        transport: Transport,
        loop: asyncio.AbstractEventLoop,
        *,
        cost_model: CostModel | None = None,
        processor: Processor | None = None,
        cores: Cores | None = None,
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
        self._later_ns = later_ns(loop)
        self._step_later, self._cancel_step = step_timers(loop)
        # With a CPU model, what waits for the CPU: a received message as its bytes (handed
        # to `Replica.receive` like the model-free path, no `Receive` built), other events.
        self._inbox: deque[Event | bytes] = deque()
        self.processor = processor if processor is not None else Processor()
        self._shared_processor = processor is not None
        self.cores = cores
        self._awaiting_core = False
        # A loop that keeps integer virtual time (the simulator's) is read directly.
        self._virtual_clock = type(getattr(loop, "now_ns", None)) is int
        # The CPU model's pending timers (`step_timers`): the next step, and the effects of
        # the step in progress (often one timer for both).
        self._wakeup: object | None = None
        self._pending_apply: object | None = None

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
            self._enqueue(data)

    def crash(self) -> None:
        """Stop: nothing in or out, timers off; the core (durable state) is kept."""
        self.crashed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._inbox.clear()
        for pending in (self._wakeup, self._pending_apply):
            if pending is not None:
                self._cancel_step(pending)
        self._wakeup = self._pending_apply = None
        if not self._shared_processor:  # the step in progress is lost with the node
            self.processor.busy_until_ns = 0

    def recover(self) -> None:
        self.start(recovering=True)

    # -- processing ---------------------------------------------------------------------------

    def _submit(self, event: Event) -> None:
        if self.cost_model is None:
            self._apply(self._core.step(event, loop_now_ns(self.loop)))
            return
        self._enqueue(event)

    def _enqueue(self, item: Event | bytes) -> None:
        """With a CPU model: queue `item` for the processor, and take it now if the
        processor is idle (no step timed, no core awaited)."""
        self._inbox.append(item)
        if self._wakeup is None and not self._awaiting_core:
            self._drain()

    def _drain(self, granted: bool = False) -> None:
        """Take the next event if the processor is free (and, on a machine with `Cores`, once
        a core is ours: `granted`)."""
        self._wakeup = None
        loop = self.loop
        now = loop.now_ns if self._virtual_clock else loop_now_ns(loop)  # type: ignore[attr-defined]
        busy_until = self.processor.busy_until_ns
        if now < busy_until:  # a granted core we cannot use goes to the next in line
            self._wakeup = self._step_later(busy_until - now, self._drain, False)
            return
        if not self._inbox or self.crashed:
            return
        cores = self.cores
        if cores is not None and not granted and not cores.request(now, self._on_core):
            self._awaiting_core = True
            return
        event = self._inbox.popleft()
        core = self._core
        before = core.costs.snapshot()
        if type(event) is bytes:
            fast = self._receive_bytes
            effects = fast(event, now) if fast is not None else core.step(Receive(event), now)
        else:
            effects = core.step(event, now)
        assert self.cost_model is not None
        cost = round(self.cost_model(before, core.costs.snapshot()) * self.slowdown)
        self.busy_ns += cost
        self.processor.busy_until_ns = now + cost
        if cores is not None:
            cores.hold(now, cost)
        if cost > 0:
            if self._inbox:
                # The effects and the next event are both due at now + cost, the one right
                # after the other: one timer runs both, in that order (as two would).
                self._pending_apply = self._wakeup = self._step_later(
                    cost, self._apply_then_drain, effects)
            else:
                self._pending_apply = self._step_later(cost, self._apply_later, effects)
            return
        self._apply(effects)
        if self._inbox:
            self._wakeup = self._step_later(cost, self._drain, False)

    def _on_core(self) -> None:
        """A core is ours (`Cores`): take a step on it, unless there is nothing to do or the
        processor we share is busy after all (then the core goes to the next in line)."""
        self._awaiting_core = False
        self._drain(granted=True)

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
            if kind is _SEND:
                send(me, eff.to, eff.data, eff.kind)
            elif kind is _MULTICAST:
                if self._multicast is not None:
                    self._multicast(me, eff.to, eff.data, eff.kind)
                else:
                    for to, data in zip(eff.to, eff.data, strict=True):
                        send(me, to, data, eff.kind)
            elif kind is _SET_TIMER:
                old = self._timers.get(eff.key)  # type: ignore[union-attr]
                if old is not None:
                    old.cancel()
                self._timers[eff.key] = self._later_ns(  # type: ignore[union-attr]
                    eff.delay_ns, self._fire, eff.key  # type: ignore[union-attr]
                )
            elif kind is _CANCEL_TIMER:
                handle = self._timers.pop(eff.key, None)  # type: ignore[union-attr]
                if handle is not None:
                    handle.cancel()
            elif kind is _TRACE:
                if self.trace_sink is not None:
                    self.trace_sink(self.id, loop_now_ns(self.loop), eff)
            elif self.on_other is not None:
                self.on_other(eff)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        if not self.crashed:
            self._submit(Timeout(key))
