"""A pool of units behaves as the list it replaced, and a shipment takes exactly the units a
plain scan of the shipper's stock found.

Why this exists: recalled stock stays in a pool until it is returned, so a long run's pools
hold thousands of units, and the traffic generator takes units out of one for every shipment,
dispense and administration it builds. `medbft.traffic.world.Pool` keeps the units in dicts so
that this costs the same at any length of run; it must keep a list's order under every
operation the traffic uses, and a shipment must take exactly what the plain scan took (the
first movable unit, then the units of its lot after it, in stock order), or every seeded run
would change.
"""

from __future__ import annotations

import itertools
import random

import pytest

from medbft.traffic.world import Pool


def _plain(pool: list[str], lot_of: dict[str, str], recalled: set[str], count: int) -> list[str]:
    """The scan as it was written first: movable units in order, then those of the first
    one's lot."""
    live = (e for e in pool if lot_of[e] not in recalled)
    first = next(live)
    lot = lot_of[first]
    same = (e for e in itertools.chain((first,), live) if lot_of[e] == lot)
    return list(itertools.islice(same, count))


def test_a_pool_keeps_a_lists_order_under_appends_extends_and_removes() -> None:
    rng = random.Random(3)
    for _ in range(200):
        lots = [f"LOT-{i}" for i in range(rng.randint(1, 6))]
        units = [f"urn:epc:id:sgtin:0614141.000001.{n}" for n in range(rng.randint(1, 120))]
        lot_of = {e: rng.choice(lots) for e in units}
        outside = list(units)
        rng.shuffle(outside)
        plain: list[str] = []
        pool = Pool(lot_of)
        for _ in range(300):
            step = rng.random()
            if step < 0.4 and outside:
                unit = outside.pop()
                plain.append(unit)
                pool.append(unit)
            elif step < 0.55 and outside:
                some = [outside.pop() for _ in range(min(len(outside), rng.randint(1, 12)))]
                plain.extend(some)
                pool.extend(some)
            elif plain:
                unit = rng.choice(plain)
                plain.remove(unit)
                pool.remove(unit)
                outside.append(unit)
            assert list(pool) == plain and len(pool) == len(plain) and bool(pool) == bool(plain)
            assert pool == plain and pool == Pool(lot_of, plain)
            assert sorted(pool.lots()) == sorted({lot_of[e] for e in plain})
            for lot in lots:
                in_lot = [e for e in plain if lot_of[e] == lot]
                assert pool.count_of_lot(lot) == len(in_lot)
                for count in (1, 3, 12):
                    assert pool.of_lot(lot, count) == in_lot[:count]
        probe = units[0]
        assert (probe in pool) == (probe in plain)


def test_a_pool_refuses_a_unit_twice_and_a_unit_it_does_not_hold() -> None:
    pool = Pool({"a": "LOT-1", "b": "LOT-1"}, ["a"])
    with pytest.raises(ValueError, match="already"):
        pool.append("a")
    with pytest.raises(ValueError, match="not in"):
        pool.remove("b")
    assert list(pool) == ["a"]
    assert pool != Pool({"a": "LOT-1", "b": "LOT-1"}, ["b"]) and pool != ["a", "b"]
    assert Pool({"a": "L", "b": "L"}, ["a", "b"]) != Pool({"a": "L", "b": "L"}, ["b", "a"])


def test_a_shipment_takes_the_first_movable_unit_and_its_lot_after_it_in_stock_order() -> None:
    """What `SupplyChain.ship` takes (`Pool.of_lot` of the first movable unit's lot) is what
    the plain scan took: no unit of that lot can come before the first movable unit, since a
    lot is recalled whole."""
    rng = random.Random(7)
    for _ in range(300):
        lots = [f"LOT-{i}" for i in range(rng.randint(1, 8))]
        units = [f"urn:epc:id:sgtin:0614141.000001.{n}" for n in range(rng.randint(1, 400))]
        lot_of = {e: rng.choice(lots) for e in units}
        rng.shuffle(units)
        recalled = set(rng.sample(lots, rng.randint(0, len(lots) - 1)))
        pool = Pool(lot_of, units)
        first = next((e for e in pool if lot_of[e] not in recalled), None)
        if first is None:
            continue
        count = rng.randint(1, 8)
        got = pool.of_lot(lot_of[first], count)
        assert got == _plain(units, lot_of, recalled, count)
        assert got[0] == first and 1 <= len(got) <= count
