"""The ledger traffic generator reads an organisation's stock in order: the first unit that
may move, and the units of its lot to ship, exactly as a plain scan of the list finds them.

Why this exists: recalled stock stays in a pool until it is returned, so in a long run the
generator scans long lists for every request it builds; those scans run in C
(`itertools.compress`) rather than a Python loop per unit. They must pick exactly what the
plain scan picks, or every seeded run would change.
"""

from __future__ import annotations

import random

from ledger_support import genesis

from medbft.traffic.ledger import LedgerTraffic
from medbft.traffic.supply import SHIP_MAX


def _traffic(seed: int) -> tuple[LedgerTraffic, str, list[str]]:
    t = LedgerTraffic(genesis(), random.Random(seed))
    org = next(o for o, kind in sorted(t.g.orgs.items()) if kind == "manufacturer")
    rng = random.Random(seed)
    lots = [f"LOT-{i}" for i in range(6)]
    pool = [f"urn:epc:id:sgtin:0614141.000001.{n}" for n in range(300)]
    for e in pool:
        t.w.lot_of[e] = rng.choice(lots)
    rng.shuffle(pool)
    t.w.recalled.update(rng.sample(lots, 3))
    t.w.stock[org] = pool
    return t, org, pool


def test_live_units_and_the_first_one_are_those_a_plain_scan_finds() -> None:
    for seed in range(20):
        t, _org, pool = _traffic(seed)
        plain = [e for e in pool if t.w.lot_of[e] not in t.w.recalled]
        assert list(t._live(pool)) == plain
        assert t._first_live(pool) == (plain[0] if plain else None)
    t.w.recalled.update(t.w.lot_of.values())
    assert t._first_live(pool) is None and t._first_live([]) is None


def test_a_shipment_takes_the_first_movable_unit_and_its_lot_after_it_in_stock_order() -> None:
    for seed in range(20):
        t, org, pool = _traffic(seed)
        first = t._first_live(pool)
        assert first is not None
        lot = t.w.lot_of[first]
        same = [e for e in pool[pool.index(first):] if t.w.lot_of[e] == lot]
        before = list(pool)
        pending = t.supply.ship(org, first)
        shipped = [e for e in before if e not in pool]
        assert 1 <= len(shipped) <= SHIP_MAX
        assert shipped == same[:len(shipped)] and shipped[0] == first
        assert pending.kind == "EPCIS_SHIP"
