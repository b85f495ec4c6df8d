"""View changes (OSDI '99 §4.4), with the NEW-VIEW decision procedure of TOCS 2002 §4.5.

Why this exists: when the primary stalls or lies, backups must move to the next view without
losing any request that may have committed. A replica whose timer expires multicasts a signed
VIEW-CHANGE (its stable checkpoint with proof, what it prepared, what it pre-prepared); the
primary of the new view collects q of them (V), computes which batch each seq gets (O, by
`decide_new_view`, a pure function of V) and multicasts a NEW-VIEW, which every replica checks
by running the same procedure on the same V. This module also covers the liveness rules of
§4.5.2 (timeouts double, a replica joins a view f+1 others asked for, the timer runs only with
q VIEW-CHANGEs) and helps replicas that missed a NEW-VIEW (it is relayed: it proves itself).

What it must not know: how requests are ordered in a view (it asks `ViewChangeHost` to
re-check slots and propose), how state is fetched (it asks node.pbft.transfer), message
authentication. `decide_new_view` knows nothing but its arguments.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from node import messages as m
from node.config import Config
from node.crypto import Keyring
from node.messages import Message
from node.pbft.checkpoint import Checkpoints
from node.pbft.log import NULL_DIGEST, Log, Slot
from node.pbft.outbox import T_BATCH, T_RETRANSMIT, T_VIEW_CHANGE, Outbox
from node.pbft.transfer import StateTransfer
from node.quorum import primary_of

__all__ = ["ViewChangeHost", "ViewChanges", "decide_new_view"]

MAX_BACKOFF_SHIFT = 4
"""The view-change timeout doubles per failed attempt (§4.5.2) up to 16T. Unbounded doubling
lets a replica that raced ahead into a higher view (after a partition, say) wait minutes for
the others to reach it while f Byzantine replicas withhold their votes; practical systems
(BFT-SMaRt among them) bound the backoff the same way."""


class ViewChangeHost(Protocol):
    """What the view change asks of normal-case operation (node.pbft.normal_case)."""

    def requeue_dropped_proposals(self, assigned: dict[int, bytes]) -> None:
        """Before the log is replaced by O: requests of proposals O drops are pending again."""

    def maybe_prepared(self, seq: int, slot: Slot) -> bool: ...

    def maybe_propose(self) -> None: ...

    def restart_view_change_timer(self) -> None: ...

    def forget_commit_progress(self) -> None:
        """Peers' commit progress was measured in the old view."""

    def replay_future(self) -> None:
        """Buffered messages of the view just installed may be acceptable now."""


class ViewChanges:
    """VIEW-CHANGEs received by view and sender, the latest NEW-VIEW, failed attempts (for
    the backoff), and which peers are seen ahead of us or were told of our view."""

    def __init__(self, host: ViewChangeHost, out: Outbox, log: Log, checkpoints: Checkpoints,
                 transfer: StateTransfer, keys: Keyring, ids: tuple[str, ...], me: int, f: int,
                 q: int, config: Config) -> None:
        self.host = host
        self.out = out
        self.log = log
        self.checkpoints = checkpoints
        self.transfer = transfer
        self.keys = keys
        self.ids = ids
        self.me = me
        self.n = len(ids)
        self.f = f
        self.q = q
        self.window = config.watermark_window
        self.base_timeout_ns = config.view_change_timeout_ns
        self.changes: dict[int, dict[int, m.ViewChange]] = {}
        self.latest_new_view: m.NewView | None = None
        self.attempts = 0
        self.new_view_timeout_ns = config.view_change_timeout_ns
        self.hinted: dict[int, tuple[int, int]] = {}  # peer -> (NEW-VIEW view sent, when)
        self.ahead_of_us: dict[int, tuple[int, bool]] = {}

    def timeout_ns(self) -> int:
        """The view-change timeout, doubled per failed attempt (§4.5.2), at most 16x."""
        shift = min(self.attempts, MAX_BACKOFF_SHIFT)
        return self.base_timeout_ns << shift

    # -- leaving a view ----------------------------------------------------------------------

    def start_view_change(self, new_view: int, cause: str, **detail: str) -> None:
        """Leave the view for `new_view`. `cause` (and `detail`) go on the trace row only: a
        timer (`request-timer`, `new-view-timer`), `f+1-view-changes`, or what was wrong."""
        log = self.log
        assert new_view > log.view or not log.view_active
        log.view = new_view
        log.view_active = False
        log.votes_dirty = True
        self.out.cancel_timer(T_BATCH)
        prepared, preprepared = log.view_change_sets()
        unsigned = m.ViewChange(new_view, log.h, self.checkpoints.stable_proof, prepared,
                                preprepared, self.me, b"")
        vc = m.replace(unsigned, signature=self.keys.sign(unsigned.unsigned()))
        self.changes.setdefault(new_view, {})[self.me] = vc
        self.out.bcast(vc)
        self.out.trace("view-change", view=new_view, stable_seq=log.h, prepared=len(prepared),
                       cause=cause, **detail)
        self.new_view_timeout_ns = self.timeout_ns()
        self.out.cancel_timer(T_VIEW_CHANGE)
        self.out.set_timer(T_RETRANSMIT, self.new_view_timeout_ns // 4 or 1)
        self.attempts += 1
        self.maybe_arm_new_view_timer()
        self._maybe_new_view(new_view)

    def retransmit(self) -> None:
        """Waiting for a NEW-VIEW: our VIEW-CHANGE may have been lost (a partition that has
        healed since); send it again until the view is installed."""
        own = self.changes.get(self.log.view, {}).get(self.me)
        if own is not None:
            self.out.bcast(own)
            self.out.set_timer(T_RETRANSMIT, self.timeout_ns() // 4 or 1)

    def maybe_arm_new_view_timer(self) -> None:
        """§4.5.2 rule 1: after sending VIEW-CHANGE for v, a replica starts its timer only
        once it holds 2f+1 VIEW-CHANGEs for v. A replica alone (cut off, or behind) thus
        cannot run ahead into ever higher views that the others then have to reach."""
        if self.log.view_active or T_VIEW_CHANGE in self.out.timers:
            return
        if len(self.changes.get(self.log.view, {})) >= self.q:
            self.out.set_timer(T_VIEW_CHANGE, self.new_view_timeout_ns)

    # -- VIEW-CHANGE -------------------------------------------------------------------------

    def _ignore_view_change(self, sender: int, vc: m.ViewChange) -> str | None:
        log = self.log
        if vc.view < log.view or (vc.view == log.view and log.view_active):
            self.hint_new_view(sender, vc.view - 1)  # it has not installed vc.view
            return "old view-change"
        if vc.view > log.view + 64 * self.n:
            return "view-change too far ahead"
        if vc.replica != sender:
            return "view-change not from its signer"
        return self.invalid_view_change(vc)

    def invalid_view_change(self, vc: m.ViewChange) -> str | None:
        """Check a VIEW-CHANGE on its own: signature, checkpoint proof C, shape of P and Q."""
        if not 0 <= vc.replica < self.n:
            return "view-change from unknown replica"
        if not self.keys.verify(self.ids[vc.replica], vc.unsigned(), vc.signature):
            return "bad view-change signature"
        if not self.checkpoints.valid_proof(vc.stable_seq, vc.checkpoint_proof):
            return "bad checkpoint proof"
        window = self.window
        for entry in vc.prepared + vc.preprepared:
            if not vc.stable_seq < entry.seq <= vc.stable_seq + window or entry.view >= vc.view:
                return "view-change entry outside its window"
        if len({e.seq for e in vc.prepared}) != len(vc.prepared):
            return "view-change with two prepared entries for one seq"
        if len(vc.preprepared) > 4 * window:
            return "view-change too large"
        return None

    def on_view_change(self, sender: int, vc: m.ViewChange) -> None:
        reason = self._ignore_view_change(sender, vc)
        if reason:
            self.out.drop(reason, self.ids[sender], vc.KIND)
            return
        self.changes.setdefault(vc.view, {}).setdefault(sender, vc)
        if self._maybe_join_higher_view():
            return
        # A VIEW-CHANGE for a later view also says its sender has left ours, perhaps through
        # a view whose NEW-VIEW we lost; it may be the only sign of that left.
        self.notice_higher_view(sender, vc)
        if vc.view == self.log.view:
            self.maybe_arm_new_view_timer()
        self._maybe_new_view(vc.view)

    def _maybe_join_higher_view(self) -> bool:
        """§4.5.2 rule 2: f+1 VIEW-CHANGEs for views above ours mean at least one correct
        replica wants a change: join the smallest view that f+1 of them reached."""
        target = join_target(self.changes, self.log.view, self.me, self.f)
        if target is None:
            return False
        self.out.trace("join-view", view=target)
        self.start_view_change(target, "f+1-view-changes")
        return True

    def _maybe_new_view(self, view: int) -> None:
        log = self.log
        if view != log.view or log.view_active or primary_of(view, self.n) != self.me:
            return
        by = self.changes.get(view, {})
        if self.me not in by or len(by) < self.q:
            return
        chosen = [by[r] for r in sorted(by)]
        assignments = decide_new_view(chosen, self.n, self.f, self.q)
        if assignments is None:
            return  # not decidable yet: wait for more VIEW-CHANGEs (TOCS §4.5)
        unsigned = m.NewView(view, tuple(chosen), assignments, self.me, b"")
        nv = m.replace(unsigned, signature=self.keys.sign(unsigned.unsigned()))
        self.out.bcast(nv)
        self.out.trace("new-view", view=view, assignments=len(assignments))
        self._enter_view(nv)

    # -- NEW-VIEW ----------------------------------------------------------------------------

    def _ignore_new_view(self, nv: m.NewView) -> str | None:
        log = self.log
        if nv.view < log.view or (nv.view == log.view and log.view_active):
            return "old new-view"
        if nv.replica != primary_of(nv.view, self.n):
            return "new-view not from the view's primary"
        if not self.keys.verify(self.ids[nv.replica], nv.unsigned(), nv.signature):
            return "bad new-view signature"
        signers = [vc.replica for vc in nv.view_changes]
        if len(set(signers)) != len(signers) or len(signers) < self.q:
            return "new-view without a quorum of view-changes"
        for vc in nv.view_changes:
            if vc.view != nv.view or self.invalid_view_change(vc):
                return "new-view carries an invalid view-change"
        if decide_new_view(list(nv.view_changes), self.n, self.f, self.q) != nv.assignments:
            return "new-view O set does not follow from V"
        return None

    def on_new_view(self, sender: int, nv: m.NewView) -> None:
        # A NEW-VIEW may come from its primary or be relayed by a replica that saw us behind
        # (`hint_new_view`): it is checked on its own signature and proofs either way.
        self.accept_new_view(nv)

    def accept_new_view(self, nv: m.NewView) -> None:
        reason = self._ignore_new_view(nv)
        if reason:
            self.out.drop(reason, self.ids[nv.replica], nv.KIND)
            return
        self._enter_view(nv)

    def _enter_view(self, nv: m.NewView) -> None:
        """Install view v+1 from a valid NEW-VIEW: adopt its checkpoint, re-run O (§4.4)."""
        log, host = self.log, self.host
        log.view = nv.view
        log.view_active = True
        log.votes_dirty = True
        self.latest_new_view = nv
        for v in [v for v in self.changes if v <= nv.view]:
            del self.changes[v]
        best = max(nv.view_changes, key=lambda vc: (vc.stable_seq, vc.replica))
        if best.stable_seq > log.h:
            self._adopt_checkpoint(best.stable_seq, best.checkpoint_proof)
        assigned = {a.seq: a.digest for a in nv.assignments if a.seq > log.h}
        host.requeue_dropped_proposals(assigned)
        log.slots = {}
        primary = primary_of(log.view, self.n) == self.me
        top = max([log.h, *assigned])
        for a in nv.assignments:
            if a.seq <= log.h:
                continue
            slot = log.slot(a.seq)
            slot.view, slot.digest, slot.pre_prepared = nv.view, a.digest, True
            log.note_preprepared(a.seq, a.digest, nv.view)
            if a.digest not in log.batches:
                self.transfer.fetch_batch(a.digest, a.seq)
            if not primary:
                slot.prepares[self.me] = a.digest
                self.out.bcast(m.Prepare(nv.view, a.seq, a.digest, self.me))
        log.next_seq = max(top, log.last_executed) + 1
        host.forget_commit_progress()
        self.ahead_of_us.clear()
        self.out.trace("enter-view", view=nv.view, primary=self.ids[primary_of(log.view, self.n)])
        host.restart_view_change_timer()
        host.replay_future()
        for a in nv.assignments:
            assigned_slot = log.slots.get(a.seq)
            if assigned_slot is not None:
                host.maybe_prepared(a.seq, assigned_slot)
        if primary:
            host.maybe_propose()

    def _adopt_checkpoint(self, seq: int, proof: tuple[m.Checkpoint, ...]) -> None:
        cps = self.checkpoints
        if cps.own.get(seq) == proof[0].digest:
            cps.advance_stable(seq, proof, True)
            return
        # We have not reached that checkpoint: move the window, fetch the state.
        cps.advance_stable(seq, proof, False)
        self.transfer.fetch_state()

    # -- replicas in different views ---------------------------------------------------------

    def notice_higher_view(self, sender: int, msg: Message) -> None:
        """f+1 replicas beyond us in the view sequence: we missed a NEW-VIEW (or it is on its
        way); ask for state, whose answer carries the latest NEW-VIEW.

        A replica's place is (view, installed): a VIEW-CHANGE for view v puts its sender at
        (v, not installed), any other message of view v at (v, installed). A sender is ahead
        only when its place is beyond ours, so VIEW-CHANGEs for the very view we are waiting
        to install (its peers waiting with us) never start a needless state fetch."""
        view = getattr(msg, "view", 0)
        place = (view, not isinstance(msg, m.ViewChange))
        ours = (self.log.view, self.log.view_active)
        if place <= ours:
            return
        self.ahead_of_us[sender] = max(place, self.ahead_of_us.get(sender, (0, False)))
        ahead = sum(1 for p in self.ahead_of_us.values() if p > ours)
        if ahead >= self.f + 1 and not self.transfer.fetching:
            self.transfer.fetch_state()

    def hint_new_view(self, sender: int, their_view: int) -> None:
        """A peer still works in a view we have left: it missed the NEW-VIEW (a partition, a
        crash). Send it ours, which proves itself, so it need not wait for f+1 others to show
        it the way; at most once per view-change timeout per peer. (The BFT library's status
        messages serve the same end, in Castro's thesis.)"""
        nv = self.latest_new_view
        if nv is None or not self.log.view_active or nv.view <= their_view:
            return
        now = self.out.now_ns
        last = self.hinted.get(sender)
        if last is not None and last[0] == nv.view and (
                now - last[1] < self.base_timeout_ns):
            return
        self.hinted[sender] = (nv.view, now)
        self.out.send(sender, nv)


def join_target(changes: dict[int, dict[int, m.ViewChange]], view: int, me: int,
                f: int) -> int | None:
    """The view to join by §4.5.2 rule 2, or None: the smallest view above `view` that f+1
    other replicas have sent VIEW-CHANGEs for (each counted at its highest)."""
    highest: dict[int, int] = {}
    for v, by in changes.items():
        if v > view:
            for r in by:
                if r != me:
                    highest[r] = max(v, highest.get(r, 0))
    if len(highest) < f + 1:
        return None
    target = sorted(highest.values(), reverse=True)[f]
    return target if target > view else None


def decide_new_view(
    view_changes: list[m.ViewChange], n: int, f: int, q: int
) -> tuple[m.SeqDigest, ...] | None:
    """Compute the O set of a NEW-VIEW from its V set, or None if V does not decide yet.

    For each seq between the highest stable checkpoint in V (min-s) and the highest prepared
    seq (max-s), choose (Castro, TOCS 2002 §4.5, condition A / B):
      A. digest d prepared in view v by some replica, when q messages in V do not contradict it
         (no prepared entry for seq, or one from a lower view, or the same (v, d)) and f+1
         messages report having pre-prepared d in view v or later; or
      B. the null request, when q messages in V have no prepared entry for seq.
    Both the new primary and every backup run this on the same V, so backups can check O.
    """
    min_s = max(vc.stable_seq for vc in view_changes)
    prepared = [{e.seq: e for e in vc.prepared} for vc in view_changes]
    preprepared = [_preprepared_by_seq(vc.preprepared) for vc in view_changes]
    max_s = max((s for p in prepared for s in p), default=min_s)
    chosen: list[m.SeqDigest] = []
    for seq in range(min_s + 1, max_s + 1):
        candidates = sorted(
            {(p[seq].view, p[seq].digest) for p in prepared if seq in p}, reverse=True
        )
        pick: bytes | None = None
        for view, digest in candidates:
            not_contradicted = sum(
                1 for p in prepared
                if seq not in p or p[seq].view < view
                or (p[seq].view == view and p[seq].digest == digest)
            )
            backed = sum(1 for q_ in preprepared if q_.get(seq, {}).get(digest, -1) >= view)
            if not_contradicted >= q and backed >= f + 1:
                pick = digest
                break
        if pick is None:
            if sum(1 for p in prepared if seq not in p) >= q:
                pick = NULL_DIGEST
            else:
                return None
        chosen.append(m.SeqDigest(seq, pick, 0))
    return tuple(chosen)


def _preprepared_by_seq(entries: Iterable[m.SeqDigest]) -> dict[int, dict[bytes, int]]:
    """seq -> digest -> the latest view it was pre-prepared in (the Q entries of one V)."""
    out: dict[int, dict[bytes, int]] = {}
    for e in entries:
        by = out.setdefault(e.seq, {})
        by[e.digest] = max(e.view, by.get(e.digest, -1))
    return out
