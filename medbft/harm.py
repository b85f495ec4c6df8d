"""Harm, measured in the application's own terms: what a patient, a pharmacist or a regulator
would call a failure, judged from what clients *accepted* and from the *committed* order.

Why this exists: a BFT tool reports safety (no two honest replicas disagree) and liveness
(requests settle). Neither says whether a recalled dose was given, or whether a clinician read
a record after the patient withdrew consent. This module turns one simulated run into those
answers, for every run, sweep and swarm (`summary.json` `harm`, `expect: {harm: 0}`).

How it judges, never trusting one replica's word:
- the **committed order** is rebuilt from the honest replicas' `execute` events (request keys
  per sequence number) and the transactions the clients submitted, and replayed on a fresh
  `Ledger`: the ledger's own result and position of every committed transaction;
- the **accepted result** of each request is what its client settled on (f+1 matching
  replies);
- arrivals: the simulator reports when each REQUEST reached each replica, in the exact order
  the replica saw them, so "the primary received the revocation first" is a fact, not a guess.

Two classes of harm, because PBFT promises one and not the other (docs/harm.md):
- **harm** (`events`, `by_kind`): what the ledger's rules plus PBFT's safety must prevent while
  at most f replicas are faulty: a dose from a lot after its recall committed, an access
  permitted after its consent's revocation committed, a PHI-bearing transaction accepted, a
  client accepting a result the committed ledger did not give (a false reply), a claim paid
  without a payment consent in force, a research answer released below the cohort minimum.
  The swarm checks these are 0 within f faults.
- **unfair orderings** (`unfair`): a harmful transaction the primary ordered before a
  protective one it had received first (a censored recall, a front-run revocation). PBFT
  orders; it does not order fairly. These are reported with the *window* during which harm
  was possible: from the protective transaction's submission until a client accepted it, and
  whether a view change or the normal case closed it.

Extending it (the registry is keyed by transaction kind, so new kinds plug in):
- `DETECTORS[kind]`: functions `(tx, history) -> [HarmEvent]` judged for each submitted
  transaction of that kind (`"*"`: every kind);
- `GUARDS[kind]`: a protective kind (RECALL_ISSUE, CONSENT_REVOKE, ...): which subjects it
  protects, which later kinds it must stop, and the harm's name. Committed-order violations,
  windows and unfair orderings all follow from it.
`claim-without-consent` (CLAIM_ADJUDICATE) and `research-below-cohort` (RESEARCH_QUERY) are
detectors of this kind: the first reads the replayed consents at the payment's position (not
the consent the claim row names), the second the cohort the replayed ledger counted for the
query against the study's minimum and the floor (not the row's own verdict).

What it must not know: the network or the protocol's internals; it reads the run's events.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from node import messages as m
from node.ledger import Executions, Ledger, LedgerGenesis
from node.ledger.partners import MIN_COHORT_FLOOR, PAYMENT
from node.statemachine import BlockInfo

if TYPE_CHECKING:
    from sim.events import EventLog

__all__ = ["DETECTORS", "GUARDS", "JUDGED_EVENTS", "TAMPER_TARGETS", "Guard",
           "HarmEvent", "History",
           "ObservedTraffic", "RequestArrivals", "Tx", "build_history", "empty_harm",
           "judge_harm", "tamper_ledger"]

#: How many harm events and windows a summary lists in full (all are counted).
LISTED = 20


@dataclass
class Tx:
    """One submitted transaction, as the harm judge sees it."""

    key: str
    client: str
    session: int
    timestamp: int
    op: bytes
    kind: str = "?"
    fields: dict[str, Any] = field(default_factory=dict)
    submit_ns: int = 0
    accepted_ns: int | None = None
    accepted: bytes | None = None
    """The result its client accepted (f+1 matching replies), if it settled."""
    seq: int | None = None
    pos: tuple[int, int] | None = None
    """(height, index) in the committed order (None: never committed)."""
    result: bytes | None = None
    """The committed ledger's result (replayed), or `refused:<rule>` if never admissible."""
    proposer: str | None = None
    """The primary that first proposed the batch it committed in."""
    role: str = ""
    """The signer's role in the genesis."""

    def ok(self, result: bytes | None) -> bool:
        return result is not None and result.startswith((b"ok", b"permit"))


@dataclass
class HarmEvent:
    kind: str
    tx: Tx
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "request": self.tx.key, "tx_kind": self.tx.kind,
                "at_s": _s(self.tx.accepted_ns if self.tx.accepted_ns is not None
                           else self.tx.submit_ns), "detail": self.detail}


#: A guard's subject function: the subjects (lots, units, consents) a transaction touches.
Touch = Callable[[Tx, "History"], set[str]]


@dataclass
class History:
    """Everything the judge knows about one run."""

    txs: dict[str, Tx]
    committed: list[Tx]
    ledger: Ledger
    """The replayed ledger (its final state)."""
    arrivals: dict[tuple[str, str], tuple[int, int]]
    """(replica, request key) -> (ns, order) of its first arrival there."""
    view_entered_ns: list[int]
    """When an honest replica entered a new view (sorted)."""
    admission: dict[str, str | None] = field(default_factory=dict)
    """Request key -> the replayed ledger's admission verdict on its op, as build_history
    computed it (see `admissible`)."""
    _subjects: dict[tuple[Any, str], set[str]] = field(default_factory=dict, init=False,
                                                        repr=False, compare=False)

    def admissible(self, tx: Tx) -> str | None:
        """`ledger.admissible(tx.op)`, read from `admission` when build_history already asked:
        the verdict depends on the op's bytes and the genesis only (never on state), so the
        one computed before the replay is the one the final ledger would give."""
        if tx.key in self.admission:
            return self.admission[tx.key]
        return self.ledger.admissible(tx.op)

    def subjects(self, touch: Touch, tx: Tx) -> set[str]:
        """`touch(tx, self)` (a guard's protects/stops/lifted_by function), remembered per
        function and transaction: they read only the transaction and the final replayed
        ledger, both fixed once the history is built, and the guard passes (violations, then
        windows, per guard) ask the same ones several times. Callers only read the set."""
        memo = (touch, tx.key)
        found = self._subjects.get(memo)
        if found is None:
            found = self._subjects[memo] = touch(tx, self)
        return found

    def lot_of(self, epc: str) -> str | None:
        row = self.ledger.state.tables["units"].get(epc)
        return None if row is None else str(row[1])

    def received_first(self, node: str | None, first: Tx, second: Tx) -> bool:
        """Did `node` receive `first` strictly before `second`?"""
        if node is None:
            return False
        a = self.arrivals.get((node, first.key))
        b = self.arrivals.get((node, second.key))
        return a is not None and (b is None or a < b)


# -- registry ------------------------------------------------------------------------------------

Detector = Callable[[Tx, History], Iterable[HarmEvent]]
DETECTORS: dict[str, list[Detector]] = {}


def detector(*kinds: str) -> Callable[[Detector], Detector]:
    """Register a detector for transactions of `kinds` ("*": every kind)."""
    def register(fn: Detector) -> Detector:
        for kind in kinds:
            DETECTORS.setdefault(kind, []).append(fn)
        return fn
    return register


@dataclass(frozen=True)
class Guard:
    """A protective transaction kind: once it commits, the transactions it `stops` must not
    succeed on a subject it `protects`; while it is pending, they could. `stops` maps a kind
    to (what it is called in a harm's name, the subjects it touches); `lifted_by` maps a kind
    that ends the protection (a quarantine cleared) to the subjects it frees."""

    kind: str
    after: str
    """The harm's name ends with it: `dose-after-recall`."""
    window: str
    protects: Callable[[Tx, History], set[str]]
    stops: dict[str, tuple[str, Callable[[Tx, History], set[str]]]]
    lifted_by: dict[str, Callable[[Tx, History], set[str]]] = field(default_factory=dict)

    def harm(self, kind: str) -> str:
        return f"{self.stops[kind][0]}-after-{self.after}"


def _dose_lots(tx: Tx, h: History) -> set[str]:
    epcs = tx.fields.get("epcs") or [tx.fields.get("epc")]
    return {lot for epc in epcs if isinstance(epc, str) for lot in [h.lot_of(epc)] if lot}


def _dose_subjects(tx: Tx, h: History) -> set[str]:
    epcs = [e for e in (tx.fields.get("epcs") or [tx.fields.get("epc")]) if isinstance(e, str)]
    return set(epcs) | _dose_lots(tx, h)


def _consent_used(tx: Tx, h: History) -> set[str]:
    result = tx.result if tx.result is not None else tx.accepted
    if result is None or not result.startswith(b"permit:consent:"):
        return set()
    return {result[len(b"permit:consent:"):].decode(errors="replace")}


def _suspect_subject(tx: Tx, h: History) -> set[str]:
    return {str(v) for v in (tx.fields.get("epc"), tx.fields.get("lot")) if v}


#: Invariant 4 (docs/ledger.md): no unit of a recalled lot, or a quarantined unit or lot, is
#: shipped, dispensed or administered after the recall or the flag.
_MOVES: dict[str, tuple[str, Touch]] = {
    "EPCIS_DISPENSE": ("dose", _dose_lots), "IMMUNIZATION_ADMINISTER": ("dose", _dose_lots),
    "EPCIS_SHIP": ("shipment", _dose_lots)}
_MOVES_OF: dict[str, tuple[str, Touch]] = {k: (what, _dose_subjects)
                                           for k, (what, _) in _MOVES.items()}

GUARDS: dict[str, Guard] = {g.kind: g for g in (
    Guard("RECALL_ISSUE", "recall", "recall-pending",
          lambda tx, h: {str(lot) for lot in tx.fields.get("lots", ())}, _MOVES),
    Guard("CONSENT_REVOKE", "revocation", "revocation-pending",
          lambda tx, h: {str(tx.fields.get("consent_id"))},
          {"ACCESS_REQUEST": ("access", _consent_used)}),
    Guard("SUSPECT_FLAG", "quarantine", "quarantine-pending", _suspect_subject, _MOVES_OF,
          {"SUSPECT_CLEAR": _suspect_subject}),
)}


# -- detectors of the kinds that exist today ----------------------------------------------------

@detector("*")
def _false_reply(tx: Tx, h: History) -> Iterable[HarmEvent]:
    """A client accepted a result the committed ledger did not give."""
    if tx.accepted is None or tx.result is None or tx.accepted == tx.result:
        return []
    return [HarmEvent("false-reply-accepted", tx,
                      f"accepted {tx.accepted.split(b':')[0].decode(errors='replace')}, "
                      f"ledger {tx.result.split(b':')[0].decode(errors='replace')}")]


@detector("*")
def _phi_accepted(tx: Tx, h: History) -> Iterable[HarmEvent]:
    """A transaction carrying personal data was ordered, or a client was told it was."""
    refused = h.admissible(tx)
    if refused is None or not refused.startswith("phi-"):
        return []
    if tx.pos is not None or (tx.accepted is not None and not tx.accepted.startswith(
            b"refused:")):
        return [HarmEvent("phi-accepted", tx, refused.split(":")[0])]
    return []


# -- detectors of the partner kinds (claims, research; issue 16) ------------------------------

PAID = b"ok:paid"
RELEASED = b"ok:aggregate="


def _position_after(h: History) -> tuple[int, int]:
    """A position after every committed transaction: where a payment that never committed is
    judged (a consent in force there was in force at any later position too)."""
    return (h.committed[-1].pos[0] + 1, 0) if h.committed and h.committed[-1].pos else (1, 0)


def _ledger_now_ns(h: History, pos: tuple[int, int]) -> int | None:
    """The ledger's clock at `pos` (the genesis epoch + its block's agreed timestamp), or None
    when the replayed ledger has no such block (never committed, or a hand-built history)."""
    blocks = h.ledger.state.blocks.entries
    return h.ledger.genesis.epoch_ns + blocks[pos[0] - 1][2] if pos[0] <= len(blocks) else None


def _payment_consent_at(h: History, patient: str, payer: str,
                        pos: tuple[int, int]) -> str | None:
    """The earliest-granted HPAYMT (disclose) consent of `patient` naming `payer` or every
    insurer that was in force at `pos` in the committed order: granted before it, not revoked
    before it, not limited to data classes, its period holding the block's time; else None.
    Read from the replayed consents table (a revoked consent stays, with the revocation's
    position), never from the consent the claim row names, so a faulty rule would show too."""
    purpose, action = PAYMENT
    now = _ledger_now_ns(h, pos)
    found: list[tuple[tuple[int, int], str]] = []
    for cid, row in h.ledger.state.tables["consents"].items():
        if (row[0] == patient and row[1] in (payer, "role:insurer") and action in row[2]
                and purpose in row[3] and not row[4] and tuple(row[7]) < pos
                and (row[8] is None or tuple(row[8]) > pos)
                and (now is None or row[5] <= now < row[6])):
            found.append((tuple(row[7]), cid))
    return min(found)[1] if found else None


@detector("CLAIM_ADJUDICATE")
def _claim_without_consent(tx: Tx, h: History) -> Iterable[HarmEvent]:
    """A claim paid (its insurer's client accepted `ok:paid`, or the committed ledger said so)
    although no HPAYMT consent naming the payer was in force at the payment's position in the
    committed order (e.g. its revocation committed first). A payment that never committed is
    judged after the whole committed order."""
    if PAID not in (tx.accepted, tx.result):
        return []
    claim = h.ledger.state.tables["claims"].get(str(tx.fields.get("claim_id")))
    at = tx.pos if tx.pos is not None else _position_after(h)
    where = f"{at[0]}.{at[1]}" if tx.pos is not None else "the end (never committed)"
    if claim is None or tuple(claim[10]) > at:
        return [HarmEvent("claim-without-consent", tx, f"no claim submitted by {where}")]
    if _payment_consent_at(h, claim[0], claim[3], at) is not None:
        return []
    return [HarmEvent("claim-without-consent", tx, f"no HPAYMT consent in force at {where}")]


@detector("RESEARCH_QUERY")
def _research_below_cohort(tx: Tx, h: History) -> Iterable[HarmEvent]:
    """A research answer released (its researcher's client accepted `ok:aggregate=`, or the
    committed ledger said so) although the cohort the committed ledger counted for it is below
    the study's minimum or below the floor every study has (MIN_COHORT_FLOOR). The cohort is
    the replayed ledger's research row for this very query (its position); a release with no
    such row has no cohort that was ever shown to meet the minimum."""
    if not any(r is not None and r.startswith(RELEASED) for r in (tx.accepted, tx.result)):
        return []
    tables = h.ledger.state.tables
    row = tables["research"].get(str(tx.fields.get("query_id")))
    if row is None or tx.pos is None or tuple(row[7]) != tx.pos:
        return [HarmEvent("research-below-cohort", tx, "released with no committed answer")]
    study = tables["studies"].get(row[0])
    minimum = max(study[5] if study is not None else 0, MIN_COHORT_FLOOR)
    if row[4] >= minimum:
        return []
    return [HarmEvent("research-below-cohort", tx, f"cohort {row[4]} < minimum {minimum}")]


def _guard_violations(h: History) -> list[HarmEvent]:
    """Committed order: a transaction a committed guard must stop succeeded after it (by the
    ledger's result or by what its client accepted)."""
    events: list[HarmEvent] = []
    protected: dict[str, dict[str, tuple[int, int]]] = {k: {} for k in GUARDS}
    for tx in h.committed:
        assert tx.pos is not None
        for guard in GUARDS.values():
            frees = guard.lifted_by.get(tx.kind)
            if frees is not None and tx.ok(tx.result):
                for subject in h.subjects(frees, tx):
                    protected[guard.kind].pop(subject, None)
            touches = guard.stops.get(tx.kind)
            if touches is None or not (tx.ok(tx.result) or tx.ok(tx.accepted)):
                continue
            if any(s in protected[guard.kind] for s in h.subjects(touches[1], tx)):
                events.append(HarmEvent(guard.harm(tx.kind), tx, f"after {guard.kind}"))
        own = GUARDS.get(tx.kind)
        if own is not None and tx.ok(tx.result):
            for subject in h.subjects(own.protects, tx):
                protected[own.kind].setdefault(subject, tx.pos)
    return events


# -- windows: how long harm was possible --------------------------------------------------------

@dataclass
class Window:
    kind: str
    request: str
    opened_ns: int
    closed_ns: int | None
    closed_by: str
    exposed: int = 0
    unfair: int = 0

    @property
    def duration_ns(self) -> int | None:
        return None if self.closed_ns is None else self.closed_ns - self.opened_ns

    def as_dict(self, end_ns: int) -> dict[str, Any]:
        until = self.closed_ns if self.closed_ns is not None else end_ns
        return {"kind": self.kind, "request": self.request, "opened_at_s": _s(self.opened_ns),
                "closed_at_s": None if self.closed_ns is None else _s(self.closed_ns),
                "duration_s": _s(until - self.opened_ns), "closed_by": self.closed_by,
                "exposed": self.exposed, "unfair": self.unfair}


def _closed_by(h: History, opened: int, closed: int | None) -> str:
    if closed is None:
        return "still open at the end of the run"
    # view_entered_ns is sorted: the first entry after `opened` decides (a scan per window
    # made this windows x view changes)
    entered = h.view_entered_ns
    i = bisect.bisect_right(entered, opened)
    if i < len(entered) and entered[i] <= closed:
        return "view-change"
    return "normal-case"


def _guard_windows(h: History) -> tuple[list[Window], list[HarmEvent]]:
    """For each protective transaction: the window from its submission until its client
    accepted it; the transactions it would have stopped that committed before it although
    submitted no earlier than it (exposed), and of those, the ones the proposing primary
    received after the protective one (unfair: ordering fairness, which PBFT does not
    promise)."""
    windows: list[Window] = []
    unfair: list[HarmEvent] = []
    end = len(h.committed)
    for guard in GUARDS.values():
        # The committed transactions this guard stops, by subject (positions ascending).
        by_subject: dict[str, list[int]] = {}
        for i, tx in enumerate(h.committed):
            touches = guard.stops.get(tx.kind)
            if touches is not None and tx.ok(tx.result):
                for subject in h.subjects(touches[1], tx):
                    by_subject.setdefault(subject, []).append(i)
        for p in h.txs.values():
            if p.kind != guard.kind or (p.result is not None and not p.ok(p.result)):
                continue
            closed = p.accepted_ns if p.accepted is not None and p.ok(p.accepted) else None
            window = Window(guard.window, p.key, p.submit_ns, closed,
                            _closed_by(h, p.submit_ns, closed))
            upto = end if p.pos is None else _index(h, p)
            hits = sorted({i for s in h.subjects(guard.protects, p) for i in by_subject.get(s, ())
                           if i < upto})
            for i in hits:
                tx = h.committed[i]
                if tx.submit_ns < p.submit_ns:
                    continue
                window.exposed += 1
                if h.received_first(tx.proposer, p, tx):
                    window.unfair += 1
                    unfair.append(HarmEvent(f"{guard.window}:ordered-first", tx,
                                            f"{tx.proposer} received {p.key} first"))
            windows.append(window)
    return windows, unfair


#: Roles whose work is regulatory oversight (a delay-regulator primary holds it back).
REGULATOR_ROLES = ("inspector", "regulator_inspector", "auditor")


def _regulator_windows(h: History) -> list[Window]:
    """Each regulator transaction, from submission until its client accepted it: how long
    oversight (a review, a quarantine, a recall's close) was held up. Nothing is exposed by
    itself; the protective kinds among them have their own windows."""
    return [Window("regulator-pending", tx.key, tx.submit_ns, tx.accepted_ns,
                   _closed_by(h, tx.submit_ns, tx.accepted_ns))
            for tx in h.txs.values() if tx.role in REGULATOR_ROLES]


def _index(h: History, tx: Tx) -> int:
    lo, hi = 0, len(h.committed)
    while lo < hi:  # committed is sorted by position
        mid = (lo + hi) // 2
        pos = h.committed[mid].pos
        assert pos is not None and tx.pos is not None
        if pos < tx.pos:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _false_reply_windows(h: History, events: Sequence[Mapping[str, Any]]) -> list[Window]:
    """A false reply opens a window (its client could be misled) that closes when the client
    settles: on f+1 matching true replies (the protocol ended it) or on the false one."""
    first: dict[str, int] = {}
    for row in events:
        if row["event"] == "byzantine" and row.get("action") == "false reply":
            first.setdefault(row["request"], row["t"])
    out = []
    for key, opened in sorted(first.items(), key=lambda kv: (kv[1], kv[0])):
        tx = h.txs.get(key)
        if tx is None:
            continue
        misled = tx.accepted is not None and tx.result is not None and tx.accepted != tx.result
        closed_by = ("accepted the false reply" if misled else "f+1 matching replies"
                     if tx.accepted is not None else "still open at the end of the run")
        out.append(Window("false-reply", key, opened, tx.accepted_ns, closed_by,
                          exposed=1, unfair=int(misled)))
    return out


# -- tampering ------------------------------------------------------------------------------------

TAMPER_TARGETS = ("audit", "blocks", "state")


def tamper_ledger(ledger: Ledger, target: str) -> str:
    """Alter one replica's stored ledger the way an insider covering their tracks would: the
    change is made and the hash chain's head recomputed, so the replica's own chain still
    verifies; only a comparison with other replicas (a checkpoint) can show it. Returns what
    was altered (no contents: a position and a field name).
    - audit: the newest audit entry's decision is flipped (deny <-> permit, rejected -> ok);
    - blocks: the newest block header's transaction count is raised by one;
    - state: the first organisation (in id order) not suspended is marked suspended."""
    st = ledger.state
    if target == "audit":
        if not st.audit.entries:
            return "audit: empty, nothing altered"
        entry = st.audit.entries[-1]
        flip = {"deny": "permit", "permit": "deny", "rejected": "ok"}.get(entry[5], "deny")
        st.audit.entries[-1] = (*entry[:5], flip, *entry[6:])
        st.audit.head = st.audit.recompute()
        return f"audit entry {len(st.audit.entries) - 1}: decision {entry[5]} -> {flip}"
    if target == "blocks":
        if not st.blocks.entries:
            return "blocks: empty, nothing altered"
        header = st.blocks.entries[-1]
        st.blocks.entries[-1] = (*header[:6], header[6] + 1, *header[7:])
        st.blocks.head = st.blocks.recompute()
        return f"block {header[0]}: tx count {header[6]} -> {header[6] + 1}"
    if target == "state":
        org = next((o for o in sorted(ledger.genesis.orgs)
                    if st.get("org_status", o) is None), None)
        if org is None:
            return "state: every organisation already suspended, nothing altered"
        st.put("org_status", org, ("suspended", "regulator-order", (0, 0)))
        return f"org_status: {org} marked suspended"
    raise ValueError(f"tamper target: expected one of {', '.join(TAMPER_TARGETS)}; got {target!r}")


def tampering_report(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each tampering: when, which store, when and by whom it was detected (a replica whose
    checkpoint digest disagrees with a quorum's), and when state transfer repaired it."""
    out = []
    for row in events:
        if row["event"] != "tamper":
            continue
        node, at = row["node"], row["t"]
        detected = next((r for r in events if r["t"] >= at and r["event"] ==
                         "checkpoint mismatch" and r["node"] == node), None)
        repaired = None if detected is None else next(
            (r for r in events if r["t"] >= detected["t"] and r["event"] == "state-transfer"
             and r["node"] == node), None)
        out.append({"node": node, "target": row["target"], "what": row.get("what", ""),
                    "at_s": _s(at),
                    "detected_at_s": None if detected is None else _s(detected["t"]),
                    "detected_by": None if detected is None else detected["node"],
                    "detected_at_checkpoint": None if detected is None else detected["seq"],
                    "repaired_at_s": None if repaired is None else _s(repaired["t"]),
                    "repaired_to_checkpoint": None if repaired is None else repaired["seq"]})
    return out


# -- assembling the history --------------------------------------------------------------------

class RequestArrivals:
    """Records, from the simulator's REQUEST sends, when each request first reached each
    replica and in which order (same-instant arrivals are delivered in send order). An
    arrival is the network's delivery: one at a crashed replica counts too (it is only read
    for the primary that proposed a batch, which was up then)."""

    def __init__(self, replicas: Iterable[str]) -> None:
        self.replicas = frozenset(replicas)
        self.first: dict[tuple[str, str], tuple[int, int]] = {}
        self._order = 0

    def __call__(self, to: str, data: bytes, arrivals: Iterable[int]) -> None:
        if to not in self.replicas:
            return
        times = list(arrivals)
        if not times:
            return
        self._order += 1
        try:
            env = m.decode(data)
            req = m.decode(env.payload) if type(env) is m.Envelope else env
        except m.DecodeError:
            return
        if type(req) is not m.Request:
            return
        key = (to, f"{req.client}/{req.session}/{req.timestamp}")
        seen = (min(times), self._order)
        if key not in self.first or seen < self.first[key]:
            self.first[key] = seen


class ObservedTraffic:
    """The ledger traffic, with each submitted transaction and accepted result noted for the
    judge (request key = client/session/timestamp: the k-th submission of a session is its
    timestamp k). Everything else is the wrapped generator's."""

    def __init__(self, traffic: Any) -> None:
        self._traffic = traffic
        # The workload reads `followups` after every result: the generator's own list (it is
        # only ever appended to and popped, never replaced), so no __getattr__ each time.
        if hasattr(traffic, "followups"):
            self.followups = traffic.followups
        self.submitted: dict[str, tuple[bytes, int]] = {}
        self.accepted: dict[str, bytes] = {}
        self._count: dict[tuple[str, int], int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._traffic, name)

    def _note(self, cid: str, session: int, op: bytes | None, now_ns: int) -> bytes | None:
        if op is not None:
            ts = self._count.get((cid, session), 0) + 1
            self._count[(cid, session)] = ts
            self.submitted[f"{cid}/{session}/{ts}"] = (op, now_ns)
        return op

    def next_op(self, cid: str, session: int, now_ns: int) -> bytes | None:
        return self._note(cid, session, self._traffic.next_op(cid, session, now_ns), now_ns)

    def submit_scripted(self, cid: str, session: int, pending: Any) -> bytes:
        op = self._traffic.submit_scripted(cid, session, pending)
        self._note(cid, session, op, self._traffic.now_ns)
        return op  # type: ignore[no-any-return]

    def on_result(self, cid: str, session: int, result: bytes,
                  now_ns: int | None = None) -> None:
        ts = self._count.get((cid, session))
        if ts is not None:
            self.accepted[f"{cid}/{session}/{ts}"] = result
        self._traffic.on_result(cid, session, result, now_ns)


def _decode(op: bytes) -> tuple[str, dict[str, Any]]:
    try:
        tx = json.loads(op)
    except (ValueError, UnicodeDecodeError):
        return "?", {}
    if not isinstance(tx, dict):
        return "?", {}
    return str(tx.get("kind", "?")), tx


def build_history(genesis: LedgerGenesis, observed: ObservedTraffic,
                  records: dict[str, Any], events: EventLog, honest: set[str],
                  node_ids: tuple[str, ...], arrivals: RequestArrivals | None,
                  executions: Executions | None = None) -> History:
    """Rebuild the committed order from the honest replicas' executions and replay it
    (reads the pre-prepare, execute and enter-view rows of the run's `events`).
    `executions`: the replicas' record of the blocks they executed; a block still in it is
    replayed from it (the same writes and results as executing it: node.ledger.ledger)."""
    txs: dict[str, Tx] = {}
    for key, (op, submit_ns) in observed.submitted.items():
        cid, session, stamp = key.rsplit("/", 2)
        kind, fields = _decode(op)
        record = records.get(key)
        tx = Tx(key, cid, int(session), int(stamp), op, kind, fields,
                record.submit_ns if record is not None else submit_ns)
        party = genesis.parties.get(cid)
        tx.role = party.role if party is not None else ""
        tx.accepted = observed.accepted.get(key)
        tx.accepted_ns = record.commit_ns if record is not None and tx.accepted else None
        txs[key] = tx
    n = len(node_ids)
    proposer: dict[str, str] = {}
    for node, view, digest in events.fields(("pre-prepare",), ("node", "view", "digest")):
        if node == node_ids[view % n]:
            proposer.setdefault(digest, node)
    batches: dict[int, tuple[int, int, list[str], str]] = {}
    for node, seq, view, ts, executed, digest in events.fields(
            ("execute",), ("node", "seq", "view", "timestamp_ns", "executed", "digest")):
        if node in honest:
            batches.setdefault(seq, (view, ts, executed, digest))
    entered = [t for node, t in events.fields(("enter-view",), ("node", "t")) if node in honest]
    ledger = Ledger(genesis, executions)
    committed: list[Tx] = []
    # Each op's admission verdict, asked once (the PHI detector reads it too): asked just
    # before its block executes, as a replica does, the ledger keeps the decode it made for
    # the execution (Ledger.admissible), so the replay parses each op once, not twice.
    admission: dict[str, str | None] = {}
    for seq in sorted(batches):
        view, ts, keys, digest = batches[seq]
        block = [txs[k] for k in keys if k in txs]
        for t in block:
            admission[t.key] = ledger.admissible(t.op)
        requests = [m.Request(t.op, t.timestamp, t.client, t.session, b"") for t in block]
        height = len(ledger.state.block_hashes) + 1
        results = ledger.execute(requests, BlockInfo(seq, view, ts))
        for index, (tx, result) in enumerate(zip(block, results, strict=True)):
            tx.seq, tx.pos, tx.result = seq, (height, index), result
            tx.proposer = proposer.get(digest)
            committed.append(tx)
    for tx in txs.values():
        if tx.result is None:
            refused = admission[tx.key] = ledger.admissible(tx.op)
            if refused is not None:
                tx.result = b"refused:" + refused.encode()
    return History(txs, committed, ledger, arrivals.first if arrivals else {}, sorted(entered),
                   admission)


# -- the summary section ------------------------------------------------------------------------

def empty_harm() -> dict[str, Any]:
    """The `harm` section of a run whose application has no domain harms (key-value)."""
    return {"ok": True, "events": 0, "by_kind": {}, "listed": [],
            "unfair": {"events": 0, "by_kind": {}}, "windows": [], "window_stats": {},
            "tampering": []}


#: The events judge_harm reads besides the history: false replies, tamperings and how they
#: were detected and repaired.
JUDGED_EVENTS = frozenset({"byzantine", "tamper", "checkpoint mismatch", "state-transfer"})


def judge_harm(h: History, events: Iterable[Mapping[str, Any]],
               end_ns: int) -> dict[str, Any]:
    """The `harm` section of summary.json for one run (see the module docstring)."""
    harms: list[HarmEvent] = []
    every = DETECTORS.get("*", [])
    for tx in sorted(h.txs.values(), key=lambda t: (t.submit_ns, t.key)):
        for fn in DETECTORS.get(tx.kind, []) + every:
            harms.extend(fn(tx, h))
    harms.extend(_guard_violations(h))
    windows, unfair = _guard_windows(h)
    # The false-reply windows and the tampering report read only these events: select them
    # in one pass, in order (each used to scan every event, and the report once more per
    # tampering); both only ever look for rows of these kinds, so their answers are the same.
    judged = [row for row in events if row["event"] in JUDGED_EVENTS]
    windows += _false_reply_windows(h, judged) + _regulator_windows(h)
    by_kind: dict[str, int] = {}
    for ev in harms:
        by_kind[ev.kind] = by_kind.get(ev.kind, 0) + 1
    unfair_by: dict[str, int] = {}
    for ev in unfair:
        unfair_by[ev.kind] = unfair_by.get(ev.kind, 0) + 1
    stats: dict[str, dict[str, Any]] = {}
    for w in windows:
        s = stats.setdefault(w.kind, {"count": 0, "open_at_end": 0, "max_duration_s": 0.0,
                                      "exposed": 0, "unfair": 0, "closed_by_view_change": 0})
        s["count"] += 1
        s["open_at_end"] += w.closed_ns is None
        s["closed_by_view_change"] += w.closed_by == "view-change"
        s["exposed"] += w.exposed
        s["unfair"] += w.unfair
        s["max_duration_s"] = max(s["max_duration_s"], w.as_dict(end_ns)["duration_s"])
    # Listed in full: the windows in which harm was possible and happened or that the
    # protocol had to end (a view change) or never ended; the rest are in window_stats.
    notable = [w for w in windows if w.exposed or w.closed_by != "normal-case"]
    notable.sort(key=lambda w: (-w.unfair, -w.exposed, w.opened_ns, w.request))
    return {
        "ok": not harms,
        "events": len(harms),
        "by_kind": dict(sorted(by_kind.items())),
        "listed": [ev.as_dict() for ev in harms[:LISTED]],
        "unfair": {"events": len(unfair), "by_kind": dict(sorted(unfair_by.items()))},
        "windows": [w.as_dict(end_ns) for w in notable[:LISTED]],
        "window_stats": dict(sorted(stats.items())),
        "tampering": tampering_report(judged),
    }


def _s(ns: int) -> float:
    return round(ns / 1e9, 9)
