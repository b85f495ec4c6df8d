"""The message log and the replica's place in it: view, watermarks, sequence numbers, slots.

Why this exists: every part of the protocol reads where the replica stands (which view, the
low and high watermarks h and h + L, the next sequence number to propose, the last one
executed) and what it has agreed to (one `Slot` per sequence number, the batches they refer
to, what it pre-prepared and prepared, which a VIEW-CHANGE reports). Keeping that in one
object, with the few operations that keep it consistent, lets the rest be read as rules over
it. Messages that may become acceptable later (a later view, above the window) wait in
`Future`.

What it must not know: messages on the wire, keys, timers, the state machine. It decides
nothing; the normal case (node.pbft.normal_case) and the view change (node.pbft.view_change)
change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node import messages as m
from node.messages import Message

__all__ = ["NULL_DIGEST", "Future", "Log", "Slot", "take_batch", "vote_text"]

NULL_DIGEST = m.NULL_BATCH.digest()
"""The null request's batch: what a NEW-VIEW assigns to a seq nobody prepared (§4.4)."""


@dataclass(slots=True)
class Slot:
    """What one replica knows about one sequence number in the current view."""

    view: int = -1
    digest: bytes = b""
    pre_prepared: bool = False
    prepares: dict[int, bytes] = field(default_factory=dict)
    commits: dict[int, bytes] = field(default_factory=dict)
    prepared: bool = False
    committed: bool = False


class Log:
    """Slots between the watermarks, and the replica's position: the view it is in (and whether
    that view is installed, `view_active`), the stable checkpoint `h`, `next_seq` and
    `last_executed`."""

    def __init__(self, window: int) -> None:
        self.window = window
        # position
        self.view = 0
        self.view_active = True
        self.h = 0
        self.high = window
        """The high watermark h + L (§4.3): kept with `h` by `move_window`."""
        self.next_seq = 1
        self.last_executed = 0
        self.last_block_ts = 0
        # agreement
        self.slots: dict[int, Slot] = {}
        self.batches: dict[bytes, m.Batch] = {NULL_DIGEST: m.NULL_BATCH}
        self.prepared: dict[int, m.SeqDigest] = {}
        self.preprepared: dict[int, dict[bytes, int]] = {}
        self.executed: dict[int, m.CommittedBatch] = {}
        """Batches executed above h, kept to answer FETCH-STATE."""
        self.votes_dirty = False
        """The view or a vote changed since the last `votes` record (node.pbft.durable)."""
        self.prepared_text: dict[int, str] | None = None
        self.preprepared_text: dict[int, str] | None = None
        """Durable mode (`track_vote_texts`): each seq's votes as the `votes` record writes
        them, kept as the votes change, so the record is a join rather than a re-encoding of
        the whole window at every vote (None: not kept, as in a simulation)."""
        self.dirty_seqs: dict[int, None] = {}
        """Durable mode: the seqs whose votes changed since the last `vote` records (an
        insertion-ordered set)."""
        self.head_written = b""
        """Durable mode: the last `votes` head written (it is written again only when it
        changes)."""

    def slot(self, seq: int) -> Slot:
        """The slot for `seq` in the current view (votes from older views are discarded)."""
        slot = self.slots.get(seq)
        if slot is None or slot.view != self.view:
            slot = Slot(view=self.view)
            self.slots[seq] = slot
        return slot

    def in_flight(self) -> int:
        """Batches proposed (or assigned) and not executed yet."""
        return self.next_seq - 1 - self.last_executed

    def note_preprepared(self, seq: int, digest: bytes, view: int) -> None:
        self.votes_dirty = True
        entry = self.preprepared.setdefault(seq, {})
        entry[digest] = max(view, entry.get(digest, -1))
        if len(entry) > 4:  # bounded: keep the latest views only (TOCS §4.5 keeps O(1) per seq)
            oldest = min(entry, key=lambda d: (entry[d], d))
            del entry[oldest]
        if self.preprepared_text is not None:
            self.preprepared_text[seq] = ",".join(
                [vote_text(seq, d, v) for d, v in sorted(entry.items())])
            self.dirty_seqs[seq] = None

    def note_prepared(self, seq: int, digest: bytes, view: int) -> None:
        """We prepared `digest` at `seq` in `view` (the caller marks the votes dirty)."""
        self.prepared[seq] = m.SeqDigest(seq, digest, view)
        if self.prepared_text is not None:
            self.prepared_text[seq] = vote_text(seq, digest, view)
            self.dirty_seqs[seq] = None

    def track_vote_texts(self) -> None:
        """Keep `prepared_text` and `preprepared_text` from now on (durable mode; call before
        any vote is noted)."""
        self.prepared_text = {s: vote_text(s, e.digest, e.view) for s, e in self.prepared.items()}
        self.preprepared_text = {
            s: ",".join([vote_text(s, d, v) for d, v in sorted(by.items())])
            for s, by in self.preprepared.items()}
        self.dirty_seqs = dict.fromkeys(sorted({*self.prepared, *self.preprepared}))

    def view_change_sets(self) -> tuple[tuple[m.SeqDigest, ...], tuple[m.SeqDigest, ...]]:
        """P and Q of a VIEW-CHANGE (TOCS §4.5): what this replica prepared, and every digest
        it pre-prepared with the latest view, above the stable checkpoint."""
        h = self.h
        prepared = tuple(self.prepared[s] for s in sorted(self.prepared) if s > h)
        preprepared = tuple(
            m.SeqDigest(s, d, v)
            for s in sorted(self.preprepared) if s > h
            for d, v in sorted(self.preprepared[s].items())
        )
        return prepared, preprepared

    def move_window(self, h: int) -> None:
        """Set the low watermark (and with it the high one)."""
        self.h = h
        self.high = h + self.window

    def collect_garbage(self) -> None:
        """Discard slots, votes and executed batches at or below h, and batch bodies no slot
        refers to (§4.3)."""
        h = self.h
        for table in (self.slots, self.prepared, self.preprepared, self.executed,
                      self.prepared_text, self.preprepared_text):
            if table is None:
                continue
            for seq in [s for s in table if s <= h]:
                del table[seq]  # type: ignore[attr-defined]
        live = {slot.digest for slot in self.slots.values()}
        live.add(NULL_DIGEST)
        for d in [d for d in self.batches if d not in live]:
            del self.batches[d]


def vote_text(seq: int, digest: bytes, view: int) -> str:
    """One vote as the `votes` record's JSON writes it: [seq, "digest hex", view]."""
    return f'[{seq},"{digest.hex()}",{view}]'


class Future:
    """Messages kept because they may become acceptable (a later view, above the window).
    Each sender gets an equal share of the buffer, so a faulty one cannot fill it."""

    def __init__(self, limit: int, n: int) -> None:
        self.share = limit // n
        self.messages: list[tuple[int, Message]] = []
        self.by_sender: dict[int, int] = {}

    def add(self, sender: int, msg: Message) -> bool:
        """Keep `msg`; False if its sender's share is used up."""
        if self.by_sender.get(sender, 0) >= self.share:
            return False
        self.by_sender[sender] = self.by_sender.get(sender, 0) + 1
        self.messages.append((sender, msg))
        return True

    def take(self) -> list[tuple[int, Message]]:
        """Everything kept, oldest first; the buffer starts empty again."""
        kept, self.messages = self.messages, []
        self.by_sender = {}
        return kept


def take_batch(pending: dict[tuple[str, int, int], m.Request],
               limit: int) -> list[m.Request]:
    """Remove and return up to `limit` pending requests, oldest first (§4.2 batching)."""
    reqs: list[m.Request] = []
    for key in list(pending):
        if len(reqs) >= limit:
            break
        reqs.append(pending.pop(key))
    return reqs
