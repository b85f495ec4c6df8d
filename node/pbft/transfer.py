"""State transfer: fetching batch bodies (FETCH-BATCH, BATCH-DATA) and state (FETCH-STATE,
STATE-DATA) from other replicas.

Why this exists: a replica that lost messages (a partition, a crash, a restart) must catch up
without trusting any single peer. A missing batch body is checked against the digest that was
agreed on; a snapshot against its stable-checkpoint proof; and batches executed after it are
executed only once f+1 replicas vouch for the same digest at a seq, so at least one correct
replica executed it. A STATE-DATA also carries the sender's latest NEW-VIEW, which proves
itself, so a replica that missed a view change learns of it here.

What it must not know: how batches are agreed on or executed, how view changes are decided,
message authentication. What it needs from the rest of the replica is `TransferHost`.
"""

from __future__ import annotations

from typing import Protocol

from node import messages as m
from node.config import Config
from node.crypto import Costs
from node.messages import DecodeError
from node.pbft.checkpoint import Checkpoints
from node.pbft.log import NULL_DIGEST, Log
from node.pbft.outbox import T_FETCH, Outbox

__all__ = ["StateTransfer", "TransferHost"]


class TransferHost(Protocol):
    """What state transfer asks of the rest of the replica."""

    @property
    def latest_new_view(self) -> m.NewView | None:
        """The NEW-VIEW of our view, if any (sent along with our state)."""

    def valid_request(self, req: m.Request) -> bool: ...

    def execute(self, seq: int, view: int, digest: bytes, batch: m.Batch) -> None: ...

    def maybe_execute(self) -> None:
        """A batch body arrived: committed slots waiting for it may execute now."""

    def restore_snapshot(self, snapshot: bytes) -> None:
        """Replace the replicated state (ValueError if the snapshot is malformed)."""

    def forget_answered(self) -> None:
        """The state jumped: stop waiting for requests it answers."""

    def accept_new_view(self, nv: m.NewView) -> None: ...


class StateTransfer:
    """What is being fetched and what has come back: missing batch bodies (digest -> seq),
    whether a state fetch is under way, and the vouchers for transferred batches."""

    def __init__(self, host: TransferHost, out: Outbox, log: Log, checkpoints: Checkpoints,
                 costs: Costs, ids: tuple[str, ...], me: int, f: int, config: Config) -> None:
        self.host = host
        self.out = out
        self.log = log
        self.checkpoints = checkpoints
        self.costs = costs
        self.ids = ids
        self.me = me
        self.f = f
        self.window = config.watermark_window
        self.timeout_ns = config.fetch_timeout_ns
        self.missing_batches: dict[bytes, int] = {}
        self.fetching = False
        self.fetch_mark = 0
        self.transferred = 0
        """Batches and snapshots installed by transfer (a fetch round that changes it made
        progress)."""
        self.votes: dict[int, dict[bytes, set[int]]] = {}
        self.bodies: dict[bytes, tuple[int, int, m.Batch]] = {}

    # -- batch bodies ------------------------------------------------------------------------

    def fetch_batch(self, digest: bytes, seq: int | None = None) -> None:
        if digest in self.missing_batches:
            return
        self.missing_batches[digest] = seq if seq is not None else self.log.last_executed + 1
        self.out.bcast(m.FetchBatch(digest, self.me))
        if T_FETCH not in self.out.timers:
            self.out.set_timer(T_FETCH, self.timeout_ns)

    def on_fetch_batch(self, sender: int, fb: m.FetchBatch) -> None:
        batch = self.log.batches.get(fb.digest)
        if batch is not None and fb.digest != NULL_DIGEST:
            self.out.send(sender, m.BatchData(batch, self.me))

    def on_batch_data(self, sender: int, bd: m.BatchData) -> None:
        self.costs.digest += 1
        digest = bd.batch.digest()
        if digest not in self.missing_batches:
            return  # not asked for (or already have it): ignore quietly
        for req in bd.batch.requests:
            if not self.host.valid_request(req):
                self.out.drop("bad request signature in batch", self.ids[sender], bd.KIND)
                return
        del self.missing_batches[digest]
        self.log.batches[digest] = bd.batch
        self.host.maybe_execute()

    # -- state -------------------------------------------------------------------------------

    def fetch_state(self) -> None:
        self.fetching = True
        self.fetch_mark = self.transferred
        last = self.log.last_executed
        self.out.bcast(m.FetchState(last, self.me))
        self.out.trace("fetch-state", last_executed=last)
        if T_FETCH not in self.out.timers:
            self.out.set_timer(T_FETCH, self.timeout_ns)

    def on_fetch_timeout(self) -> None:
        if self.missing_batches:
            for digest in list(self.missing_batches):
                self.out.bcast(m.FetchBatch(digest, self.me))
        if self.fetching:
            log = self.log
            if self.transferred != self.fetch_mark or log.h > log.last_executed:
                self.fetch_state()  # the last round brought something (or we are not there yet)
            else:
                self.fetching = False
        if (self.missing_batches or self.fetching) and T_FETCH not in self.out.timers:
            self.out.set_timer(T_FETCH, self.timeout_ns)

    def on_fetch_state(self, sender: int, fs: m.FetchState) -> None:
        log, cps = self.log, self.checkpoints
        send_checkpoint = log.h > fs.last_executed and cps.stable_snapshot is not None
        start = max(fs.last_executed, log.h if send_checkpoint else fs.last_executed)
        end = min(log.last_executed, start + self.window)
        committed = tuple(log.executed[s] for s in range(start + 1, end + 1)
                          if s in log.executed)
        latest = self.host.latest_new_view
        if not send_checkpoint and not committed and latest is None:
            return
        nv = m.encode(latest) if latest is not None else b""
        data = m.StateData(
            log.h if send_checkpoint else 0,
            cps.stable_proof if send_checkpoint else (),
            (cps.stable_snapshot or b"") if send_checkpoint else b"",
            committed,
            log.view,
            nv,
            self.me,
        )
        self.out.send(sender, data)

    def on_state_data(self, sender: int, sd: m.StateData) -> None:
        if not self.fetching:
            return  # a late answer to a finished fetch: nothing to do
        if sd.new_view:
            self._maybe_adopt_new_view(sd.new_view)
        if sd.stable_seq > self.log.last_executed:
            self._maybe_install_snapshot(sender, sd)
        window_top = self.log.last_executed + self.window
        for cb in sd.committed:
            if self.log.last_executed < cb.seq <= window_top:
                self.costs.digest += 1
                digest = cb.batch.digest()
                self.votes.setdefault(cb.seq, {}).setdefault(digest, set()).add(sender)
                self.bodies[digest] = (cb.seq, cb.view, cb.batch)
        self._execute_transferred()

    def _maybe_adopt_new_view(self, raw: bytes) -> None:
        try:
            nv = m.decode(raw)
        except DecodeError:
            return
        log = self.log
        if type(nv) is m.NewView and (
            nv.view > log.view or (nv.view == log.view and not log.view_active)
        ):
            self.host.accept_new_view(nv)

    def _maybe_install_snapshot(self, sender: int, sd: m.StateData) -> None:
        cps = self.checkpoints
        if not cps.valid_proof(sd.stable_seq, sd.checkpoint_proof) or sd.stable_seq == 0:
            self.out.drop("bad checkpoint proof in state data", self.ids[sender], sd.KIND)
            return
        self.costs.digest += 1
        if m.digest_of(sd.snapshot) != sd.checkpoint_proof[0].digest:
            self.out.drop("snapshot does not match its proof", self.ids[sender], sd.KIND)
            return
        try:
            self.host.restore_snapshot(sd.snapshot)
        except ValueError:
            self.out.drop("malformed snapshot", self.ids[sender], sd.KIND)
            return
        log = self.log
        log.last_executed = sd.stable_seq
        self.transferred += 1
        log.next_seq = max(log.next_seq, log.last_executed + 1)
        log.executed.clear()
        cps.own[sd.stable_seq] = sd.snapshot
        self.out.trace("state-transfer", seq=sd.stable_seq,
                       digest=sd.checkpoint_proof[0].digest.hex())
        self.host.forget_answered()
        if sd.stable_seq >= log.h:
            cps.make_stable(sd.stable_seq, sd.checkpoint_proof, sd.snapshot)

    def _execute_transferred(self) -> None:
        """Execute fetched batches in order once f+1 replicas vouch for the same digest at a
        seq: at least one of them is correct, so that batch was committed."""
        log = self.log
        while True:
            seq = log.last_executed + 1
            votes = self.votes.get(seq)
            if not votes:
                break
            digest = next((d for d, who in sorted(votes.items()) if len(who) > self.f), None)
            if digest is None:
                break
            _, view, batch = self.bodies[digest]
            slot = log.slots.get(seq)
            if slot is not None and slot.committed and slot.digest != digest:
                # f+1 vouchers contradict what we committed: more than f replicas are faulty
                # (impossible within the fault bound). Keep our own certificate.
                self.out.drop("state transfer contradicts a committed batch", "", "STATE-DATA")
                del self.votes[seq]
                break
            del self.votes[seq]
            log.batches.setdefault(digest, batch)
            self.host.execute(seq, view, digest, batch)
            self.transferred += 1
        self.host.maybe_execute()

    def collect_garbage(self, h: int) -> None:
        for seq in [s for s in self.votes if s <= h]:
            del self.votes[seq]
        for d in [d for d, (s, _, _) in self.bodies.items() if s <= h]:
            del self.bodies[d]
        for d in [d for d, s in self.missing_batches.items() if s <= h]:
            del self.missing_batches[d]
