"""Deterministic asyncio event loop running on *virtual* time.

Why this exists
---------------
The simulator runs a whole network (replica runtimes, clients, fault scripts) inside one
process with the ordinary asyncio API: ``call_soon``, ``call_at``, ``call_later``,
``asyncio.sleep``, tasks, futures, ``asyncio.wait_for``, events.  A real event loop would
make a run depend on the wall clock, on scheduler noise, and would spend real seconds
waiting for timers.  This loop instead keeps a virtual clock and, whenever nothing is
ready to run, jumps it straight to the earliest scheduled timer.  A simulated hour costs
only the CPU time of the callbacks that run in it, and two runs fed the same inputs
execute exactly the same callbacks in exactly the same order.

What it must not know
---------------------
Nothing about PBFT, replicas, messages or networks: it is a general purpose event loop.
It never reads the wall clock (``time.time``/``time.monotonic``), never opens a socket or
selector, and never starts a thread (``run_in_executor`` is refused).

Design
------
* Time is an integer number of nanoseconds (``now_ns``); ``time()`` returns
  ``now_ns / 1e9`` so the stdlib machinery (``sleep``, ``wait_for``, ``timeout``) works.
  ``call_at_ns``/``call_later_ns`` schedule at exact integer instants; the float API is
  rounded to the nearest nanosecond.  Since the heap is keyed on integers and the clock
  jumps exactly to a key, there is no float "a hair in the future" busy loop.
* Timers live in our own heap of ``(when_ns, seq, handle)`` tuples.  ``seq`` is a global
  scheduling counter, so timers due at the same instant run in the order they were
  scheduled (asyncio's own heap compares ``TimerHandle`` by ``when`` only and is not
  FIFO for ties).  Tuple comparison happens in C, which is much cheaper than
  ``TimerHandle.__lt__``.
* ``call_plain_ns(delay_ns, callback, arg)`` puts a timer on the same heap without a
  handle (the list ``[callback, arg]``; ``cancel_plain`` empties it). A simulated replica
  with a CPU model sets one per message it handles, and a handle with its copied context
  cost about four times as much. The same ``seq`` orders both kinds.
* We subclass ``asyncio.BaseEventLoop`` (not ``SelectorEventLoop``: that one opens a
  self-pipe socket pair) and replace only its private ``_run_once`` iteration step.  That
  reuses the stdlib's task/future integration, ``run_until_complete``, ``stop``,
  exception-handler plumbing and async generator hooks, while the hot path (advance
  clock, move due timers, run the batch) is a tight loop with no selector call, no
  clock reads and no float arithmetic.  A fake selector under the unmodified stdlib
  ``_run_once`` also works, but it still needs FIFO tie-breaking, keeps float time and
  rereads the clock each iteration: a prototype ran a ``call_later`` chain at ~0.6M
  callbacks/s against ~1.0M/s here.  Writing a complete ``AbstractEventLoop`` from
  scratch would duplicate a lot of subtle stdlib code (``run_until_complete``, async
  generator finalization, task bookkeeping) for no speed gain: the per-callback cost
  left is ``Handle`` creation and ``Context.run``, which any asyncio loop must pay.
* Simulator bugs must surface: the loop installs an exception handler that records the
  first exception reported by a callback (or an orphaned task/future), stops the loop and
  re-raises it from the ``run_*`` method.  Running with nothing ready, no timers and no
  deadline is a deadlock and raises ``DeadlockError`` instead of hanging.  The opposite
  failure, a livelock, is caught too: callbacks that keep scheduling more work at the same
  instant (zero-delay messages answered by zero-delay messages) would spin for ever without
  the clock moving.  More than ``livelock_rounds`` loop iterations (default
  ``LIVELOCK_ROUNDS`` = 1,000) at one virtual instant raise ``LivelockError``.  A healthy
  simulation moves a whole instant's due timers into one iteration and needs only a few
  more for the ``call_soon`` chains of tasks and futures (at most 3 in every shipped
  scenario, n = 4 to 16), so the bound is far above any honest instant while a livelock
  reaches it within seconds of wall time.

Caveats: timer handles made by this loop do not record creation tracebacks in asyncio
debug mode.  ``close()`` cancels leftover tasks (in creation order) and runs them to
completion, like ``asyncio.Runner.close``.  The loop relies on private ``BaseEventLoop``
internals (``_run_once``, ``_ready``, ``_stopping``, ``_closed``, ``_debug``,
``_timer_handle_cancelled``); verified on CPython 3.11, re-check when upgrading Python.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import operator
import weakref
from asyncio import format_helpers
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

__all__ = ["LIVELOCK_ROUNDS", "DeadlockError", "LivelockError", "VirtualTimeLoop", "run_until"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

_NS_PER_S = 1_000_000_000
#: Rebuild the timer heap when it holds more than this many cancelled entries and they
#: make up more than half of it (same policy as asyncio).
_COMPACT_MIN_CANCELLED = 100
#: Loop iterations allowed at one virtual instant before the run counts as a livelock.
LIVELOCK_ROUNDS = 1_000

_heappush = heapq.heappush
_heappop = heapq.heappop
_copy_context = contextvars.copy_context
_Handle = asyncio.Handle


class DeadlockError(RuntimeError):
    """The loop must keep running, but nothing is ready and no timer is scheduled."""


class LivelockError(RuntimeError):
    """Callbacks keep scheduling work at one virtual instant: the clock can never advance."""


class _VTimerHandle(asyncio.TimerHandle):
    """A ``TimerHandle`` with a flat constructor (the stdlib one costs two Python frames
    and a ``get_debug()`` call per timer)."""

    __slots__ = ()
    _scheduled: bool  # declared by TimerHandle's __slots__; typeshed omits it

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: VirtualTimeLoop,
        context: contextvars.Context | None,
    ) -> None:
        self._context = _copy_context() if context is None else context
        self._loop = loop
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._repr = None
        self._source_traceback = None
        self._when = when
        self._scheduled = True


class VirtualTimeLoop(asyncio.BaseEventLoop):
    """A single-threaded asyncio loop whose clock is virtual, integer nanoseconds."""

    if TYPE_CHECKING:  # private BaseEventLoop state used here (absent from typeshed)
        _ready: deque[asyncio.Handle]
        _stopping: bool
        _closed: bool
        _debug: bool

        def _check_thread(self) -> None: ...
        def _check_callback(self, callback: Callable[..., object], method: str) -> None: ...

    def __init__(self, start_ns: int = 0, livelock_rounds: int = LIVELOCK_ROUNDS) -> None:
        super().__init__()
        self.now_ns: int = operator.index(start_ns)
        """Current virtual time in integer nanoseconds (read it; only the loop moves it). A
        plain attribute, not a property: every simulated message reads it."""
        self._livelock_rounds = livelock_rounds
        self._rounds_at_now = 0
        self._rounds_at_ns = self.now_ns
        self._heap: list[tuple[int, int, _VTimerHandle | list[Any]]] = []
        self._last_timer: asyncio.TimerHandle | None = None
        self._seq = itertools.count()
        self._cancelled_count = 0
        # Run-mode parameters, set only for the duration of one run_* call.
        self._deadline_ns: int | None = None
        self._stop_when: Callable[[], bool] | None = None
        self._idle_ok = False
        self._stopped_by_predicate = False
        # First exception reported through the exception handler, re-raised by run_*.
        self._recorded: BaseException | None = None
        self._recorded_extra = 0
        # Tasks in creation order (asyncio.all_tasks() is a set: its order depends on ids).
        self._tasks_created: weakref.WeakKeyDictionary[asyncio.Task[Any], None] = (
            weakref.WeakKeyDictionary()
        )
        self._clock_resolution = 1e-9
        self.set_exception_handler(_record_exception)

    # ------------------------------------------------------------------ clock

    def time(self) -> float:
        """Current virtual time in float seconds (for the stdlib asyncio machinery)."""
        return self.now_ns / 1e9

    # ------------------------------------------------------------- scheduling

    def call_at_ns(
        self,
        when_ns: int,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """Schedule ``callback(*args)`` at the exact virtual instant ``when_ns``."""
        if type(when_ns) is not int:
            when_ns = operator.index(when_ns)  # rejects floats: they would break exactness
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at_ns")
        timer = _VTimerHandle(when_ns / 1e9, callback, args, self, context)
        _heappush(self._heap, (when_ns, next(self._seq), timer))
        self._last_timer = timer
        return timer

    def call_later_ns(
        self,
        delay_ns: int,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """Schedule ``callback(*args)`` exactly ``delay_ns`` nanoseconds from now."""
        if type(delay_ns) is not int:
            delay_ns = operator.index(delay_ns)
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_later_ns")
        when_ns = self.now_ns + delay_ns
        timer = _VTimerHandle(when_ns / 1e9, callback, args, self, context)
        _heappush(self._heap, (when_ns, next(self._seq), timer))
        self._last_timer = timer
        return timer

    def call_plain_ns(self, delay_ns: int, callback: Callable[[Any], object],
                      arg: Any) -> list[Any]:
        """Schedule ``callback(arg)`` exactly ``delay_ns`` nanoseconds from now, without a
        handle: the timer is the list ``[callback, arg]``, cancelled by ``cancel_plain``.

        For callers that set a timer per simulated message (a runtime's CPU model) and need
        nothing of a handle but cancelling: it costs about a quarter of ``call_later_ns``
        (no ``TimerHandle`` built, no context copied). The callback runs in the loop's own
        context, in the same order as a handle scheduled at this point would (one ``seq``
        counter orders both kinds), and an exception it raises goes to the exception
        handler as a handle's does."""
        if self._closed:
            raise RuntimeError("Event loop is closed")
        timer = [callback, arg]
        _heappush(self._heap, (self.now_ns + delay_ns, next(self._seq), timer))
        self._last_timer = None  # a handle scheduled before this one is no longer the last
        return timer

    @staticmethod
    def cancel_plain(timer: list[Any]) -> None:
        """Cancel a ``call_plain_ns`` timer (no effect once it ran)."""
        timer[0] = None

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """Float-seconds API; ``when`` is rounded to the nearest nanosecond."""
        if when is None:
            raise TypeError("when cannot be None")
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        try:
            when_ns = round(when * _NS_PER_S)
        except OverflowError:  # +/-inf
            return self._infinite_timer(when, callback, args, context)
        timer = _VTimerHandle(when, callback, args, self, context)
        _heappush(self._heap, (when_ns, next(self._seq), timer))
        self._last_timer = timer
        return timer

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """Float-seconds API; the delay is rounded to the nearest nanosecond and added to
        the integer clock, so ``call_later(3600)`` lands exactly 3600e9 ns from now."""
        if delay is None:
            raise TypeError("delay must not be None")
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_later")
        try:
            when_ns = self.now_ns + round(delay * _NS_PER_S)
        except OverflowError:  # +/-inf, e.g. asyncio.sleep(math.inf) to sleep forever
            return self._infinite_timer(delay, callback, args, context)
        timer = _VTimerHandle(when_ns / 1e9, callback, args, self, context)
        _heappush(self._heap, (when_ns, next(self._seq), timer))
        self._last_timer = timer
        return timer

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            return super().call_soon(callback, *args, context=context)
        handle = _Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def _infinite_timer(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
    ) -> asyncio.TimerHandle:
        """A timer at +inf never fires and is not put on the heap (so it cannot keep the
        loop from being idle or deadlocked); one at -inf is due now."""
        if when < 0:
            timer = _VTimerHandle(self.time(), callback, args, self, context)
            _heappush(self._heap, (self.now_ns, next(self._seq), timer))
            self._last_timer = timer
        else:
            timer = _VTimerHandle(when, callback, args, self, context)
            timer._scheduled = False
        return timer

    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        **kwargs: Any,
    ) -> asyncio.Task[_T]:
        task = super().create_task(coro, **kwargs)
        self._tasks_created[task] = None
        return task

    def is_last_pending(self, timer: asyncio.TimerHandle) -> bool:
        """True when `timer` is the most recently scheduled timer and still waits on the heap.

        Then work appended to what `timer` will run keeps the exact order that scheduling it
        as a new timer at the same instant would have: nothing was scheduled in between, so
        no other timer can run between the two. (SimTransport groups a multicast's
        deliveries that arrive at one instant into one timer this way.)
        """
        return (timer is self._last_timer and timer._scheduled  # type: ignore[attr-defined]
                and not timer.cancelled())

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        if handle._scheduled:  # type: ignore[attr-defined]
            self._cancelled_count += 1

    def _compact_heap(self) -> None:
        kept = []
        for entry in self._heap:
            timer = entry[2]
            if type(timer) is list:
                if timer[0] is not None:
                    kept.append(entry)
            elif timer._cancelled:  # type: ignore[union-attr]
                timer._scheduled = False  # type: ignore[union-attr]
            else:
                kept.append(entry)
        heapq.heapify(kept)
        self._heap = kept
        self._cancelled_count = 0

    # ---------------------------------------------------------------- the core

    def _run_once(self) -> None:
        """One iteration: advance the clock if idle, move due timers, run the batch."""
        ready = self._ready
        heap = self._heap
        if self._cancelled_count > _COMPACT_MIN_CANCELLED and (
            self._cancelled_count * 2 > len(heap)
        ):
            self._compact_heap()
            heap = self._heap
        if not ready and not self._stopping:
            # Idle: skip cancelled heads, then jump to the next live timer.
            while heap:
                head = heap[0][2]
                if type(head) is list:
                    if head[0] is not None:
                        break
                elif not head._cancelled:  # type: ignore[union-attr]
                    break
                else:
                    head._scheduled = False  # type: ignore[union-attr]
                    self._cancelled_count -= 1
                _heappop(heap)
            if not heap:
                self._on_idle()
                return
            when = heap[0][0]
            deadline = self._deadline_ns
            if deadline is not None and when > deadline:
                self.now_ns = max(self.now_ns, deadline)
                self._stopping = True
                return
            self.now_ns = max(self.now_ns, when)
        now = self.now_ns
        if now == self._rounds_at_ns:
            self._rounds_at_now += 1
            if self._rounds_at_now > self._livelock_rounds:
                # Drop the spinning work so that close() can still finalize the tasks.
                ready.clear()
                for entry in heap:
                    if type(entry[2]) is not list:
                        entry[2]._scheduled = False  # type: ignore[union-attr]
                heap.clear()
                self._cancelled_count = 0
                self._rounds_at_now = 0
                raise LivelockError(
                    f"livelock at virtual time {now} ns: more than {self._livelock_rounds:,} "
                    "loop iterations without the clock advancing (work keeps scheduling more "
                    "work at the same instant, e.g. zero-latency links with no CPU cost)")
        else:
            self._rounds_at_ns = now
            self._rounds_at_now = 0
        while heap and heap[0][0] <= now:
            timer = _heappop(heap)[2]
            if type(timer) is list:  # call_plain_ns: dropped if cancelled
                if timer[0] is not None:
                    ready.append(timer)  # type: ignore[arg-type]
                continue
            timer._scheduled = False  # type: ignore[union-attr]
            if timer._cancelled:  # type: ignore[union-attr]
                self._cancelled_count -= 1
            else:
                ready.append(timer)  # type: ignore[arg-type]
        popleft = ready.popleft
        for _ in range(len(ready)):
            handle: Any = popleft()
            if type(handle) is list:  # call_plain_ns
                callback = handle[0]
                if callback is None:  # cancelled by an earlier callback of this batch
                    continue
                try:
                    callback(handle[1])
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self.call_exception_handler({
                        "message": f"Exception in callback {callback!r}", "exception": exc})
                continue
            if handle._cancelled:
                continue
            # `handle._run()` written out: one Python frame less per callback (a simulated
            # message is about one callback). Errors are reported as `Handle._run` does.
            try:
                handle._context.run(handle._callback, *handle._args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                _report_callback_error(self, handle, exc)
        stop_when = self._stop_when
        if stop_when is not None and stop_when():
            self._stopped_by_predicate = True
            self._stopping = True

    def _on_idle(self) -> None:
        """Nothing ready and no live timers."""
        deadline = self._deadline_ns
        if deadline is not None:
            self.now_ns = max(self.now_ns, deadline)
            self._stopping = True
        elif self._idle_ok:
            self._stopping = True
        else:
            raise DeadlockError(
                f"deadlock at virtual time {self.now_ns} ns: no callback is ready and no "
                "timer is scheduled, but the loop was asked to keep running "
                "(run_forever/run_until_complete waiting for something that can never happen)"
            )

    # ------------------------------------------------------------ run methods

    def run_forever(self) -> None:
        """As asyncio's, but re-raises the first callback exception and detects deadlock.

        An error reported while the loop was not running (e.g. a task garbage collected
        between runs) has already called ``stop()``: the next run does one iteration and
        raises it.  (Raising before running would orphan the coroutine just handed to
        ``run_until_complete``.)
        """
        super().run_forever()
        self._raise_recorded()

    def run_until_ns(self, deadline_ns: int, stop_when: Callable[[], bool] | None = None, *,
                     check_first: bool = True) -> bool:
        """Run callbacks until virtual time would pass ``deadline_ns``.

        Timers due at or before the deadline run; later ones stay scheduled and the clock
        ends exactly at ``deadline_ns``.  If ``stop_when`` is given it is checked before
        starting and after each batch of ready callbacks; when it returns true the run
        stops early (clock left at the current instant) and ``True`` is returned.
        Returns ``False`` when the deadline was reached (or ``stop()`` was called).

        Slicing: a run cut into consecutive calls (deadlines d1 < d2 < ... < D) executes
        the same callbacks in the same order as one call up to ``D``, provided every call
        after the first passes ``check_first=False``.  Every timer due at or before a slice's
        deadline (and every ``call_soon`` chain it starts) runs within that slice; the clock
        then rests at the deadline, where nothing runs.  Without ``check_first=False`` the
        next slice would evaluate ``stop_when`` at that resting instant, which one call never
        does, and could stop earlier than one call would.
        """
        deadline_ns = operator.index(deadline_ns)
        if deadline_ns < self.now_ns:
            raise ValueError(f"deadline {deadline_ns} ns is before now ({self.now_ns} ns)")
        if check_first and stop_when is not None and stop_when():
            return True
        self._deadline_ns = deadline_ns
        self._stop_when = stop_when
        self._stopped_by_predicate = False
        try:
            self.run_forever()
        finally:
            self._deadline_ns = None
            self._stop_when = None
        return self._stopped_by_predicate

    def run_for_ns(self, duration_ns: int, stop_when: Callable[[], bool] | None = None) -> bool:
        """``run_until_ns(now_ns + duration_ns, stop_when)``."""
        return self.run_until_ns(self.now_ns + operator.index(duration_ns), stop_when)

    def run_until_idle(self) -> None:
        """Run until no callback is ready and no live timer remains.

        Never returns if something keeps rescheduling itself (e.g. a heartbeat); use
        ``run_until_ns`` for such systems.
        """
        self._idle_ok = True
        try:
            self.run_forever()
        finally:
            self._idle_ok = False

    # ------------------------------------------------------------ errors

    def _record(self, context: dict[str, Any]) -> None:
        if self._recorded is not None:
            self._recorded_extra += 1
            return
        exc = context.get("exception")
        message = context.get("message", "unhandled error in event loop")
        if not isinstance(exc, BaseException):
            exc = RuntimeError(message)
        else:
            exc.add_note(f"[VirtualTimeLoop] {message} (virtual time {self.now_ns} ns)")
        self._recorded = exc
        self.stop()

    def _take_recorded(self) -> BaseException | None:
        exc = self._recorded
        if exc is not None and self._recorded_extra:
            exc.add_note(f"[VirtualTimeLoop] {self._recorded_extra} later error(s) not shown")
        self._recorded = None
        self._recorded_extra = 0
        return exc

    def _raise_recorded(self) -> None:
        exc = self._take_recorded()
        if exc is not None:
            raise exc

    # ------------------------------------------------------------ no threads, no I/O

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[*_Ts], _T], *args: *_Ts
    ) -> asyncio.Future[_T]:
        raise RuntimeError("VirtualTimeLoop is single-threaded: run_in_executor is not allowed")

    def _write_to_self(self) -> None:
        """call_soon_threadsafe wake-up: nothing to wake, the loop never blocks."""

    def _process_events(self, event_list: list[Any]) -> None:
        """No I/O in a simulation."""

    # ------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Cancel and drain leftover tasks, finalize async generators, then close.

        Unlike ``BaseEventLoop.close`` this runs the loop once more (like
        ``asyncio.Runner.close``), so pending coroutines are finalized deterministically
        inside the virtual world rather than at garbage collection.  An error raised by
        that cleanup is re-raised after the loop is closed.
        """
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        # An error recorded since the last run must not cut the cleanup runs short.
        errors: list[BaseException] = []
        stale = self._take_recorded()
        if stale is not None:
            errors.append(stale)
        self._stopping = False
        try:
            try:
                errors.extend(self._cancel_leftover_tasks())
            except Exception as exc:  # collected, re-raised once closed
                errors.append(exc)
            try:
                self.run_until_complete(self.shutdown_asyncgens())
            except Exception as exc:  # collected, re-raised once closed
                errors.append(exc)
        finally:
            self._heap.clear()
            super().close()
        if errors:
            first = errors[0]
            if len(errors) > 1:
                first.add_note(f"[VirtualTimeLoop] {len(errors) - 1} more error(s) in close()")
            raise first

    def _cancel_leftover_tasks(self) -> list[BaseException]:
        """Cancel all pending tasks, run until they finish; return their real errors."""
        pending = asyncio.all_tasks(self)
        if not pending:
            return []
        # Deterministic order: creation order, then any task not made via create_task().
        to_cancel = [task for task in self._tasks_created if task in pending]
        known = set(to_cancel)
        to_cancel += [task for task in pending if task not in known]
        for task in to_cancel:
            task.cancel()
        self.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
        errors = []
        for task in to_cancel:
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                exc.add_note(f"[VirtualTimeLoop] raised by {task!r} while cancelled in close()")
                errors.append(exc)
        return errors


def _record_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if isinstance(loop, VirtualTimeLoop):
        loop._record(context)
    else:  # pragma: no cover - only if someone installs this handler elsewhere
        loop.default_exception_handler(context)


def run_until(
    loop: VirtualTimeLoop, deadline_ns: int, stop_when: Callable[[], bool] | None = None
) -> bool:
    """Function form of ``loop.run_until_ns``."""
    return loop.run_until_ns(deadline_ns, stop_when)


def _report_callback_error(loop: VirtualTimeLoop, handle: asyncio.Handle,
                           exc: BaseException) -> None:
    """What `asyncio.Handle._run` does when its callback raises: hand the error, with the
    same message and context keys, to the loop's exception handler."""
    callback = handle._callback  # type: ignore[attr-defined]
    source = format_helpers._format_callback_source(  # type: ignore[attr-defined]
        callback, handle._args)  # type: ignore[attr-defined]
    context: dict[str, Any] = {"message": f"Exception in callback {source}",
                               "exception": exc, "handle": handle}
    if handle._source_traceback:  # type: ignore[attr-defined]
        context["source_traceback"] = handle._source_traceback  # type: ignore[attr-defined]
    loop.call_exception_handler(context)
