"""The ledger's replicated state: keyed tables, three hash-chained logs, derived indexes, and
a state digest that is maintained per write instead of recomputed per block.

Why this exists: blocks carry a state digest, and a block is one PBFT batch (often a single
transaction), so hashing the whole state per block would make every transaction O(state).
Instead the tables are summed as a multiset hash: each row contributes
H(table, key, value) mod 2^512 (AdHash, Bellare & Micciancio 1997), updated in O(1) on every
write and independent of history; the append-only logs (supply-chain events, audit entries,
blocks) are hash chains whose heads are part of the digest. Equal states give equal digests.
A checkpoint is remembered, not serialised (`mark`): the logs are append-only, so their
lengths then suffice, the stats are small and copied, and each table row's old value is kept
on its first write after the mark (node.statemachine.Versions). `to_json_at` builds the
canonical snapshot (sorted, compact JSON) of that state only when it is asked for.

Derived indexes (per-unit trace, units per lot, live consents per patient, audit entries per patient
and actor, patients per lot) are functions of the hashed data, rebuilt on restore, and never
hashed or snapshotted.

Must not know: the rules. Rows are tuples of JSON values; positions are (height, index).
"""

from __future__ import annotations

import hashlib
import json
import operator
import typing
from collections import OrderedDict, defaultdict
from typing import Any

from node.ledger.canonical import CanonicalJson
from node.statemachine import Versions

__all__ = ["TABLES", "State", "freeze"]

TABLES: tuple[str, ...] = (
    "acks", "aefi", "biometrics", "consents", "gtins", "incidents", "lots", "org_status",
    "recalls", "records", "reviews", "suspects", "units",
)
#: Tables issue 16 added (claims, research, aggregation, cold chain, adverse-event signals).
#: A snapshot lists them only once they hold a row, so a ledger that never uses them keeps
#: the snapshot bytes it had before they existed.
LATER_TABLES: tuple[str, ...] = (
    "case_of", "cases", "claimed", "claims", "excursions", "lot_storage", "research",
    "signals", "studies",
)
_MASK = (1 << 512) - 1
_ENC = CanonicalJson()
_ZERO = bytes(32)
SNAPSHOT_VERSION = 1


def _row_hash(table: str, key: Any, value: Any) -> int:
    data = _ENC.encode((table, key, value)).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=64).digest(), "big")


#: How many row terms `_row_term` remembers (oldest forgotten first).
ROW_TERMS_KEPT = 8192
# (table, key, row) -> _row_hash(table, key, row) for rows made of strings and None only (a
# unit's, a lot's): for those, equal keys have equal canonical JSON (a str equals only a str
# of the same characters, None only None), so the term is a pure function of the key and
# remembering it changes speed, never results. In a simulated run (one process) every
# replica writes the same rows, so this hashes each once instead of n times. Rows holding
# numbers are not remembered: 1 == 1.0 == True in Python, not in JSON.
_row_terms: OrderedDict[tuple[str, str, tuple[Any, ...]], int] = OrderedDict()
_STR_OR_NONE = frozenset({str, type(None)})


def _row_term(table: str, key: Any, value: Any) -> int:
    """_row_hash(table, key, value), remembered for rows of strings and None. (Key and value
    are `Any`: compiled, a typed argument is checked, and anything reaches here as it would
    in Python.)"""
    # (the item check: every item's type is exactly str or NoneType, done in C)
    if (type(value) is not tuple or type(key) is not str
            or not _STR_OR_NONE.issuperset(map(type, value))):
        return _row_hash(table, key, value)
    memo = (table, key, value)
    term = _row_terms.get(memo)
    if term is None:
        term = _row_hash(table, key, value)
        if len(_row_terms) >= ROW_TERMS_KEPT:
            _row_terms.popitem(last=False)
        _row_terms[memo] = term
    return term


#: How many chain links `_link` remembers (oldest forgotten first).
LINKS_KEPT = 8192
# (head, entry) -> H(head || canonical entry), for entries `_plain` accepts (for those,
# equal keys have equal canonical JSON): a pure function of the key, so remembering it
# changes speed, never results. In a simulated run every replica appends the same audit and
# event entries to chains with the same heads, so each link is computed once, not n times.
_links: OrderedDict[tuple[bytes, tuple[Any, ...]], bytes] = OrderedDict()
_PLAIN_LEAVES = frozenset({str, int, type(None)})


def _plain(value: tuple[Any, ...]) -> bool:
    """Whether `value` holds only str, int (not bool), None and tuples of those: the values
    whose Python equality is equality of their canonical JSON (1 == 1.0 == True otherwise)."""
    types = set(map(type, value))
    if tuple in types:
        types.discard(tuple)
        for item in value:
            if type(item) is tuple and not _plain(item):
                return False
    return _PLAIN_LEAVES.issuperset(types)


def _link(head: bytes, entry: tuple[Any, ...]) -> bytes:
    """H(head || canonical entry): the next head of a hash chain."""
    if type(entry) is not tuple or not _plain(entry):
        return hashlib.sha256(head + _ENC.encode(entry).encode()).digest()
    key = (head, entry)
    link = _links.get(key)
    if link is None:
        link = hashlib.sha256(head + _ENC.encode(entry).encode()).digest()
        if len(_links) >= LINKS_KEPT:
            _links.popitem(last=False)
        _links[key] = link
    return link


#: How many inputs `block_sha256` remembers (oldest forgotten first; each a few hundred bytes).
BLOCK_HASHES_KEPT = 8192
# data -> sha256(data).digest(), for the three hashes of each block (its state digest, its
# hash, its link in the block chain): a pure function of the bytes, so remembering it
# changes speed, never results. Every replica of a simulated run (and the harm judge's
# replay) hashes the same bytes for the same block, so each is computed once, not n times.
_block_hashes: OrderedDict[bytes, bytes] = OrderedDict()


def block_sha256(data: bytes) -> bytes:
    """hashlib.sha256(data).digest(), remembered (see `_block_hashes`)."""
    digest = _block_hashes.get(data)
    if digest is None:
        digest = hashlib.sha256(data).digest()
        if len(_block_hashes) >= BLOCK_HASHES_KEPT:
            _block_hashes.popitem(last=False)
        _block_hashes[data] = digest
    return digest


def _listed(tables: dict[str, dict[str, tuple[Any, ...]]]) -> dict[str, Any]:
    """The tables as a snapshot lists them: sorted rows; a later table only once used."""
    return {t: sorted(rows.items()) for t, rows in tables.items()
            if rows or t not in LATER_TABLES}


def freeze(value: Any) -> Any:
    """JSON lists -> tuples, recursively (rows are immutable tuples)."""
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def _array(value: Any, what: str) -> tuple[Any, ...]:
    """A snapshot's row or entry, frozen: it must be a JSON array (ValueError otherwise)."""
    if not isinstance(value, list):
        raise ValueError(f"malformed ledger snapshot: {what} is not an array")
    return freeze(value)


class _Chain:
    """An append-only log whose head is H(previous head || canonical entry)."""

    __slots__ = ("_encoded", "entries", "head")

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []
        self.head = _ZERO
        # (the entries encoded last time, their canonical JSON text): see `encoded`.
        self._encoded: tuple[list[tuple[Any, ...]], str] = ([], "[]")

    def encoded(self, upto: int) -> str:
        """_ENC.encode(self.entries[:upto]), encoding only what the last call did not.

        A snapshot holds every log entry ever appended, so encoding the logs whole made each
        durable checkpoint cost O(history) (most of a snapshot's time). The log is
        append-only: the text of the entries encoded last time is kept and extended. It is
        reused only while every one of those entries is still the very object it encoded
        (`is`, not `==`: 0 == False encode differently); an entry replaced since (a test's or
        a Byzantine replica's tampering) makes it encode everything again. The price is
        memory: the text kept is as large as the logs' part of a snapshot (kept only once a
        snapshot was taken: in a simulation, by a replica that served a state transfer or whose
        ledger the run saves)."""
        kept, text = self._encoded
        entries = self.entries
        done = len(kept)
        if done > upto or not all(map(operator.is_, kept, entries)):
            kept, text, done = [], "[]", 0
        if done < upto:
            more = _ENC.encode(entries[done:upto])
            text = more if done == 0 else f"{text[:-1]},{more[1:]}"
            kept = entries[:upto]
            self._encoded = (kept, text)
        return text

    def append(self, entry: tuple[Any, ...], head: bytes | None = None) -> int:
        """Append `entry`; `head`, when given, is _link(self.head, entry), known already (a
        journal's replay)."""
        self.head = _link(self.head, entry) if head is None else head
        self.entries.append(entry)
        return len(self.entries) - 1

    def append_encoded(self, entry: tuple[Any, ...], text: str,
                       head: bytes | None = None) -> int:
        """`append`, given `text` = _ENC.encode(entry) (the caller had it already); for
        the block chain: its link is remembered by `block_sha256`. `head`, when given, is
        that link, known already (a replay of the block)."""
        self.head = block_sha256(self.head + text.encode()) if head is None else head
        self.entries.append(entry)
        return len(self.entries) - 1

    def recompute(self, upto: int | None = None) -> bytes:
        head = _ZERO
        for entry in self.entries[:upto]:
            head = hashlib.sha256(head + _ENC.encode(entry).encode()).digest()
        return head


class State:
    """Tables + logs + stats; `put` is the only way a table row changes."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, tuple[Any, ...]]] = {t: {} for t in TABLES + LATER_TABLES}
        # table -> key -> (row, _row_hash(table, key, row)) for the rows `put` wrote: a row's
        # term is subtracted from the digest when it is overwritten or deleted, and looking it
        # up saves encoding and hashing the old row again. Used only while the row stored is
        # that very object (`is`: rows are immutable tuples), so a row changed behind `put`'s
        # back (a test's tampering) is hashed afresh, as before. Never hashed or snapshotted.
        self._row_hashes: dict[str, dict[str, tuple[tuple[Any, ...], int]]] = {
            t: {} for t in self.tables}
        self.acc = 0
        self.events = _Chain()   # (height, index, kind, org, epcs, detail, event_hash)
        self.audit = _Chain()    # (height, index, actor, action, target, decision, rule)
        self.blocks = _Chain()   # block headers, see ledger.Block
        self.block_hashes: list[bytes] = []
        self.stats: dict[str, dict[str, int]] = {"ok": {}, "rejected": {}, "reasons": {},
                                                 "decisions": {}}
        # Rows written since an observer last cleared it (the invariant checker sets a set).
        self.dirty: set[tuple[str, str]] | None = None
        self.versions = Versions()
        # checkpoint seq -> (events, audit, blocks lengths, stats copy) at that checkpoint
        self.marks: dict[int, tuple[int, int, int, dict[str, dict[str, int]]]] = {}
        #: While a list (node.ledger.ledger.Executions records a block): every write, in
        #: order, as (method, arguments) that replay it on an equal state.
        self.journal: list[tuple[Any, tuple[Any, ...]]] | None = None
        self._reset_indexes()

    def _reset_indexes(self) -> None:
        self.trace_idx: dict[str, list[int]] = defaultdict(list)
        self.lot_units: dict[str, list[str]] = defaultdict(list)
        self.lot_patients: dict[str, list[int]] = defaultdict(list)
        self.consents_of: dict[str, list[str]] = defaultdict(list)
        self.audit_of_patient: dict[str, list[int]] = defaultdict(list)
        self.audit_of_actor: dict[str, list[int]] = defaultdict(list)

    # -- writes -------------------------------------------------------------------------------

    def get(self, table: str, key: Any) -> tuple[Any, ...] | None:
        return self.tables[table].get(key)

    def put(self, table: str, key: Any, value: Any, term: int | None = None) -> None:
        """Set (or with None delete) one row, keeping the multiset digest current. `term`,
        when given, is _row_hash(table, key, value), known already (a journal's replay).
        (`key`, a string, and `value`, a tuple or None, are typed `Any` for the compiled
        build, which checks typed arguments: whatever the rules pass is stored as Python
        would store it.)"""
        rows = self.tables[table]
        hashes = self._row_hashes[table]
        old = rows.get(key)
        acc = self.acc
        if self.dirty is not None:
            self.dirty.add((table, key))
        self.versions.note((table, key), old)
        if old is not None:
            known = hashes.get(key)
            if known is None or known[0] is not old:  # stored behind put's back
                known = (old, _row_term(table, key, old))
            acc -= known[1]
        if value is None:
            rows.pop(key, None)
            hashes.pop(key, None)
        else:
            rows[key] = value
            if old is None and table == "units":
                self.lot_units[value[1]].append(key)
            elif table == "consents":  # index live consents only (revoked: value[8] set)
                if value[8] is None and old is None:
                    self.consents_of[value[0]].append(key)
                elif value[8] is not None and old is not None and old[8] is None:
                    self.consents_of[value[0]].remove(key)
            if term is None:
                term = _row_term(table, key, value)
            hashes[key] = (value, term)
            acc += term
        self.acc = acc & _MASK
        if self.journal is not None:
            self.journal.append((State.put, (table, key, value, term)))

    def add_event(self, entry: tuple[Any, ...], head: bytes | None = None) -> int:
        """Append a supply-chain/immunization event; index it by unit (and lot, if given).
        `head`: the events chain's next head, when known already (a journal's replay)."""
        n = self.events.append(entry, head)
        if self.journal is not None:
            self.journal.append((State.add_event, (entry, self.events.head)))
        for epc in entry[4]:
            self.trace_idx[epc].append(n)
        if entry[2] == "IMMUNIZATION_ADMINISTER":
            self.lot_patients[entry[5][1]].append(n)
        return n

    def add_audit(self, entry: tuple[Any, ...], patient: Any,
                  head: bytes | None = None) -> int:
        """Append an audit entry; index it by actor (and patient). `head`: the audit chain's
        next head, when known already (a journal's replay)."""
        n = self.audit.append(entry, head)
        if self.journal is not None:
            self.journal.append((State.add_audit, (entry, patient, self.audit.head)))
        self.audit_of_actor[entry[2]].append(n)
        if patient:
            self.audit_of_patient[patient].append(n)
        return n

    def count(self, group: str, key: Any) -> None:
        if self.journal is not None:
            self.journal.append((State.count, (group, key)))
        table = self.stats[group]
        table[key] = table.get(key, 0) + 1

    # -- digest, snapshot, restore ------------------------------------------------------------

    def digest_parts(self) -> bytes:
        return (self.acc.to_bytes(64, "big") + self.events.head + self.audit.head
                + self.blocks.head)

    def stats_digest(self) -> bytes:
        """Digest of the stats (small: counts by kind, reason and decision)."""
        return hashlib.sha256(_ENC.encode(self.stats).encode()).digest()

    def to_json(self) -> str:
        """The canonical snapshot text (sorted keys and rows, no whitespace)."""
        return self._snapshot_text(self.tables, len(self.events.entries),
                                   len(self.audit.entries), len(self.blocks.entries),
                                   self.stats)

    def _snapshot_text(self, tables: dict[str, dict[str, tuple[Any, ...]]], events: int,
                       audit: int, blocks: int, stats: dict[str, dict[str, int]]) -> str:
        """_ENC.encode of the snapshot object {"v", "tables", "events", "audit", "blocks",
        "stats"} with the logs cut at the given lengths, written out in its sorted key order
        so that each log's text comes from `_Chain.encoded` (tests compare the two)."""
        return (f'{{"audit":{self.audit.encoded(audit)},"blocks":{self.blocks.encoded(blocks)},'
                f'"events":{self.events.encoded(events)},"stats":{_ENC.encode(stats)},'
                f'"tables":{_ENC.encode(_listed(tables))},"v":{_ENC.encode(SNAPSHOT_VERSION)}}}')

    def mark(self, seq: int) -> None:
        """Remember the current state as checkpoint `seq`: O(stats), not O(state)."""
        self.versions.mark(seq)
        self.marks[seq] = (len(self.events.entries), len(self.audit.entries),
                           len(self.blocks.entries),
                           {g: dict(c) for g, c in self.stats.items()})

    def to_json_at(self, seq: int) -> str:
        """`to_json()` of the state at remembered checkpoint `seq` (KeyError if forgotten)."""
        events, audit, blocks, stats = self.marks[seq]
        tables: dict[str, dict[str, tuple[Any, ...]]] = dict(self.tables)
        for row, old in self.versions.overlay(seq).items():
            table, key = typing.cast(tuple[str, str], row)
            if tables[table] is self.tables[table]:
                tables[table] = dict(tables[table])
            if old is None:
                tables[table].pop(key, None)
            else:
                tables[table][key] = old
        return self._snapshot_text(tables, events, audit, blocks, stats)

    def release(self, seq: int) -> None:
        """Forget the checkpoints below `seq`."""
        self.versions.release(seq)
        for s in [s for s in self.marks if s < seq]:
            del self.marks[s]

    @classmethod
    def from_json(cls, text: str | bytes) -> State:
        """Rebuild a state (digest and indexes included); raise ValueError if malformed.
        Every row, event, audit entry and block header must be a JSON array, as `to_json`
        writes them (a snapshot can come from a faulty replica: refused here, whole, in
        both builds, before anything reads a row)."""
        try:
            data = json.loads(text)
            if data["v"] != SNAPSHOT_VERSION:
                raise ValueError(f"unknown snapshot version {data['v']!r}")
            st = cls()
            for table, rows in data["tables"].items():
                if table not in st.tables:
                    raise ValueError(f"unknown table {table!r}")
                for key, value in rows:
                    st.put(table, str(key), _array(value, f"a row of {table}"))
            for entry in data["events"]:
                st.add_event(_array(entry, "an event"))
            for entry in data["audit"]:
                e = _array(entry, "an audit entry")
                st.add_audit(e, e[4] if str(e[4]).startswith("pp:") else None)
            for entry in data["blocks"]:
                header = _array(entry, "a block header")
                st.blocks.append(header)
                st.block_hashes.append(bytes.fromhex(header[-1]))
            st.stats = {g: {str(k): int(v) for k, v in data["stats"][g].items()}
                        for g in ("ok", "rejected", "reasons", "decisions")}
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"malformed ledger snapshot: {exc!r}") from exc
        return st
