"""The world as the simulated clients know it, and what every kind of ledger traffic shares.

Why this exists: clients only learn from results. A lot is theirs to ship once its
EPCIS_COMMISSION is accepted, a consent theirs to revoke once its grant is; until then a
transaction is `Pending`, carrying what the world learns if it is accepted (or undoes if it
is not). `World` holds those facts; `TrafficState` holds them with the one seeded
`random.Random`, the clock, the id counter and the off-chain documents, and the helpers the
domain modules (supply, care, consent, invalid, stories) build transactions with.

What it must not know: which transactions exist or who may submit them (the domain modules
and the coordinator, medbft/traffic/ledger.py). Determinism: one rng, drawn only through
this state, and every choice iterates sorted collections.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from node.ledger.genesis import LedgerGenesis
from node.ledger.txs import commitment, epcis_event_hash

__all__ = ["Build", "Pending", "Pool", "TrafficState", "World"]


@dataclass
class Pending:
    """A transaction on its way: its bytes, and what the world learns if it is accepted."""

    op: bytes
    kind: str
    on_ok: Callable[[bytes], None] = lambda result: None
    on_fail: Callable[[bytes], None] = lambda result: None
    valid: bool = True


Build = Callable[[], Pending]


class Pool:
    """One organisation's units (its stock, or the dispensed units it holds), in the order
    they came in: what a list of them was, with what a long run needs to be fast.

    Why not a list: a manufacturer commissions faster than it ships, so its stock grows
    through a run (in the run-length benchmark's 30 s run, 2,400 units on average when it
    ships, 4,600 at the end), and with a list a shipment, a dispense and an administration
    took units out with `list.remove` and a shipment looked for its lot's units by scanning
    the stock: each request cost time in proportion to everything the run had commissioned.
    A unit is in one pool at most once, so an insertion-ordered dict keeps the list's order
    with O(1) removal, and one more dict per lot gives that lot's units in the same order.
    Adding a unit that is already in the pool is an error (a list would have held it twice,
    which no flow does). A pool equals another pool, or a list, holding the same units in the
    same order.
    """

    __slots__ = ("_lot_of", "_lots", "_units")

    def __init__(self, lot_of: Mapping[str, str], units: Iterable[str] = ()) -> None:
        self._lot_of = lot_of
        self._units: dict[str, str] = {}  # unit -> its lot, in arrival order
        self._lots: dict[str, dict[str, None]] = {}  # lot -> its units here, in arrival order
        self.extend(units)

    def __iter__(self) -> Iterator[str]:
        return iter(self._units)

    def __len__(self) -> int:
        return len(self._units)

    def __contains__(self, unit: object) -> bool:
        return unit in self._units

    def __repr__(self) -> str:
        return f"Pool({list(self._units)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Pool):
            return list(self._units) == list(other._units)
        if isinstance(other, list):
            return list(self._units) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def append(self, unit: str) -> None:
        if unit in self._units:
            raise ValueError(f"unit {unit} is already in this pool")
        lot = self._units[unit] = self._lot_of[unit]
        same = self._lots.get(lot)
        if same is None:
            same = self._lots[lot] = {}
        same[unit] = None

    def extend(self, units: Iterable[str]) -> None:
        for unit in units:
            self.append(unit)

    def remove(self, unit: str) -> None:
        lot = self._units.pop(unit, None)
        if lot is None:
            raise ValueError(f"unit {unit} is not in this pool")
        same = self._lots[lot]
        del same[unit]
        if not same:
            del self._lots[lot]

    def of_lot(self, lot: str, count: int) -> list[str]:
        """The first `count` units of `lot` here, in the pool's order."""
        return list(itertools.islice(self._lots.get(lot, ()), count))

    def count_of_lot(self, lot: str) -> int:
        return len(self._lots.get(lot, ()))

    def lots(self) -> Iterator[str]:
        """The lots with a unit here (in no order a caller may rely on: sort them)."""
        return iter(self._lots)


@dataclass
class World:
    """The facts the clients have learnt from accepted results (and their own reservations)."""

    gtin: dict[str, str] = field(default_factory=dict)              # mfr org -> gtin (done)
    gtin_pending: set[str] = field(default_factory=set)
    lots: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # lot -> gtin, exp, org
    lot_of: dict[str, str] = field(default_factory=dict)             # epc -> lot
    stock: dict[str, Pool] = field(default_factory=dict)             # org -> movable epcs
    inbound: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    held: dict[str, Pool] = field(default_factory=dict)              # org -> dispensed epcs
    recalled: set[str] = field(default_factory=set)
    recalls: dict[str, tuple[tuple[str, ...], set[str], set[str]]] = field(default_factory=dict)
    exposure: dict[str, set[str]] = field(default_factory=dict)      # lot -> orgs that held it
    administered: dict[str, int] = field(default_factory=dict)       # lot -> doses given
    records: dict[str, list[list[str]]] = field(default_factory=dict)  # org -> [id, pp, commit]
    consents: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    reviews: list[str] = field(default_factory=list)
    suspects: list[tuple[str, str]] = field(default_factory=list)     # (field, value)
    biometrics: dict[str, int] = field(default_factory=dict)          # pseudonym -> version>0
    known_epcs: list[str] = field(default_factory=list)
    # issue 16's partners (used only by the flows that ask for them)
    consent_purpose: dict[str, str] = field(default_factory=dict)    # consent id -> purpose
    bio_refs: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # pp -> pi, ad, v
    claimed: set[str] = field(default_factory=set)                   # record ids billed
    claims: list[tuple[str, str]] = field(default_factory=list)      # (claim id, insurer org)
    studies: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # researcher
    cases: dict[str, list[tuple[str, tuple[str, ...]]]] = field(default_factory=dict)  # org
    inbound_cases: dict[str, list[tuple[str, tuple[str, ...]]]] = field(default_factory=dict)
    came_from: dict[str, str] = field(default_factory=dict)          # epc -> who shipped it
    storage: dict[str, tuple[str, str]] = field(default_factory=dict)  # lot -> range (°C)
    signals: list[str] = field(default_factory=list)                 # open AE reviews

    def stock_at(self, org: str) -> Pool:
        """`org`'s stock (made empty the first time it is asked for)."""
        pool = self.stock.get(org)
        if pool is None:
            pool = self.stock[org] = Pool(self.lot_of)
        return pool

    def held_at(self, org: str) -> Pool:
        """The dispensed units `org` holds (made empty the first time it is asked for)."""
        pool = self.held.get(org)
        if pool is None:
            pool = self.held[org] = Pool(self.lot_of)
        return pool


class TrafficState:
    """The genesis, the world, the rng, the clock and ids, and what a run keeps besides.

    `offchain` keeps the EPCIS events and FHIR resources (with their salts) behind the hashes
    and commitments, so a run can save them and `medbft ledger verify` can check them; `story`
    records what the scripted flows did; `followups` queues (identity, transaction) pairs that
    a result made due (the workload submits them).
    """

    def __init__(self, genesis: LedgerGenesis, rng: random.Random, *,
                 keep_documents: int = 20_000) -> None:
        self.g = genesis
        self.rng = rng
        self.w = World()
        self.now_ns = 0
        self.ids = 0
        self.offchain: dict[str, Any] = {"records": {}, "events": {}}
        self.keep_documents = keep_documents
        self.story: dict[str, Any] = {}
        self.followups: list[tuple[str, Pending]] = []
        self.patients = sorted(p for p, party in genesis.parties.items()
                               if party.role == "patient")
        self.custodians = genesis.orgs_of_type("hospital", "pharmacy")
        # The genesis never changes during a run, and its pseudonyms_of and orgs_of_type sort
        # every pseudonym or organisation on each call: each answer is remembered here.
        self._pseudonyms: dict[str, Mapping[str, str]] = {}
        self._orgs_of_type: dict[tuple[str, ...], list[str]] = {}

    def pseudonyms_of(self, patient: str) -> Mapping[str, str]:
        """custodian org -> pseudonym of `patient` (the genesis's answer, remembered; shared,
        so read-only)."""
        found = self._pseudonyms.get(patient)
        if found is None:
            found = self._pseudonyms[patient] = self.g.pseudonyms_of(patient)
        return found

    def orgs_of_type(self, *types: str) -> list[str]:
        """The genesis's organisations of `types`, sorted (remembered; shared, so read-only)."""
        found = self._orgs_of_type.get(types)
        if found is None:
            found = self._orgs_of_type[types] = self.g.orgs_of_type(*types)
        return found

    @property
    def calendar_ns(self) -> int:
        return self.g.epoch_ns + self.now_ns

    def new_id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}-{self.ids}"

    def pick(self, items: list[Any]) -> Any:
        return items[self.rng.randrange(len(items))]

    def salted(self, resource: dict[str, Any], key: str) -> str:
        """The salted commitment to an off-chain resource (kept in `offchain`, up to a bound)."""
        salt = self.rng.randbytes(16)
        if len(self.offchain["records"]) < self.keep_documents:
            self.offchain["records"][key] = {"resource": resource, "salt": salt.hex()}
        return commitment(resource, salt)

    def event_hash(self, event: dict[str, Any]) -> str:
        """The hash of an EPCIS event (kept in `offchain`, up to a bound)."""
        value = epcis_event_hash(event)
        if len(self.offchain["events"]) < self.keep_documents:
            self.offchain["events"][value] = event
        return value
