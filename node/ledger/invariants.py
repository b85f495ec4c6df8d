"""The invariants of docs/ledger.md#invariants, checked from outside the rules, and a wrapper
that checks them on a replica after every block.

Why this exists: the rules (rules.py) are written to keep these properties; this module states
them independently, reading only the ledger's state and logs, so a bug in a rule shows up as a
violation instead of as a plausible ledger. `InvariantChecker.after_block` is incremental over
the logs (it replays new events through the unit lifecycle and checks new audit entries) and
checks the table rows the block wrote (all rows at first and after a restore);
`CheckedLedger` runs it after every `execute` and records each block's state
digest by height in a registry shared by all replicas (invariant 1: honest replicas agree).

Cost: O(what the block wrote) per block, plus O(state) after a restore; for tests and runs
with `medbft.apps.CHECK_INVARIANTS`, not for production.
"""

from __future__ import annotations

import hashlib
from typing import Any

from node.ledger.ledger import Ledger
from node.ledger.partners import MIN_COHORT_FLOOR
from node.ledger.state import _ENC
from node.ledger.txs import MAX_VECTOR, PHI_FIELDS
from node.messages import Request
from node.statemachine import Accept, BlockInfo

__all__ = ["CheckedLedger", "InvariantChecker", "check_ledger"]

DISPOSITIONS = frozenset({"active", "in_transit", "in_progress", "dispensed", "administered",
                          "destroyed", "returned"})
EN_ROUTE = frozenset({"in_transit", "returned"})
#: event kind -> (dispositions it may start from, disposition it leads to); invariant 3
LIFECYCLE: dict[str, tuple[frozenset[str | None], str]] = {
    "EPCIS_COMMISSION": (frozenset({None}), "active"),
    "EPCIS_SHIP": (frozenset({"active", "in_progress"}), "in_transit"),
    "EPCIS_RECEIVE": (frozenset({"in_transit", "returned"}), "in_progress"),
    "EPCIS_RETURN": (frozenset({"in_progress"}), "returned"),
    "EPCIS_DISPENSE": (frozenset({"in_progress"}), "dispensed"),
    "IMMUNIZATION_ADMINISTER": (frozenset({"in_progress", "dispensed"}), "administered"),
    "EPCIS_DESTROY": (frozenset({"active", "in_progress"}), "destroyed"),
}
MOVES = frozenset({"EPCIS_SHIP", "EPCIS_DISPENSE", "IMMUNIZATION_ADMINISTER"})
#: Events that leave a unit's disposition as it was (packing and unpacking a case).
IN_PLACE = frozenset({"EPCIS_AGGREGATE", "EPCIS_DISAGGREGATE"})
PARTNER_TABLES = frozenset({"claims", "research", "cases", "case_of", "aefi", "units"})


class InvariantChecker:
    """Checks one ledger after each block; `violations` accumulates what broke."""

    def __init__(self, ledger: Ledger, name: str = "") -> None:
        self.ledger = ledger
        self.name = name
        self.violations: list[str] = []
        self.reset()

    def reset(self) -> None:
        """Forget what was replayed (after a restore the logs are re-checked from the start)."""
        self.replayed: dict[str, str] = {}
        self.events_seen = 0
        self.audit_seen = 0
        self.audit_head = bytes(32)
        self.full_scan = True
        self.decisions_logged = 0
        self.rejections_logged = 0
        self.ledger.state.dirty = set()

    def _fail(self, message: str) -> None:
        height = len(self.ledger.state.block_hashes)
        self.violations.append(f"{self.name}@{height}: {message}")

    def after_block(self) -> None:
        """Check the block just executed: new log entries, and the rows it wrote (every row
        on the first call and after a restore)."""
        st = self.ledger.state
        if st.dirty is None:  # the state was replaced (restore) behind our back
            self.reset()
        rows = None if self.full_scan else st.dirty
        self._check_events()
        self._check_audit()
        self._check_units(rows)
        self._check_partners(rows)
        self._check_no_phi(rows)
        self.full_scan = False
        st.dirty = set()

    # -- invariants 2, 3, 4: custody, lifecycle, quarantine and recall ---------------------

    def _check_events(self) -> None:
        st = self.ledger.state
        entries = st.events.entries
        for n in range(self.events_seen, len(entries)):
            height, index, kind, _org, epcs, _, _ = entries[n]
            if kind in IN_PLACE:
                for epc in epcs:
                    if self.replayed.get(epc) not in ("active", "in_progress"):
                        self._fail(f"lifecycle: {kind} of {epc} while "
                                   f"{self.replayed.get(epc)}")
                continue
            starts, leads_to = LIFECYCLE[kind]
            for epc in epcs:
                now = self.replayed.get(epc)
                if now not in starts:
                    self._fail(f"lifecycle: {kind} of {epc} from {now}")
                self.replayed[epc] = leads_to
                if kind in MOVES:
                    self._check_not_blocked(epc, (height, index), kind)
        self.events_seen = len(entries)

    def _check_not_blocked(self, epc: str, pos: tuple[int, int], kind: str) -> None:
        st = self.ledger.state
        lot = st.tables["units"][epc][1]
        recall_id = st.tables["lots"][lot][3]
        if recall_id and tuple(st.tables["recalls"][recall_id][4]) < pos:
            self._fail(f"recall: {kind} of {epc} after recall {recall_id}")
        for key in ("epc:" + epc, "lot:" + lot):
            flag = st.tables["suspects"].get(key)
            if flag is not None and tuple(flag[2]) < pos:
                self._fail(f"quarantine: {kind} of {epc} while {key} is flagged")

    def _check_units(self, rows: set[tuple[str, str]] | None) -> None:
        st, orgs = self.ledger.state, self.ledger.genesis.orgs
        units = st.tables["units"]
        if len(units) != len(self.replayed):
            self._fail(f"custody: {len(units)} units but {len(self.replayed)} commissioned")
        keys = units if rows is None else sorted(k for t, k in rows if t == "units")
        for epc in keys:
            _, lot, custodian, disposition, dest = units[epc]
            if custodian not in orgs or disposition not in DISPOSITIONS:
                self._fail(f"custody: {epc} has custodian {custodian!r}, {disposition!r}")
            if (disposition in EN_ROUTE) != (dest is not None):
                self._fail(f"custody: {epc} is {disposition} with destination {dest!r}")
            if self.replayed.get(epc) != disposition:
                self._fail(f"lifecycle: {epc} is {disposition}, its events say "
                           f"{self.replayed.get(epc)}")
            if lot not in st.tables["lots"]:
                self._fail(f"custody: {epc} names unknown lot {lot}")

    # -- invariants 5, 7: consent behind every permit; append-only, one entry per decision -

    def _check_audit(self) -> None:
        st = self.ledger.state
        entries = st.audit.entries
        head = self.audit_head
        for n in range(self.audit_seen, len(entries)):
            entry = entries[n]
            head = hashlib.sha256(head + _ENC.encode(entry).encode()).digest()
            self.decisions_logged += entry[3] == "ACCESS_DECISION"
            self.rejections_logged += entry[5] == "rejected"
            if entry[3] == "ACCESS_DECISION" and entry[5] == "permit":
                self._check_permit(entry)
            if entry[3] == "COUNTERFEIT_SUSPECTED" and not any(
                    tuple(v[3]) == (entry[0], entry[1]) for v in st.tables["incidents"].values()):
                self._fail(f"counterfeit: audit entry {n} has no incident")
        if head != st.audit.head:
            self._fail("audit: the hash chain does not extend the one seen before")
        self.audit_head, self.audit_seen = head, len(entries)
        decisions = sum(st.stats["decisions"].values())
        if decisions != self.decisions_logged:
            self._fail(f"audit: {decisions} access decisions but {self.decisions_logged} "
                       f"entries")
        if sum(st.stats["rejected"].values()) != self.rejections_logged:
            self._fail("audit: a rejected transaction has no (or two) audit entries")

    def _check_permit(self, entry: tuple[Any, ...]) -> None:
        height, index, actor, _, pseudonym, _, rule = entry
        g, st = self.ledger.genesis, self.ledger.state
        party = g.parties.get(actor)
        owner, custodian = g.pseudonyms.get(pseudonym, (None, None))
        ok = False
        if party is None:
            ok = False
        elif rule == "own":
            ok = owner == actor
        elif rule == "custodian":
            ok = party.org == custodian or any(
                r[0] == pseudonym and r[1] == party.org for r in st.tables["records"].values())
        elif rule == "regulator-metadata":
            ok = party.role == "inspector"
        elif rule.startswith("break-glass:"):
            review = st.tables["reviews"].get(rule[12:])
            ok = party.role == "clinician" and review is not None and review[0] == actor
        elif rule.startswith("consent:"):
            ok = self._consent_allows(rule[8:], pseudonym, party.id, party.org, party.role,
                                      (height, index))
        if not ok:
            self._fail(f"consent: permit by rule {rule!r} for {actor} at {height}.{index}")

    def _consent_allows(self, cid: str, pseudonym: str, actor: str, org: str, role: str,
                        pos: tuple[int, int]) -> bool:
        st = self.ledger.state
        row = st.tables["consents"].get(cid)
        if row is None or row[0] != pseudonym or row[1] not in (actor, org, "role:" + role):
            return False
        if not tuple(row[7]) < pos or (row[8] is not None and tuple(row[8]) < pos):
            return False
        now = self.ledger.genesis.epoch_ns + st.blocks.entries[pos[0] - 1][2] \
            if pos[0] <= len(st.blocks.entries) else None
        return now is None or row[5] <= now < row[6]

    # -- invariants 8-11: claims, research, cases, adverse-event signals (issue 16) ---------

    def _check_partners(self, rows: set[tuple[str, str]] | None) -> None:
        tables = self.ledger.state.tables
        keys = sorted((t, k) for t in PARTNER_TABLES for k in tables[t]) if rows is None \
            else sorted((t, k) for t, k in rows if t in PARTNER_TABLES)
        for table, key in keys:
            row = tables[table].get(key)
            if row is None:
                continue
            if table == "claims":
                self._check_claim(key, row)
            elif table == "research":
                self._check_research(key, row)
            elif table in ("cases", "case_of"):
                self._check_case(row[0] if table == "case_of" else key)
            elif table == "units":
                if key in tables["case_of"]:
                    self._check_case(tables["case_of"][key][0])
            elif row[1] in ("severe", "death") and not any(
                    s[0] == row[0] and tuple(s[3]) <= tuple(row[4])
                    for s in tables["signals"].values()):
                self._fail(f"signal: serious report {key} on {row[0]} opened no review")

    def _check_claim(self, claim_id: str, row: tuple[Any, ...]) -> None:
        """Invariant 8: a claim bills only its submitter's records and dispensations of that
        patient, and is paid only under a payment consent in force at the payment."""
        st = self.ledger.state
        patient, _, org, payer = row[:4]
        for record_id in row[4]:
            record = st.tables["records"].get(record_id)
            if record is None or record[0] != patient or record[1] != org:
                self._fail(f"claim: {claim_id} bills record {record_id} it does not hold")
        if row[11] == "approved" and not self._consent_covers(
                row[14], patient, (payer, "role:insurer"), "disclose", "HPAYMT",
                tuple(row[15])):
            self._fail(f"claim: {claim_id} paid without a payment consent in force")

    def _check_research(self, query_id: str, row: tuple[Any, ...]) -> None:
        """Invariant 9: a research answer is released only over at least the study's minimum
        cohort, for the study's own researcher."""
        study = self.ledger.state.tables["studies"].get(row[0])
        if study is None or study[0] != row[1]:
            self._fail(f"research: {query_id} answered outside an approved study")
        elif row[6] is not None and (row[4] < study[5] or row[5] != study[5]
                                     or study[5] < MIN_COHORT_FLOOR):
            self._fail(f"research: {query_id} released below the cohort minimum")

    def _check_case(self, parent: str) -> None:
        """Invariant 10: the units of a packed case are all in it and move together (one
        custodian, one disposition, one destination)."""
        tables = self.ledger.state.tables
        case = tables["cases"].get(parent)
        if case is None:
            self._fail(f"case: a unit is packed in unknown case {parent}")
            return
        if case[2] != "packed":
            return
        places = {tuple(tables["units"][e][2:]) for e in case[1] if e in tables["units"]}
        if any(tables["case_of"].get(e) != (parent,) for e in case[1]) or len(places) != 1:
            self._fail(f"case: the units of {parent} do not move together")

    def _consent_covers(self, cid: str | None, pseudonym: str, grantees: tuple[str, ...],
                        action: str, purpose: str, pos: tuple[int, int]) -> bool:
        st = self.ledger.state
        row = st.tables["consents"].get(cid or "")
        if row is None or row[0] != pseudonym or row[1] not in grantees \
                or action not in row[2] or purpose not in row[3]:
            return False
        if not tuple(row[7]) < pos or (row[8] is not None and tuple(row[8]) < pos):
            return False
        if pos[0] > len(st.blocks.entries):
            return True  # the block is being built: its time is checked by the rule
        now = self.ledger.genesis.epoch_ns + st.blocks.entries[pos[0] - 1][2]
        return bool(row[5] <= now < row[6])

    # -- invariant 6: nothing personal in the state ----------------------------------------

    def _check_no_phi(self, rows: set[tuple[str, str]] | None) -> None:
        tables = self.ledger.state.tables
        keys = ((t, k) for t in tables for k in tables[t]) if rows is None else sorted(rows)
        for table, key in keys:
            problem = _phi_problem(tables[table].get(key))
            if problem:
                self._fail(f"phi: {table}[{key}] {problem}")


def _phi_problem(value: Any) -> str | None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if str(key).lower().replace("_", "") in PHI_FIELDS:
                return f"has field {key!r}"
            found = _phi_problem(inner)
            if found:
                return found
    elif isinstance(value, tuple | list):
        if len(value) > MAX_VECTOR and all(isinstance(v, int | float) for v in value):
            return "holds a numeric vector"
        for inner in value:
            found = _phi_problem(inner)
            if found:
                return found
    return None


def check_ledger(ledger: Ledger) -> list[str]:
    """All invariants on a ledger from scratch, plus its chain integrity."""
    from node.ledger.queries import verify_chain

    checker = InvariantChecker(ledger)
    checker.after_block()
    return checker.violations + verify_chain(ledger)["problems"]


class CheckedLedger:
    """A Ledger that checks the invariants after every block (for tests and simulated runs).

    `registry[height][name]` collects each replica's state digest after that block, so a test
    can assert that every honest replica computed the same digest at every height.
    """

    def __init__(self, ledger: Ledger, name: str,
                 registry: dict[int, dict[str, str]] | None = None) -> None:
        self.ledger = ledger
        self.name = name
        self.checker = InvariantChecker(ledger, name)
        self.registry = registry if registry is not None else {}

    @property
    def violations(self) -> list[str]:
        return self.checker.violations

    def admissible(self, op: bytes) -> str | None:
        return self.ledger.admissible(op)

    def execute(self, requests: list[Request], block: BlockInfo) -> list[bytes]:
        results = self.ledger.execute(requests, block)
        self.checker.after_block()
        header = self.ledger.state.blocks.entries[-1]
        self.registry.setdefault(header[0], {})[self.name] = header[5]
        return results

    def digest(self) -> bytes:
        return self.ledger.digest()

    def snapshot(self) -> bytes:
        return self.ledger.snapshot()

    def checkpoint(self, seq: int) -> None:
        self.ledger.checkpoint(seq)

    def snapshot_at(self, seq: int) -> bytes:
        return self.ledger.snapshot_at(seq)

    def release(self, seq: int) -> None:
        self.ledger.release(seq)

    def restore(self, snapshot: bytes, accept: Accept | None = None) -> None:
        self.ledger.restore(snapshot, accept)
        self.checker.reset()
        self.checker.after_block()
