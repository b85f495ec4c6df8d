"""Real time for the runtime, and the event loop real-mode processes run on.

Why this exists: `NodeRuntime` reads time through `loop_now_ns(loop)` and sets timers through
`call_later_ns(loop, ...)`, both of which prefer a `now_ns` attribute and a `call_later_ns`
method when the "loop" has them (the simulator's virtual loop does). `RealClock` provides
both on a real asyncio loop, with a chosen time origin:

- replicas use the wall clock (Unix epoch nanoseconds), because the core stamps each batch
  with the primary's `now_ns` and that timestamp is agreed in consensus and recorded in the
  ledger: it must mean the same on every machine. (The core keeps batch timestamps
  monotonic itself, so a clock step backwards cannot reorder blocks.)
- the load generator uses a monotonic clock starting at zero, so a workload written for
  the simulator ("submit until duration_ns") runs unchanged.

`run()` runs a coroutine on uvloop when it is installed (a dependency wherever the platform
has it) and asked for: measured here, uvloop cuts a TCP round trip from 49 us to 16 us.

`steady_gc()` is how a real-mode process runs once it is up (a node after start-up, the load
generator while it offers load). With CPython's default collector thresholds a node stalled
in full collections of 18-60 ms every few seconds at one request in flight, each finding a few
hundred objects (protocol objects are acyclic: reference counting frees them); those stalls
set the loopback cluster's p99. Start-up's objects (modules, keys, the restored state) are
frozen out of every collection and the young generation is collected every 50,000
allocations instead of 700.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["GC_THRESHOLDS", "RealClock", "run", "steady_gc", "uvloop_available"]

GC_THRESHOLDS = (50_000, 20, 100)
"""The collector's thresholds inside `steady_gc` (CPython's defaults: 700, 10, 10)."""

T = TypeVar("T")


class RealClock:
    """Stands in for the loop given to `NodeRuntime` (and `medbft.traffic.workload.Workload`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 source: Callable[[], int] = time.time_ns, origin_ns: int = 0) -> None:
        self.loop = loop
        self._source = source
        self._origin_ns = origin_ns

    @classmethod
    def monotonic_from_now(cls, loop: asyncio.AbstractEventLoop) -> RealClock:
        """A clock reading 0 now and counting monotonic nanoseconds."""
        return cls(loop, time.monotonic_ns, time.monotonic_ns())

    def restart(self) -> None:
        """Make the clock read 0 now (same source)."""
        self._origin_ns = self._source()

    @property
    def now_ns(self) -> int:
        return self._source() - self._origin_ns

    def call_later_ns(self, delay_ns: int, callback: Callable[..., Any],
                      *args: Any) -> asyncio.TimerHandle:
        return self.loop.call_later(max(0, delay_ns) / 1e9, callback, *args)

    def time(self) -> float:
        return self.loop.time()


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """Run `main` to completion on a new loop: uvloop when installed and `use_uvloop`."""
    factory = None
    if use_uvloop and uvloop_available():
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


@contextmanager
def steady_gc() -> Iterator[None]:
    """Freeze every object that exists now out of the collector's reach and collect rarely,
    until the block ends (then the thresholds and the frozen objects are given back). See the
    module docstring for why."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()
