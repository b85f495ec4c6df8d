"""State transfer: fetching batch bodies (FETCH-BATCH, BATCH-DATA) and state (FETCH-STATE,
STATE-DATA) from other replicas.

Why this exists: a replica that lost messages (a partition, a crash, a restart) must catch up
without trusting any single peer. A missing batch body is checked against the digest that was
agreed on; a snapshot against its stable-checkpoint proof; and batches executed after it are
executed only once f+1 replicas vouch for the same digest at a seq, so at least one correct
replica executed it.

A snapshot travels in chunks of at most node.pbft.checkpoint.CHUNK_BYTES, one per STATE-DATA,
so no state is too large for a message. Every STATE-DATA carrying state holds the checkpoint's
proof, the list of its chunks' hashes and one chunk with its index (an answer to FETCH-STATE
holds chunk 0: a small state arrives in one round trip, as before). A chunk that does not
match its hash is dropped and counted. The checkpoint digest covers the state, not the
snapshot bytes (those are built only when asked for), so a chunk list is trusted only when
f+1 replicas sent the same one (one is correct, and correct replicas serialise equal states to
equal bytes), or when it has a single chunk, checked whole; missing chunks are then asked of
those replicas in turn, rotating on each fetch timeout. The assembled snapshot installs only if
the state it restores has the digest the proof certifies, else nothing changes.

A replica that restarts (`fetch_state(persistent=True)`) does not give up after one silent
round: nobody answers a FETCH-STATE while links are still coming up, and on an idle network no
later message would show it is behind. It asks again with backoff in virtual time (the fetch
timeout doubling up to BACKOFF_CAP times it) for up to PERSISTENT_IDLE_ROUNDS rounds that
bring nothing; any progress resets the count. A STATE-DATA that arrives after its fetch ended
is still used if it brings something newer than what we have (it reopens the fetch).

A STATE-DATA also carries the sender's latest NEW-VIEW, which proves itself, so a replica that
missed a view change learns of it here.

What it must not know: how batches are agreed on or executed, how view changes are decided,
message authentication. What it needs from the rest of the replica is `TransferHost`.
"""

from __future__ import annotations

from typing import Protocol

from node import messages as m
from node.config import Config
from node.crypto import Costs
from node.messages import DecodeError
from node.pbft.checkpoint import CachedReply, Checkpoints
from node.pbft.log import NULL_DIGEST, Log
from node.pbft.outbox import T_FETCH, Outbox

__all__ = ["BACKOFF_CAP", "PERSISTENT_IDLE_ROUNDS", "StateTransfer", "TransferHost"]

#: A persistent fetch waits at most this many fetch timeouts between rounds.
BACKOFF_CAP = 32
#: A persistent fetch gives up after this many consecutive rounds that brought nothing
#: (with the defaults: 100 ms doubling to 3.2 s, about 25 s in all).
PERSISTENT_IDLE_ROUNDS = 12


class TransferHost(Protocol):
    """What state transfer asks of the rest of the replica."""

    @property
    def latest_new_view(self) -> m.NewView | None:
        """The NEW-VIEW of our view, if any (sent along with our state)."""

    def valid_request(self, req: m.Request) -> bool: ...

    def batch_refusal(self, requests: tuple[m.Request, ...]) -> str | None:
        """Why a fetched batch may not be accepted (a bad signature, an inadmissible request),
        or None."""

    def execute(self, seq: int, view: int, digest: bytes, batch: m.Batch) -> None: ...

    def maybe_execute(self) -> None:
        """A batch body arrived: committed slots waiting for it may execute now."""

    @property
    def replies(self) -> dict[tuple[str, int], CachedReply]:
        """The reply cache (part of the replicated state)."""

    def restore_snapshot(self, snapshot: bytes, digest: bytes) -> None:
        """Replace the replicated state by a snapshot whose checkpoint digest is `digest`
        (ValueError, nothing replaced, if it is malformed or has another digest)."""

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
        # Snapshot chunks: the chunk list (seq, digest, hashes) each replica last sent us, its
        # proof and first chunk, the list being assembled and the chunks we have of it.
        self.claims: dict[int, tuple[int, bytes, tuple[bytes, ...]]] = {}
        self.proofs: dict[tuple[int, bytes, tuple[bytes, ...]], tuple[m.Checkpoint, ...]] = {}
        self.first: dict[tuple[int, bytes, tuple[bytes, ...]], bytes] = {}
        self.assembling: tuple[int, bytes, tuple[bytes, ...]] | None = None
        self.chunks: dict[int, bytes] = {}
        self.attempt = 0
        self.received = self.received_mark = 0
        self.stalled = 0
        self.asked = False
        """A FETCH-STATE went out (late answers are considered only then)."""
        self.persistent = False
        self.idle_rounds = 0
        self.repair = 0
        """A checkpoint seq at which our own state was found bad (0: none): the stable state
        at or above it is installed even though we executed beyond it (a repair)."""

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
        refused = self.host.batch_refusal(bd.batch.requests)
        if refused is not None:
            self.out.drop(refused, self.ids[sender], bd.KIND)
            return
        del self.missing_batches[digest]
        self.log.batches[digest] = bd.batch
        self.host.maybe_execute()

    # -- state -------------------------------------------------------------------------------

    def fetch_state(self, persistent: bool = False, repair: int = 0) -> None:
        """Ask every replica for what we lack. `persistent` (a restart): keep asking, with
        backoff, through rounds that bring nothing (see the module docstring). `repair`: our
        state at that checkpoint is bad; ask as if we had executed only up to before it."""
        if persistent and not self.persistent:
            self.persistent, self.idle_rounds = True, 0
        if repair:
            self.repair = max(self.repair, repair)
        self.fetching = True
        self.asked = True
        self.fetch_mark = self.transferred
        last = self.log.last_executed
        if self.repair:
            last = min(last, self.repair - 1)
        self.out.bcast(m.FetchState(last, 0, 0, self.me))
        self.out.trace("fetch-state", last_executed=last)
        if T_FETCH not in self.out.timers:
            self.out.set_timer(T_FETCH, self._delay())

    def _delay(self) -> int:
        """The next fetch timeout: doubling per idle round of a persistent fetch, capped."""
        if not self.fetching or not self.idle_rounds:
            return self.timeout_ns
        return self.timeout_ns * min(BACKOFF_CAP, 2 ** self.idle_rounds)

    def on_fetch_timeout(self) -> None:
        if self.missing_batches:
            for digest in list(self.missing_batches):
                self.out.bcast(m.FetchBatch(digest, self.me))
        if self.fetching:
            log = self.log
            if self.assembling is not None and self._chunks_still_coming():
                self.attempt += 1
                self._request_chunks()
            elif (self.transferred != self.fetch_mark or log.h > log.last_executed
                  or self.repair):
                self.idle_rounds = 0
                self.fetch_state()  # the last round brought something (or we are not there yet)
            elif self.persistent and self.idle_rounds < PERSISTENT_IDLE_ROUNDS:
                self.idle_rounds += 1  # nothing yet: ask again, later
                self.fetch_state()
            else:
                self.fetching = self.persistent = False
                self.idle_rounds = 0
        if (self.missing_batches or self.fetching) and T_FETCH not in self.out.timers:
            self.out.set_timer(T_FETCH, self._delay())

    def _chunks_still_coming(self) -> bool:
        """Did chunks arrive since the last timeout (or has not every source had its turn
        yet)? If not, give the assembly up: the sources moved on, or are faulty."""
        if self.received != self.received_mark:
            self.received_mark = self.received
            self.stalled = 0
            return True
        self.stalled += 1
        if self.stalled <= len(self._sources()):
            return True
        self.assembling, self.chunks = None, {}
        return False

    def on_fetch_state(self, sender: int, fs: m.FetchState) -> None:
        log, cps = self.log, self.checkpoints
        if fs.stable_seq:  # a chunk of our stable checkpoint
            if fs.stable_seq == log.h and cps.holds_stable:
                chunks, hashes = cps.stable_chunks()
                if 0 <= fs.chunk < len(chunks):
                    self.out.send(sender, m.StateData(log.h, cps.stable_proof, hashes, fs.chunk,
                                                      chunks[fs.chunk], (), log.view, b"",
                                                      self.me))
            return
        send_checkpoint = log.h > fs.last_executed and cps.holds_stable
        start = max(fs.last_executed, log.h if send_checkpoint else fs.last_executed)
        end = min(log.last_executed, start + self.window)
        committed = tuple(log.executed[s] for s in range(start + 1, end + 1)
                          if s in log.executed)
        latest = self.host.latest_new_view
        if not send_checkpoint and not committed and latest is None:
            return
        nv = m.encode(latest) if latest is not None else b""
        chunks, hashes = cps.stable_chunks() if send_checkpoint else ((b"",), ())
        data = m.StateData(
            log.h if send_checkpoint else 0,
            cps.stable_proof if send_checkpoint else (),
            hashes,
            0,
            chunks[0],
            committed,
            log.view,
            nv,
            self.me,
        )
        self.out.send(sender, data)

    def on_state_data(self, sender: int, sd: m.StateData) -> None:
        if not self.fetching:
            if not self.asked or not self._newer(sd):
                return  # unasked for, or a late answer with nothing new: nothing to do
            # A late answer to a fetch that gave up, with something newer: use it, and keep
            # fetching from there.
            self.fetching = True
            self.fetch_mark = self.transferred
            if T_FETCH not in self.out.timers:
                self.out.set_timer(T_FETCH, self.timeout_ns)
        if sd.new_view:
            self._maybe_adopt_new_view(sd.new_view)
        if sd.stable_seq > self.log.last_executed or (self.repair
                                                       and sd.stable_seq >= self.repair):
            self._on_chunk(sender, sd)
        window_top = self.log.last_executed + self.window
        for cb in sd.committed:
            if self.log.last_executed < cb.seq <= window_top:
                self.costs.digest += 1
                digest = cb.batch.digest()
                self.votes.setdefault(cb.seq, {}).setdefault(digest, set()).add(sender)
                self.bodies[digest] = (cb.seq, cb.view, cb.batch)
        self._execute_transferred()

    def _newer(self, sd: m.StateData) -> bool:
        """Does `sd` bring a checkpoint or a batch beyond what we executed?"""
        last = self.log.last_executed
        if self.repair and sd.stable_seq >= self.repair:
            return True
        return sd.stable_seq > last or any(cb.seq > last for cb in sd.committed)

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

    # -- chunks of a stable checkpoint's snapshot ----------------------------------------------

    def _on_chunk(self, sender: int, sd: m.StateData) -> None:
        """One chunk of a stable checkpoint's snapshot. It must match its hash in the list it
        came with; the list is trusted once f+1 replicas sent it (one of them is correct, and
        correct replicas build identical snapshots of identical states), or at once when the
        snapshot is a single chunk (the whole snapshot is then checked on install). The
        assembled snapshot must still restore to a state with the proof's digest."""
        hashes = sd.chunk_hashes
        if (not sd.checkpoint_proof or not 0 <= sd.chunk_index < len(hashes)
                or any(len(h) != 32 for h in hashes)):
            self.out.drop("malformed state data", self.ids[sender], sd.KIND)
            return
        key = (sd.stable_seq, sd.checkpoint_proof[0].digest, hashes)
        if key != self.assembling and (
            sd.stable_seq == 0
            or not self.checkpoints.valid_proof(sd.stable_seq, sd.checkpoint_proof)
        ):
            self.out.drop("bad checkpoint proof in state data", self.ids[sender], sd.KIND)
            return
        self.costs.digest += 1
        if m.digest_of(sd.chunk) != hashes[sd.chunk_index]:
            self.out.drop("state chunk does not match its hash", self.ids[sender], sd.KIND)
            return
        if key == self.assembling:
            if sd.chunk_index not in self.chunks:
                self.chunks[sd.chunk_index] = sd.chunk
                self.received += 1
        else:
            self.claims[sender] = key
            self.proofs[key] = sd.checkpoint_proof
            if sd.chunk_index == 0:
                self.first[key] = sd.chunk
            for k in [k for k in self.proofs if k not in self.claims.values()]:
                del self.proofs[k]
                self.first.pop(k, None)
            trusted = len(hashes) == 1 or len(self._sources(key)) > self.f
            if trusted and (self.assembling is None or key[0] > self.assembling[0]):
                self.assembling = key
                self.chunks = {0: self.first[key]} if key in self.first else {}
                self.attempt = self.stalled = 0
                self._request_chunks()
        if self.assembling is not None and len(self.chunks) == len(self.assembling[2]):
            self._install()

    def _sources(self, key: tuple[int, bytes, tuple[bytes, ...]] | None = None
                  ) -> list[int]:
        """The replicas that sent us `key`'s chunk list (default: the one being assembled)."""
        key = key if key is not None else self.assembling
        return sorted(r for r, k in self.claims.items() if k == key)

    def _request_chunks(self) -> None:
        """Ask for each missing chunk, spreading them over the sources, rotating per round."""
        assert self.assembling is not None
        seq, _, hashes = self.assembling
        sources = self._sources()
        for i in range(len(hashes)):
            if i not in self.chunks and sources:
                target = sources[(i + self.attempt) % len(sources)]
                self.out.send(target, m.FetchState(self.log.last_executed, seq, i, self.me))

    def _install(self) -> None:
        assert self.assembling is not None
        key = self.assembling
        seq, digest, hashes = key
        snap = b"".join(self.chunks[i] for i in range(len(hashes)))
        proof = self.proofs[key]
        sources = self._sources()
        self.assembling, self.chunks = None, {}
        try:
            self.host.restore_snapshot(snap, digest)
        except ValueError:
            for r in sources:
                self.out.drop("snapshot does not match its proof", self.ids[r], "STATE-DATA")
                del self.claims[r]
            return
        log, cps = self.log, self.checkpoints
        if seq >= self.repair:
            self.repair = 0  # repaired: the state at seq is the quorum's
        log.last_executed = seq
        self.transferred += 1
        log.next_seq = max(log.next_seq, log.last_executed + 1)
        log.executed.clear()
        cps.remember(seq, self.host.replies)
        for r in [r for r, k in self.claims.items() if k[0] <= seq]:
            del self.claims[r]
        for k in [k for k in self.proofs if k[0] <= seq]:
            del self.proofs[k]
            self.first.pop(k, None)
        self.out.trace("state-transfer", seq=seq, digest=digest.hex())
        self.host.forget_answered()
        if seq >= log.h:
            cps.make_stable(seq, proof, snap)

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
