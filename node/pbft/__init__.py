"""The PBFT replica as a sans-I/O state machine: `Replica.step(event, now_ns) -> [Effect]`.

Why this exists: it is the one place where Castro & Liskov's protocol (OSDI '99 §4, with the
view-change decision procedure of TOCS 2002 §4.5) is implemented. Runtimes wrap it: the
simulator on virtual time, the real node on asyncio sockets. It owns every protocol state
transition; nothing outside this package changes its fields.

What it must not know: sockets, event loops, clocks or storage (runtimes carry out its
effects), the simulator, or the application beyond node.statemachine's interface.

Modules, each named after what it implements (import from here, not from them):
- `replica`      the coordinator: authenticates input, dispatches by message type and timer,
                 returns the step's effects; the parts reach each other through it.
- `normal_case`  requests (§4.1), PRE-PREPARE/PREPARE/COMMIT (§4.2), execution, replies,
                 retransmission and the view-change timer.
- `log`          the replica's place (view, watermarks h and h + L, sequence numbers), its
                 slots and batches, the buffer of early messages.
- `checkpoint`   checkpoints, stable-checkpoint proofs and garbage collection (§4.3).
- `view_change`  view changes (§4.4, §4.5.2) and the pure NEW-VIEW decision procedure
                 `decide_new_view` (TOCS §4.5).
- `transfer`     state transfer: FETCH-BATCH/BATCH-DATA, FETCH-STATE/STATE-DATA.
- `durable`      the records a replica persists in real mode, and rebuilding from them.
- `outbox`       effects: sealed sends, traces, drop counters, timers.
The protocol parameters are `node.config.Config`.

Rules of this package:
- No I/O, no clock, no global random. Time arrives with each event; output leaves as effects.
  The replicated state machine is called directly: it is deterministic and pure, so the reply
  and the checkpoint digest can follow in the same step.
- Every handler starts with a guard (`_ignore_x(...) -> str | None`) that says *why* a message
  is ignored; the reason is counted in `Replica.dropped` and traced.
- Untrusted input never raises: a malformed, forged or misdirected message is dropped and
  counted. Our own bugs do raise (assertions on invariants).
- Everything is bounded: the log by the watermark window, buffers and fetch sets by limits.
- Modules import only downwards (outbox, log < durable < checkpoint < transfer <
  view_change < normal_case < replica); a part that must call a higher one declares what it
  needs as a `...Host` protocol, which `Replica` implements (tests/test_layout.py checks
  that node/ has no import cycles).
- Hot paths (every PRE-PREPARE, PREPARE, COMMIT) stay free of extra indirection: the replica
  dispatches straight to bound handlers, and the parts they touch are held directly.

Replica ids inside messages are indices 0..n-1 into the membership; the primary of view v is
v mod n.
"""

from __future__ import annotations

from node import _native

_native.activate(__name__, __path__)

from node.pbft.log import NULL_DIGEST  # noqa: E402
from node.pbft.outbox import BENIGN_DROPS  # noqa: E402
from node.pbft.replica import Replica  # noqa: E402
from node.pbft.view_change import decide_new_view  # noqa: E402

__all__ = ["BENIGN_DROPS", "NULL_DIGEST", "Replica", "decide_new_view"]
