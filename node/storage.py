"""Durable storage for one replica (real mode): SQLite in WAL mode.

Why this exists: a node that crashes and restarts must lose nothing that was committed and
must not vote against what it voted before. The replica core says what to keep through
`Persist` effects (`node.events.Persist`); this module keeps it:

- `block`: every executed batch (an encoded `CommittedBatch`), append-only, keyed by seq. It
  is this node's copy of the ledger, served by the API's `/ledger`, and the batches replayed
  after the stable checkpoint on restart;
- `checkpoint`: the latest stable checkpoint (an encoded `StateData`: 2f+1 signed
  CHECKPOINTs and the state snapshot), replaced in place;
- `votes` and `vote`: the view and low watermark h (one record, replaced in place), and what
  this replica pre-prepared and prepared at each seq above h (a row per seq in the `votes`
  table, replaced as that seq's votes change, deleted once h passes it): what PBFT safety
  needs across a restart. `load` joins them into the one record the replica reads
  (`node.pbft.durable.join_votes`); a step writes only the seqs whose votes it changed;
- `stable`: the latest stable checkpoint's proof (2f+1 signed CHECKPOINTs, no state), replaced
  in place: the snapshot in `checkpoint` is written only every few stable checkpoints.

Write ordering: `stage()` collects the records of a step in memory (only the newest `votes`
and `checkpoint` matter; blocks accumulate); `commit()` writes them in one transaction. The
node calls `commit()` before any frame leaves (`node.transport.Outbox.before_flush`), so
nothing is sent that a restart could forget, and every step of one event-loop iteration
shares a single commit (group commit).

Durability levels (`sync`): `normal` (default) survives the process being killed (SIGKILL):
WAL pages are in the OS before the commit returns; `full` also fsyncs every commit, which
survives power loss at the price of one fsync per loop iteration. PBFT masks up to f nodes
that lose their disk, so `normal` is a reasonable default on a single machine; a consortium
deployment should run `full`.

Checkpoints of the WAL run on a thread of their own (`_Checkpointer`): SQLite's automatic
checkpoint would copy the WAL into the database file, and fsync it, inside whichever commit
crossed 1000 pages, stalling the event loop every few hundred commits (5-30 ms here, enough to
set a loopback cluster's p99). The node's connection has it off; every `CHECKPOINT_EVERY`
commits a second connection on the thread runs a PASSIVE checkpoint (the sqlite3 module
releases the GIL while it works), and should the WAL still outgrow `WAL_LIMIT_BYTES` (the
thread failing, or never catching up under constant writes) the node's connection checkpoints
it itself. What a commit makes durable does not change: checkpoints only move committed pages.

Noticing damage: every row carries a checksum (SHA-256 of its seq, view, digest and bytes),
checked when the database opens (all rows, plus SQLite's own `PRAGMA quick_check`) and again on
every read. A flipped byte, a truncated file or an empty file where a store was expected raises
`StorageError` naming the file and what is wrong; the node then refuses to start (exit 2)
unless the operator asks to discard the local state (`medbft node --rebuild`, `discard()`),
which keeps the damaged file aside and rebuilds by state transfer. Nothing damaged is ever
served or replayed. Files are private: the directory it creates 0700, the database 0600 (SQLite
gives its -wal and -shm files the database's mode).

What it must not know: protocol rules. It decodes records only to index them by seq.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node import messages as m
from node.pbft import durable

__all__ = ["DurableRecords", "ForeignStorage", "Storage", "StorageError"]

SYNC_LEVELS = {"off": "OFF", "normal": "NORMAL", "full": "FULL"}
CHECKPOINT_EVERY = 256
"""Commits between two requests to the checkpoint thread."""
WAL_LIMIT_BYTES = 64 * 1024 * 1024
"""A WAL larger than this is checkpointed by the node's own connection (blocking, rare)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (seq INTEGER PRIMARY KEY, view INTEGER NOT NULL,
                                   digest BLOB NOT NULL, data BLOB NOT NULL, sum BLOB);
CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, seq INTEGER NOT NULL,
                                    data BLOB NOT NULL, sum BLOB);
CREATE TABLE IF NOT EXISTS votes (seq INTEGER PRIMARY KEY, data BLOB NOT NULL, sum BLOB);
"""

#: Checksums are verified in pages of this many rows when the database opens.
_VERIFY_PAGE = 1000
# The head of an encoded CommittedBatch: its tag, then seq and view (u64 big-endian each).
_BLOCK_HEAD = struct.Struct(">BQQ")


def block_sum(seq: int, view: int, digest: bytes, data: bytes) -> bytes:
    """The checksum of one `blocks` row: it covers every column, so a damaged digest (served by
    `/ledger?digests=1` without decoding) is caught as well as a damaged block."""
    h = hashlib.sha256(b"block\0%d\0%d\0" % (seq, view))
    h.update(len(digest).to_bytes(4, "big") + digest)
    h.update(data)
    return h.digest()


def record_sum(key: str, seq: int, data: bytes) -> bytes:
    """The checksum of one `records` row (votes, checkpoint)."""
    h = hashlib.sha256(b"record\0%s\0%d\0" % (key.encode(), seq))
    h.update(data)
    return h.digest()


class StorageError(RuntimeError):
    """The database belongs to another node or network, or a record cannot be read."""


def _blob(value: object) -> bytes:
    """A BLOB column's bytes; anything else (a damaged row's TEXT, NULL) as an impossible
    value, so its checksum fails."""
    return bytes(value) if isinstance(value, bytes | memoryview) else b"\xff<not a blob>"


class ForeignStorage(StorageError):
    """The database belongs to another node or network (never discarded by `--rebuild`)."""


def _private_file(path: Path) -> None:
    """Create `path`'s directory 0700 (only if this creates it: never narrow an existing one)
    and the database 0600; an existing database is narrowed to 0600. An existing empty file is
    not a fresh start: something truncated the store (StorageError)."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.chmod(path.parent, 0o700)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        return
    wal = Path(f"{path}-wal")
    if size == 0 and not (wal.exists() and wal.stat().st_size > 0):
        raise StorageError(f"{path}: the database is empty (zero bytes); expected a store")
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class DurableRecords:
    """What `Replica.restore_durable` needs: votes, the snapshot on disk (`checkpoint`), the
    blocks after it, and the latest stable checkpoint's proof."""

    votes: bytes | None
    checkpoint: bytes | None
    checkpoint_seq: int
    blocks: list[bytes]
    stable: bytes | None = None

    @property
    def empty(self) -> bool:
        return self.votes is None and self.checkpoint is None and not self.blocks


class Storage:
    """One node's SQLite database. Not thread-safe; used from the node's event loop only."""

    def __init__(self, path: str | Path, *, owner: str, network_id: str,
                 sync: str = "normal") -> None:
        """Open (or create) the database at `path` for node `owner` of `network_id`.
        Raises StorageError if it belongs to another node or network, ValueError for an
        unknown `sync` level."""
        if sync not in SYNC_LEVELS:
            raise ValueError(f"sync must be one of {', '.join(SYNC_LEVELS)}; got {sync!r}")
        self.path = Path(path)
        _private_file(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot open the database: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={SYNC_LEVELS[sync]}")
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # the thread does it
            self._check_pages()
            self._db.executescript(_SCHEMA)
            self._upgrade()
            self._claim(owner, network_id)
            self.verify()
        except sqlite3.Error as exc:
            self._db.close()
            raise StorageError(f"{self.path}: unreadable database ({exc})") from exc
        except StorageError:
            self._db.close()
            raise
        self._blocks: list[tuple[int, int, bytes, bytes, bytes]] = []
        self._records: dict[str, tuple[int, bytes]] = {}
        self._votes: dict[int, bytes] = {}
        self._votes_h = -1
        """The h of the last `votes` head written: rows at or below it are gone."""
        self.commits = 0
        self.blocks_written = 0
        self.checkpointer = _Checkpointer(self.path, SYNC_LEVELS[sync])
        self.inline_checkpoints = 0
        """WAL checkpoints the node's connection ran itself (the WAL outgrew WAL_LIMIT_BYTES)."""

    def _check_pages(self) -> None:
        """SQLite's own consistency check: a truncated or overwritten file fails here."""
        rows = [str(r[0]) for r in self._db.execute("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            raise StorageError(f"{self.path}: damaged database ({'; '.join(rows[:3])})")

    def _upgrade(self) -> None:
        """Databases written before checksums existed: add the column and sum their rows
        once, after checking each block against the digest stored beside it."""
        for table in ("blocks", "records"):
            cols = [r[1] for r in self._db.execute(f"PRAGMA table_info({table})")]
            if "sum" not in cols:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN sum BLOB")
        legacy = self._db.execute(
            "SELECT seq, view, digest, data FROM blocks WHERE sum IS NULL").fetchall()
        for seq, view, digest, data in legacy:
            cb = self._decode(bytes(data), m.CommittedBatch)
            assert type(cb) is m.CommittedBatch
            if cb.seq != seq or cb.batch.digest() != bytes(digest):
                raise StorageError(f"{self.path}: block {seq} does not match its digest")
            self._db.execute("UPDATE blocks SET sum = ? WHERE seq = ?",
                             (block_sum(seq, view, bytes(digest), bytes(data)), seq))
        for key, seq, data in self._db.execute(
                "SELECT key, seq, data FROM records WHERE sum IS NULL").fetchall():
            self._db.execute("UPDATE records SET sum = ? WHERE key = ?",
                             (record_sum(key, seq, bytes(data)), key))

    def verify(self) -> None:
        """Check every row's checksum (raises StorageError naming the first bad row)."""
        last = 0
        while True:
            rows = self._db.execute(
                "SELECT seq, view, digest, data, sum FROM blocks WHERE seq > ? ORDER BY seq "
                "LIMIT ?", (last, _VERIFY_PAGE)).fetchall()
            if not rows:
                break
            for row in rows:
                self._check_block(*row)
            last = rows[-1][0]
        for key, seq, data, checksum in self._db.execute(
                "SELECT key, seq, data, sum FROM records"):
            self._check_record(key, seq, data, checksum)
        for seq, data, checksum in self._db.execute("SELECT seq, data, sum FROM votes"):
            self._check_record("vote", seq, data, checksum)

    def _check_block(self, seq: int, view: int, digest: bytes, data: bytes,
                     checksum: bytes | None) -> bytes:
        data, digest, checksum = _blob(data), _blob(digest), _blob(checksum)
        if (not isinstance(seq, int) or not isinstance(view, int)
                or block_sum(seq, view, digest, data) != checksum):
            raise StorageError(f"{self.path}: block {seq} fails its checksum (damaged on disk)")
        return data

    def _check_record(self, key: str, seq: int, data: bytes, checksum: bytes | None) -> bytes:
        data, checksum = _blob(data), _blob(checksum)
        if not isinstance(seq, int) or record_sum(str(key), seq, data) != checksum:
            raise StorageError(f"{self.path}: {key} record fails its checksum (damaged on disk)")
        return data

    def _claim(self, owner: str, network_id: str) -> None:
        rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not rows:
            self._db.executemany("INSERT INTO meta VALUES (?, ?)",
                                 [("owner", owner), ("network", network_id)])
            return
        if rows.get("owner") != owner or rows.get("network") != network_id:
            self._db.close()
            raise ForeignStorage(
                f"{self.path} belongs to node {rows.get('owner')!r} of network "
                f"{rows.get('network')!r}, not {owner!r} of {network_id!r}")

    # -- writing ------------------------------------------------------------------------------

    def stage(self, key: str, data: bytes, digest: bytes = b"", seq: int = 0) -> None:
        """Hold one Persist record until the next `commit()`. Raises StorageError for an
        unknown key or a record that does not decode. A block record's batch `digest`, when
        the caller has it (the replica that executed the batch does), spares decoding the
        whole record: only its sequence number and view are read. `seq`: a `vote` record's
        seq, and the h of a `votes` head."""
        if key == "block":
            if digest and len(data) >= _BLOCK_HEAD.size and data[0] == m.CommittedBatch.TAG:
                _, seq, view = _BLOCK_HEAD.unpack_from(data)
            else:
                cb = self._decode(data, m.CommittedBatch)
                assert type(cb) is m.CommittedBatch
                seq, view, digest = cb.seq, cb.view, cb.batch.digest()
            self._blocks.append((seq, view, digest, data, block_sum(seq, view, digest, data)))
        elif key in ("checkpoint", "stable"):
            sd = self._decode(data, m.StateData)
            assert type(sd) is m.StateData
            self._records[key] = (sd.stable_seq, data)
        elif key == "votes":
            self._records[key] = (seq, data)
        elif key == "vote":
            self._votes[seq] = data
        else:
            raise StorageError(f"unknown persist key {key!r}")

    @property
    def dirty(self) -> bool:
        return bool(self._blocks or self._records or self._votes)

    def commit(self) -> None:
        """Write everything staged in one transaction (a no-op when nothing is staged)."""
        if not self._blocks and not self._records and not self._votes:
            return
        blocks, self._blocks = self._blocks, []
        records, self._records = self._records, {}
        votes, self._votes = self._votes, {}
        db = self._db
        votes_h = self._votes_h
        db.execute("BEGIN")
        try:
            if blocks:
                db.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?, ?)", blocks)
            for key, (seq, data) in records.items():
                db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)",
                           (key, seq, data, record_sum(key, seq, data)))
            if votes:
                db.executemany("INSERT OR REPLACE INTO votes VALUES (?, ?, ?)",
                               [(seq, data, record_sum("vote", seq, data))
                                for seq, data in votes.items()])
            head = records.get("votes")
            if head is not None and head[0] != votes_h:
                db.execute("DELETE FROM votes WHERE seq <= ?", (head[0],))
                votes_h = head[0]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._votes_h = votes_h
        self.commits += 1
        self.blocks_written += len(blocks)
        if self.commits % CHECKPOINT_EVERY == 0:
            self.checkpointer.request()
            try:
                wal = os.path.getsize(f"{self.path}-wal")
            except OSError:
                wal = 0
            if wal > WAL_LIMIT_BYTES:
                db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                self.inline_checkpoints += 1

    # -- reading ------------------------------------------------------------------------------

    def load(self) -> DurableRecords:
        """The records a restart needs: votes, the stable checkpoint, the blocks after it
        (each checked against its checksum; StorageError if one fails)."""
        records = {k: (s, self._check_record(k, s, d, c)) for k, s, d, c in self._query(
            "SELECT key, seq, data, sum FROM records")}
        checkpoint_seq, checkpoint = records.get("checkpoint", (0, None))
        h, votes = records.get("votes", (0, None))
        if votes is not None:
            rows = [(seq, self._check_record("vote", seq, data, checksum)) for seq, data, checksum
                    in self._query("SELECT seq, data, sum FROM votes WHERE seq > ? ORDER BY seq",
                                   (h,))]
            try:
                votes = durable.join_votes(votes, rows)
            except ValueError as exc:
                raise StorageError(f"{self.path}: {exc}") from exc
        blocks = [self._check_block(*row) for row in self._query(
            "SELECT seq, view, digest, data, sum FROM blocks WHERE seq > ? ORDER BY seq",
            (checkpoint_seq,))]
        return DurableRecords(votes, checkpoint, checkpoint_seq, blocks,
                              records.get("stable", (0, None))[1])

    def blocks(self, start: int = 1, limit: int = 100) -> Iterator[tuple[int, bytes]]:
        """Stored blocks with seq >= `start`, in order, at most `limit` (each checked against
        its checksum: StorageError rather than a damaged block)."""
        rows = self._query("SELECT seq, view, digest, data, sum FROM blocks WHERE seq >= ? "
                           "ORDER BY seq LIMIT ?", (start, limit))
        yield from ((row[0], self._check_block(*row)) for row in rows)

    def digests(self, start: int = 1, limit: int = 10_000) -> list[tuple[int, bytes]]:
        """(seq, batch digest) of stored blocks with seq >= `start`, in order, at most `limit`
        (what replicas compare to check agreement, without decoding blocks; each row checked
        against its checksum)."""
        rows = self._query("SELECT seq, view, digest, data, sum FROM blocks WHERE seq >= ? "
                           "ORDER BY seq LIMIT ?", (start, limit))
        out = []
        for row in rows:
            self._check_block(*row)
            out.append((row[0], bytes(row[2])))
        return out

    def missing(self, upto: int) -> list[tuple[int, int]]:
        """The ranges [from, to] of seqs in 1..`upto` with no stored block: the history a node
        skipped when it caught up by state transfer (its `/ledger` says so)."""
        gaps = [(int(a), int(b)) for a, b in self._query(
            "SELECT prev + 1, seq - 1 FROM (SELECT seq, LAG(seq, 1, 0) OVER (ORDER BY seq) "
            "AS prev FROM blocks WHERE seq <= ?) WHERE seq > prev + 1", (upto,))]
        top = int(self._query("SELECT MAX(seq) FROM blocks WHERE seq <= ?", (upto,))[0][0] or 0)
        if top < upto:
            gaps.append((top + 1, upto))
        return gaps

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: unreadable database ({exc})") from exc

    def last_block_seq(self) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM blocks").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        """Commit anything staged and close the database."""
        self.commit()
        self.checkpointer.stop()
        self._db.close()

    def abandon(self) -> None:
        """Close without committing anything staged (the store is being discarded)."""
        self._blocks, self._records, self._votes = [], {}, {}
        self.checkpointer.stop()
        self._db.close()

    @staticmethod
    def discard(path: str | Path) -> Path | None:
        """Move a damaged database (and its -wal/-shm files) aside, so the node starts empty
        and rebuilds by state transfer; returns where the main file went (None if absent)."""
        path = Path(path)
        kept: Path | None = None
        n = 0
        while any(Path(f"{path}.discarded-{n}{sfx}").exists() for sfx in ("", "-wal", "-shm")):
            n += 1
        for sfx in ("", "-wal", "-shm"):
            src = Path(f"{path}{sfx}")
            if src.exists():
                dst = Path(f"{path}.discarded-{n}{sfx}")
                src.rename(dst)
                kept = dst if sfx == "" else kept
        return kept

    @staticmethod
    def _decode(data: bytes, cls: type[m.Message]) -> m.Message:
        try:
            msg = m.decode(data)
        except m.DecodeError as exc:
            raise StorageError(f"cannot decode a {cls.__name__} record: {exc}") from exc
        if type(msg) is not cls:
            raise StorageError(f"expected a {cls.__name__} record, got {type(msg).__name__}")
        return msg


class _Checkpointer:
    """A thread with its own connection that runs a PASSIVE WAL checkpoint whenever asked
    (see the module docstring). Its failures are counted, never raised: the node's
    connection falls back to checkpointing itself when the WAL grows too large."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.path = path
        self.synchronous = synchronous
        self.checkpoints = 0
        self.failures = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"wal-checkpoint {path.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def request(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error:
            self.failures += 1
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error:
                    self.failures += 1
        finally:
            db.close()
