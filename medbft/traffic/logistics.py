"""Traffic of the deeper supply chain issue 16 added: cases (pack, ship and receive a case,
unpack it), returns of recalled or quarantined stock, cold-chain excursions, and the
regulator's review of serious adverse-event signals.

Why this exists: in the cold-chain flow a manufacturer states a storage range for each lot,
packs units into cases (an EPCIS 2.0 AggregationEvent naming an SSCC) and ships whole cases;
a distributor receives a case and unpacks it before shipping units on; a custodian holding
stock of a lot that was recalled or quarantined returns it to whoever shipped it (CBV bizStep
`returning`); a sensor reading outside the range quarantines the lot; the inspector closes
the adverse-event reviews that serious reports opened. These builders run only in the flows
that ask for these kinds (`workload.flow: cold-chain-excursion`, or a `mix` naming them).

What it must not know: who may call a builder, and when (the coordinator,
medbft/traffic/ledger.py).
"""

from __future__ import annotations

from node.ledger import documents as doc
from node.ledger.txs import encode_tx

from .world import Pending, TrafficState

__all__ = ["CASE_SIZE", "Logistics"]

CASE_SIZE = 6
_CASE_SERIALS = 1_000_000_000   # SSCC serial references start here (above unit serials)


class Logistics:
    """Builders of the case, return, excursion and signal-review transactions."""

    def __init__(self, state: TrafficState) -> None:
        self.s = state

    def _blocked(self, lot: str) -> bool:
        w = self.s.w
        return lot in w.recalled or ("lot", lot) in w.suspects

    # -- cases --------------------------------------------------------------------------------

    def packable(self, org: str) -> list[str]:
        """Up to a case of movable units of one lot in `org`'s stock (first lot first): the
        first movable unit's lot, in stock order. A lot is blocked whole, so no unit of that
        lot comes before it."""
        w = self.s.w
        stock = w.stock.get(org)
        if stock is None:
            return []
        first = next((e for e in stock if not self._blocked(w.lot_of[e])), None)
        return [] if first is None else stock.of_lot(w.lot_of[first], CASE_SIZE)

    def pack(self, org: str) -> Pending:
        s = self.s
        epcs = self.packable(org)
        parent = doc.sscc(doc.org_prefix(s.g, org), _CASE_SERIALS + s.ids + 1)
        s.new_id("case")
        pool = s.w.stock[org]
        for e in epcs:
            pool.remove(e)
        event = doc.epcis_aggregation_event(s.g, org, parent, epcs, s.calendar_ns)

        return Pending(encode_tx("EPCIS_AGGREGATE", parent=parent, epcs=epcs,
                                 event_hash=s.event_hash(event)), "EPCIS_AGGREGATE",
                       lambda _: s.w.cases.setdefault(org, []).append((parent, tuple(epcs))),
                       lambda _: pool.extend(epcs))

    def ship_case(self, org: str) -> Pending:
        s = self.s
        parent, epcs = s.w.cases[org].pop(0)
        kinds = ("distributor", "pharmacy", "hospital") if s.g.orgs[org] == "manufacturer" \
            else ("pharmacy", "hospital")
        to = s.pick([o for o in s.orgs_of_type(*kinds) if o != org])
        event = doc.epcis_event("EPCIS_SHIP", s.g, org, [parent], s.calendar_ns, to=to)
        lot = s.w.lot_of[epcs[0]]

        def ok(_: bytes) -> None:
            s.w.inbound_cases.setdefault(to, []).append((parent, epcs))
            s.w.exposure.setdefault(lot, set()).add(to)
            for e in epcs:
                s.w.came_from[e] = org

        return Pending(encode_tx("EPCIS_SHIP", parents=[parent], to=to,
                                 event_hash=s.event_hash(event)), "EPCIS_SHIP", ok,
                       lambda _: s.w.cases[org].append((parent, epcs)))

    def receive_case(self, org: str) -> Pending:
        s = self.s
        case = s.w.inbound_cases[org].pop(0)
        event = doc.epcis_event("EPCIS_RECEIVE", s.g, org, [case[0]], s.calendar_ns)
        return Pending(encode_tx("EPCIS_RECEIVE", parents=[case[0]],
                                 event_hash=s.event_hash(event)), "EPCIS_RECEIVE",
                       lambda _: s.w.cases.setdefault(org, []).append(case),
                       lambda _: s.w.inbound_cases[org].append(case))

    def unpack(self, org: str) -> Pending:
        s = self.s
        case = s.w.cases[org].pop(-1)
        parent, epcs = case
        event = doc.epcis_aggregation_event(s.g, org, parent, list(epcs), s.calendar_ns,
                                            pack=False)
        return Pending(encode_tx("EPCIS_DISAGGREGATE", parent=parent,
                                 event_hash=s.event_hash(event)), "EPCIS_DISAGGREGATE",
                       lambda _: s.w.stock_at(org).extend(epcs),
                       lambda _: s.w.cases[org].append(case))

    # -- returns ------------------------------------------------------------------------------

    def returnable(self, org: str) -> list[str]:
        """Stock of `org` from a recalled or quarantined lot, from one sender (up to a case)."""
        w = self.s.w
        stock = [e for e in w.stock.get(org, [])
                 if self._blocked(w.lot_of[e]) and w.came_from.get(e, org) != org]
        if not stock:
            return []
        origin = w.came_from[stock[0]]
        return [e for e in stock if w.came_from[e] == origin][:CASE_SIZE]

    def return_units(self, org: str, reason: str | None = None) -> Pending:
        s = self.s
        epcs = self.returnable(org)
        to = s.w.came_from[epcs[0]]
        lot = s.w.lot_of[epcs[0]]
        why = reason or ("recalled" if lot in s.w.recalled else "quarantined")
        pool = s.w.stock[org]
        for e in epcs:
            pool.remove(e)
        event = doc.epcis_event("EPCIS_RETURN", s.g, org, epcs, s.calendar_ns, to=to)

        def ok(_: bytes) -> None:
            s.w.inbound.setdefault(to, []).append(tuple(epcs))
            s.story.setdefault("returns", {}).setdefault(why, 0)
            s.story["returns"][why] += len(epcs)

        return Pending(encode_tx("EPCIS_RETURN", epcs=epcs, to=to, reason=why,
                                 event_hash=s.event_hash(event)), "EPCIS_RETURN", ok,
                       lambda _: pool.extend(epcs))

    # -- cold chain and signals ---------------------------------------------------------------

    def excursion_tx(self, org: str, lot: str, reading: str) -> Pending:
        """COLD_CHAIN_EXCURSION: a sensor at `org` read `reading` °C for `lot`."""
        s = self.s
        storage = s.w.storage[lot]
        stock = s.w.stock.get(org)
        held = [] if stock is None else stock.of_lot(lot, CASE_SIZE)
        event = doc.epcis_sensor_event(s.g, org, held, s.calendar_ns, reading, storage)
        entry = ("lot", lot)

        def ok(_: bytes) -> None:
            if entry not in s.w.suspects:
                s.w.suspects.append(entry)

        return Pending(encode_tx("COLD_CHAIN_EXCURSION", lot=lot, reading=reading,
                                 event_hash=s.event_hash(event)), "COLD_CHAIN_EXCURSION", ok)

    def warm_lots(self, org: str) -> list[str]:
        """Lots with a storage range that `org` holds in stock and that are not blocked."""
        w = self.s.w
        stock = w.stock.get(org)
        return [] if stock is None else sorted(
            lot for lot in stock.lots() if lot in w.storage and not self._blocked(lot))

    def excursion(self, org: str) -> Pending:
        s = self.s
        lot = s.pick(self.warm_lots(org))
        high = float(s.w.storage[lot][1])
        return self.excursion_tx(org, lot, f"{high + 1 + s.rng.randrange(80) / 10:.1f}")

    def close_review(self) -> Pending:
        review_id = self.s.w.signals.pop(0)
        return Pending(encode_tx("AE_REVIEW_CLOSE", review_id=review_id, outcome="monitoring"),
                       "AE_REVIEW_CLOSE")
