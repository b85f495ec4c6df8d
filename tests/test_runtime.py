"""node/runtime.py: the shell that feeds events to a core and carries out its effects (sends,
timers, traces, anything else), with and without a CPU model, on the virtual-time loop and on
a plain asyncio loop. The core here is a scripted stand-in, so every effect is known."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from node.crypto import Costs
from node.events import (
    CancelTimer,
    Multicast,
    Persist,
    Receive,
    Send,
    SetTimer,
    Start,
    Timeout,
    Trace,
    sends,
)
from node.runtime import Cores, NodeRuntime, Processor, call_later_ns, loop_now_ns
from sim.loop import VirtualTimeLoop

MS = 1_000_000


class ScriptedCore:
    """Answers each event with the effects scripted for it; each step counts one message."""

    def __init__(self, script: dict[Any, Sequence[object]] | None = None) -> None:
        self.id = "r1"
        self.costs = Costs()
        self.script = dict(script or {})
        self.seen: list[tuple[object, int]] = []

    def step(self, event: Any, now_ns: int) -> Sequence[object]:
        self.seen.append((event, now_ns))
        self.costs.messages += 1
        return list(self.script.get(event, ()))


class RecordingTransport:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sent: list[tuple[int, str, str, bytes, str]] = []

    def send(self, src: str, to: str, data: bytes, kind: str) -> None:
        self.sent.append((loop_now_ns(self.loop), src, to, data, kind))


def per_message(ns: int):  # type: ignore[no-untyped-def]
    """A cost model charging `ns` per message the core counted."""
    return lambda before, after: ns * (after[0] - before[0])


def make(vloop: VirtualTimeLoop, script: dict[Any, Sequence[object]] | None = None,
         **kw: Any) -> tuple[ScriptedCore, RecordingTransport, NodeRuntime]:
    core = ScriptedCore(script)
    transport = RecordingTransport(vloop)
    return core, transport, NodeRuntime(core, transport, vloop, **kw)


# -- without a CPU model: effects take place at once --------------------------------------------


def test_start_and_receive_reach_the_core_with_the_current_time(vloop: VirtualTimeLoop) -> None:
    core, _, rt = make(vloop)
    rt.start()
    vloop.call_later_ns(7 * MS, rt.receive, b"hello")
    vloop.run_until_idle()
    assert core.seen == [(Start(False), 0), (Receive(b"hello"), 7 * MS)]
    assert rt.id == "r1"


def test_sends_go_to_the_transport_in_order_with_the_cores_id(vloop: VirtualTimeLoop) -> None:
    _, transport, rt = make(vloop, {Start(False): [Send("r2", b"a", "PREPARE"),
                                                   Send("r3", b"b", "COMMIT")]})
    rt.start()
    assert transport.sent == [(0, "r1", "r2", b"a", "PREPARE"), (0, "r1", "r3", b"b", "COMMIT")]


def test_a_multicast_goes_copy_by_copy_to_a_transport_without_multicast(
        vloop: VirtualTimeLoop) -> None:
    mc = Multicast(("r2", "r3", "r4"), (b"a", b"b", b"c"), "PREPARE")
    _, transport, rt = make(vloop, {Start(False): [mc, Send("r2", b"z", "COMMIT")]})
    rt.start()
    assert transport.sent == [(0, "r1", "r2", b"a", "PREPARE"), (0, "r1", "r3", b"b", "PREPARE"),
                              (0, "r1", "r4", b"c", "PREPARE"), (0, "r1", "r2", b"z", "COMMIT")]
    assert sends([mc]) == [Send("r2", b"a", "PREPARE"), Send("r3", b"b", "PREPARE"),
                           Send("r4", b"c", "PREPARE")]


def test_a_multicast_goes_in_one_call_to_a_transport_with_multicast(
        vloop: VirtualTimeLoop) -> None:
    class Multicasting(RecordingTransport):
        def multicast(self, src: str, to: tuple[str, ...], data: tuple[bytes, ...],
                      kind: str) -> None:
            self.sent.append((loop_now_ns(self.loop), src, ",".join(to), b"|".join(data), kind))

    core = ScriptedCore({Start(False): [Multicast(("r2", "r3"), (b"a", b"b"), "PREPARE")]})
    transport = Multicasting(vloop)
    NodeRuntime(core, transport, vloop).start()
    assert transport.sent == [(0, "r1", "r2,r3", b"a|b", "PREPARE")]


def test_a_timer_fires_as_a_timeout_after_its_delay(vloop: VirtualTimeLoop) -> None:
    core, _, rt = make(vloop, {Start(False): [SetTimer("vc", 5 * MS)]})
    rt.start()
    vloop.run_until_idle()
    assert core.seen == [(Start(False), 0), (Timeout("vc"), 5 * MS)]


def test_rearming_a_timer_replaces_it(vloop: VirtualTimeLoop) -> None:
    core, _, rt = make(vloop, {Start(False): [SetTimer("vc", 5 * MS)],
                               Receive(b"x"): [SetTimer("vc", 20 * MS)]})
    rt.start()
    vloop.call_later_ns(3 * MS, rt.receive, b"x")
    vloop.run_until_idle()
    assert [(e, t) for e, t in core.seen if type(e) is Timeout] == [(Timeout("vc"), 23 * MS)]


def test_a_cancelled_timer_never_fires(vloop: VirtualTimeLoop) -> None:
    core, _, rt = make(vloop, {Start(False): [SetTimer("vc", 5 * MS), SetTimer("b", 9 * MS)],
                               Receive(b"x"): [CancelTimer("vc"), CancelTimer("never-set")]})
    rt.start()
    vloop.call_later_ns(1 * MS, rt.receive, b"x")
    vloop.run_until_idle()
    assert [e for e, _ in core.seen] == [Start(False), Receive(b"x"), Timeout("b")]


def test_traces_go_to_the_sink_and_other_effects_to_on_other(vloop: VirtualTimeLoop) -> None:
    trace = Trace("execute", {"seq": 1})
    persist = Persist("votes", b"v")
    other = object()
    traced: list[tuple[str, int, Trace]] = []
    others: list[object] = []
    _, transport, rt = make(vloop, {Receive(b"x"): [trace, persist, other]},
                            trace=lambda *row: traced.append(row), on_other=others.append)
    vloop.call_later_ns(4 * MS, rt.receive, b"x")
    vloop.run_until_idle()
    assert traced == [("r1", 4 * MS, trace)]
    assert others == [persist, other]
    assert transport.sent == []


def test_without_sinks_traces_and_other_effects_are_dropped(vloop: VirtualTimeLoop) -> None:
    _, transport, rt = make(vloop, {Start(False): [Trace("t", {}), object(),
                                                   Send("r0", b"s", "X")]})
    rt.start()  # no trace sink, no on_other: nothing raises and the Send still happens
    assert [row[2] for row in transport.sent] == ["r0"]


def test_apply_carries_out_effects_made_outside_step(vloop: VirtualTimeLoop) -> None:
    core, transport, rt = make(vloop)
    rt.apply([Send("r0", b"req", "REQUEST"), SetTimer("retry:0", 2 * MS)])
    vloop.run_until_idle()
    assert transport.sent == [(0, "r1", "r0", b"req", "REQUEST")]
    assert core.seen == [(Timeout("retry:0"), 2 * MS)]


def test_a_crashed_runtime_takes_nothing_in_and_sends_nothing(vloop: VirtualTimeLoop) -> None:
    core, transport, rt = make(vloop, {Start(False): [SetTimer("vc", 5 * MS)]})
    rt.start()
    rt.crash()
    rt.receive(b"x")
    rt.apply([Send("r0", b"s", "X")])
    vloop.run_until_idle()
    assert core.seen == [(Start(False), 0)], "no Receive, and the armed timer was cancelled"
    assert transport.sent == []
    assert vloop.now_ns == 0


def test_recover_restarts_the_core_as_recovering(vloop: VirtualTimeLoop) -> None:
    core, transport, rt = make(vloop, {Start(True): [Send("r0", b"fetch", "FETCH")]})
    rt.start()
    rt.crash()
    rt.recover()
    rt.receive(b"y")
    assert rt.crashed is False
    assert [e for e, _ in core.seen] == [Start(False), Start(True), Receive(b"y")]
    assert [row[4] for row in transport.sent] == ["FETCH"]


# -- with a CPU model: one busy CPU, effects when processing ends --------------------------------


def test_effects_wait_for_the_processing_cost(vloop: VirtualTimeLoop) -> None:
    _, transport, rt = make(vloop, {Receive(b"x"): [Send("r2", b"p", "PREPARE")]},
                            cost_model=per_message(3 * MS))
    rt.receive(b"x")
    assert transport.sent == [], "still processing"
    vloop.run_until_idle()
    assert transport.sent == [(3 * MS, "r1", "r2", b"p", "PREPARE")]
    assert rt.busy_ns == 3 * MS


def test_a_busy_cpu_queues_events_in_arrival_order(vloop: VirtualTimeLoop) -> None:
    core, transport, rt = make(vloop, {Receive(b"a"): [Send("r2", b"A", "X")],
                                       Receive(b"b"): [Send("r2", b"B", "X")],
                                       Receive(b"c"): [Send("r2", b"C", "X")]},
                               cost_model=per_message(2 * MS))
    rt.receive(b"a")
    rt.receive(b"b")
    vloop.call_later_ns(1 * MS, rt.receive, b"c")  # arrives while "a" is processing
    vloop.run_until_idle()
    assert core.seen == [(Receive(b"a"), 0), (Receive(b"b"), 2 * MS), (Receive(b"c"), 4 * MS)]
    assert [(t, data) for t, _, _, data, _ in transport.sent] == [
        (2 * MS, b"A"), (4 * MS, b"B"), (6 * MS, b"C")]
    assert rt.busy_ns == 6 * MS


def test_an_idle_cpu_starts_at_once(vloop: VirtualTimeLoop) -> None:
    core, _, rt = make(vloop, cost_model=per_message(2 * MS))
    rt.receive(b"a")
    vloop.call_later_ns(10 * MS, rt.receive, b"b")  # long after "a" finished
    vloop.run_until_idle()
    assert core.seen == [(Receive(b"a"), 0), (Receive(b"b"), 10 * MS)]


def test_slowdown_multiplies_the_cost(vloop: VirtualTimeLoop) -> None:
    _, transport, rt = make(vloop, {Receive(b"x"): [Send("r2", b"p", "X")]},
                            cost_model=per_message(2 * MS))
    rt.slowdown = 2.5
    rt.receive(b"x")
    vloop.run_until_idle()
    assert transport.sent[0][0] == 5 * MS
    assert rt.busy_ns == 5 * MS


def test_a_free_step_applies_its_effects_at_once(vloop: VirtualTimeLoop) -> None:
    _, transport, rt = make(vloop, {Receive(b"x"): [Send("r2", b"p", "X")]},
                            cost_model=lambda before, after: 0)
    rt.receive(b"x")
    assert transport.sent == [(0, "r1", "r2", b"p", "X")]
    assert rt.busy_ns == 0


def test_a_crash_while_processing_loses_the_pending_effects(vloop: VirtualTimeLoop) -> None:
    core, transport, rt = make(vloop, {Receive(b"a"): [Send("r2", b"A", "X")]},
                               cost_model=per_message(2 * MS))
    rt.receive(b"a")
    rt.receive(b"b")
    vloop.call_later_ns(1 * MS, rt.crash)
    vloop.run_until_idle()
    assert transport.sent == []
    assert [e for e, _ in core.seen] == [Receive(b"a")]
    rt.recover()
    vloop.run_until_idle()
    assert [e for e, _ in core.seen] == [Receive(b"a"), Start(True)], "the queue was dropped"


def test_a_timer_set_after_processing_counts_from_the_end_of_it(vloop: VirtualTimeLoop) -> None:
    core, _, rt = make(vloop, {Receive(b"x"): [SetTimer("t", 10 * MS)]},
                       cost_model=per_message(4 * MS))
    rt.receive(b"x")
    vloop.run_until_idle()
    assert core.seen[-1] == (Timeout("t"), 14 * MS)


# -- loop helpers ------------------------------------------------------------------------------


# -- runtimes sharing a machine's cores, or one processor ---------------------------------------


def _fleet(vloop: VirtualTimeLoop, count: int, **kw: Any
           ) -> list[tuple[ScriptedCore, RecordingTransport, NodeRuntime]]:
    """`count` runtimes r1, r2 ... each sending "done" to r9 after every event, 2 ms per
    message."""
    fleet = []
    for i in range(count):
        core, transport, rt = make(vloop, cost_model=per_message(2 * MS), **kw)
        core.id = rt.id = f"r{i + 1}"
        core.script = {Receive(x): [Send("r9", b"done", "X")] for x in (b"a", b"b", b"c")}
        fleet.append((core, transport, rt))
    return fleet


def _finished(fleet: list[tuple[ScriptedCore, RecordingTransport, NodeRuntime]]
              ) -> list[tuple[int, str]]:
    return sorted((t, src) for _, transport, _ in fleet for t, src, *_ in transport.sent)


def test_runtimes_sharing_cores_wait_for_one(vloop: VirtualTimeLoop) -> None:
    fleet = _fleet(vloop, 4, cores=Cores(2, vloop))
    for _, _, rt in fleet:
        rt.receive(b"a")
    vloop.run_until_idle()
    # Two cores for four runtimes that all have work at 0: two finish at 2 ms, two at 4 ms.
    assert _finished(fleet) == [(2 * MS, "r1"), (2 * MS, "r2"), (4 * MS, "r3"), (4 * MS, "r4")]
    assert [core.seen[0][1] for core, _, _ in fleet] == [0, 0, 2 * MS, 2 * MS]
    assert [rt.busy_ns for _, _, rt in fleet] == [2 * MS] * 4


def test_cores_go_to_the_longest_waiting_runtime(vloop: VirtualTimeLoop) -> None:
    fleet = _fleet(vloop, 3, cores=Cores(1, vloop))
    (c1, _, r1), (c2, _, r2), (c3, _, r3) = fleet
    r1.receive(b"a")
    r1.receive(b"b")  # r1 has more work, but r2 and r3 asked for the core before it finished
    r2.receive(b"a")
    vloop.call_later_ns(1 * MS, r3.receive, b"a")
    vloop.run_until_idle()
    assert c1.seen == [(Receive(b"a"), 0), (Receive(b"b"), 6 * MS)]
    assert c2.seen == [(Receive(b"a"), 2 * MS)]
    assert c3.seen == [(Receive(b"a"), 4 * MS)]


def test_enough_cores_change_nothing() -> None:
    def schedule(cores: int | None) -> list[tuple[int, str]]:
        loop = VirtualTimeLoop()
        try:
            fleet = _fleet(loop, 3, cores=Cores(cores, loop) if cores else None)
            for i, (_, _, rt) in enumerate(fleet):
                rt.receive(b"a")
                loop.call_later_ns(i * MS, rt.receive, b"b")
            loop.run_until_idle()
            return _finished(fleet)
        finally:
            loop.close()

    assert schedule(3) == schedule(None) == [
        (2 * MS, "r1"), (2 * MS, "r2"), (2 * MS, "r3"), (4 * MS, "r1"), (4 * MS, "r2"),
        (4 * MS, "r3")]


def test_runtimes_sharing_a_processor_take_turns(vloop: VirtualTimeLoop) -> None:
    shared = Processor()
    fleet = _fleet(vloop, 2, processor=shared, cores=Cores(2, vloop))
    for _, _, rt in fleet:
        rt.receive(b"a")
    vloop.run_until_idle()
    # One processor: the second waits although a core is free.
    assert _finished(fleet) == [(2 * MS, "r1"), (4 * MS, "r2")]


def test_a_runtime_that_crashed_while_waiting_passes_its_turn_on(vloop: VirtualTimeLoop) -> None:
    fleet = _fleet(vloop, 3, cores=Cores(1, vloop))
    (_c1, _, r1), (c2, _, r2), (c3, _, r3) = fleet
    r1.receive(b"a")
    r2.receive(b"a")
    r3.receive(b"a")
    vloop.call_later_ns(1 * MS, r2.crash)  # waiting for the core: its turn goes to r3
    vloop.run_until_idle()
    assert c2.seen == [] and c3.seen == [(Receive(b"a"), 2 * MS)]
    r2.recover()  # back in line, and served
    vloop.run_until_idle()
    assert c2.seen == [(Start(True), 4 * MS)]


def test_a_machine_has_at_least_one_core(vloop: VirtualTimeLoop) -> None:
    with pytest.raises(ValueError, match="at least one core"):
        Cores(0, vloop)


def test_helpers_use_exact_nanoseconds_on_the_virtual_loop(vloop: VirtualTimeLoop) -> None:
    fired: list[int] = []
    vloop.call_later_ns(1, lambda: None)
    vloop.run_until_idle()
    call_later_ns(vloop, 333, lambda: fired.append(loop_now_ns(vloop)))
    vloop.run_until_idle()
    assert fired == [334]


def test_on_a_plain_asyncio_loop_timers_fire_in_real_time() -> None:
    loop = asyncio.new_event_loop()
    try:
        core = ScriptedCore({Start(False): [SetTimer("t", 2 * MS)]})
        rt = NodeRuntime(core, RecordingTransport(loop), loop)
        start = loop_now_ns(loop)
        assert abs(start - round(loop.time() * 1e9)) < 1_000_000
        rt.start()

        async def wait() -> None:
            while len(core.seen) < 2:
                await asyncio.sleep(0.001)

        loop.run_until_complete(asyncio.wait_for(wait(), 5))
        (event, fired_at) = core.seen[1]
        assert event == Timeout("t")
        assert fired_at - start >= 2 * MS
    finally:
        loop.close()


def test_steady_gc_freezes_start_up_and_collects_rarely_then_gives_both_back() -> None:
    import gc

    from node.realtime import GC_THRESHOLDS, steady_gc

    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    start_up = [[i] for i in range(1000)]  # objects that exist when the block starts
    with steady_gc():
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() >= frozen + len(start_up)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen
