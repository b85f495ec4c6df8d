"""A shipment takes exactly the units a plain scan of the shipper's stock finds.

Why this exists: recalled stock stays in a pool until it is returned, so a long run's pools
hold thousands of units, and the traffic generator looks through one for every shipment it
builds. `medbft.traffic.supply.same_lot` does that scan in C; it must take exactly what the
plain scan took (the first movable unit, then the units of its lot after it, in stock
order), or every seeded run would change.
"""

from __future__ import annotations

import itertools
import random

from medbft.traffic.supply import same_lot


def _plain(pool: list[str], lot_of: dict[str, str], recalled: set[str], count: int) -> list[str]:
    """The scan as it was written first: movable units in order, then those of the first
    one's lot."""
    live = (e for e in pool if lot_of[e] not in recalled)
    first = next(live)
    lot = lot_of[first]
    same = (e for e in itertools.chain((first,), live) if lot_of[e] == lot)
    return list(itertools.islice(same, count))


def test_a_shipment_takes_the_first_movable_unit_and_its_lot_after_it_in_stock_order() -> None:
    rng = random.Random(7)
    for _ in range(300):
        lots = [f"LOT-{i}" for i in range(rng.randint(1, 8))]
        pool = [f"urn:epc:id:sgtin:0614141.000001.{n}" for n in range(rng.randint(1, 400))]
        lot_of = {e: rng.choice(lots) for e in pool}
        rng.shuffle(pool)
        recalled = set(rng.sample(lots, rng.randint(0, len(lots) - 1)))
        first = next((e for e in pool if lot_of[e] not in recalled), None)
        if first is None:
            continue
        count = rng.randint(1, 8)
        got = same_lot(pool, first, lot_of, count)
        assert got == _plain(pool, lot_of, recalled, count)
        assert got[0] == first and 1 <= len(got) <= count
