"""Supply-chain transactions: GTINs, lots, shipping, receiving, dispensing, verification,
recalls and suspect products.

Why this exists: the drug supply chain (DSCSA-style serialisation, GS1 EPCIS 2.0 events)
is half of the ledger's traffic, and its transactions only make sense in order: a
manufacturer registers its GTIN before it commissions lots, ships only what it holds, and
the custodians a recalled lot reached must acknowledge the recall before the regulator can
close it. Each builder here takes what the world says is possible now, reserves it (stock
leaves the pool while the shipment is in flight) and returns a `Pending` whose callbacks
learn or undo.

What it must not know: who may call a builder, and when (the coordinator,
medbft/traffic/ledger.py, asks by role). Off-chain EPCIS events go through
`TrafficState.event_hash`.
"""

from __future__ import annotations

from collections.abc import Iterator

from node.ledger import documents as doc
from node.ledger.txs import encode_tx, gtin_check_digit

from .world import Pending, TrafficState

__all__ = ["LOT_SIZE", "SHIP_MAX", "SupplyChain"]

LOT_SIZE = 12
SHIP_MAX = 6
#: The storage range a cold-chain flow's manufacturers state for their lots (°C): a
#: refrigerated vaccine.
COLD_RANGE = ("2.0", "8.0")


class SupplyChain:
    """Builders of the supply-chain transactions, on the shared traffic state."""

    def __init__(self, state: TrafficState) -> None:
        self.s = state

    # -- products and their movements ---------------------------------------------------------

    def gtin_register(self, org: str) -> Pending:
        s = self.s
        body = "0" + s.g.company_prefix[org] + "00001"
        gtin = body + gtin_check_digit(body)
        s.w.gtin_pending.add(org)

        def ok(_: bytes) -> None:
            s.w.gtin[org] = gtin

        return Pending(encode_tx("GTIN_REGISTER", gtin=gtin), "GTIN_REGISTER", ok,
                       lambda _: s.w.gtin_pending.discard(org))

    def has_own_lot(self, org: str) -> bool:
        """Whether `org` made a lot that is not recalled (stops at the first: no sort)."""
        w = self.s.w
        return any(o == org and lot not in w.recalled for lot, (_, _, o) in w.lots.items())

    def own_lots(self, org: str) -> list[str]:
        w = self.s.w
        return [lot for lot, (_, _, o) in sorted(w.lots.items())
                if o == org and lot not in w.recalled]

    def commission(self, org: str, storage: tuple[str, str] | None = None) -> Pending:
        """Commission a lot; with `storage` (°C) the lot states its storage range."""
        s = self.s
        gtin, prefix = s.w.gtin[org], s.g.company_prefix[org]
        lot = f"LOT-{prefix}-{s.ids + 1}"
        expiry = doc.iso_time(s.calendar_ns + 400 * 86_400 * 10**9)[:10]
        epcs = [doc.sgtin(prefix, "000001", s.new_id("s")[2:]) for _ in range(LOT_SIZE)]
        event = doc.epcis_event("EPCIS_COMMISSION", s.g, org, epcs, s.calendar_ns,
                                lot=lot, expiry=expiry, storage=storage)
        ranged = {} if storage is None else {"temp_min": storage[0], "temp_max": storage[1]}

        def ok(_: bytes) -> None:
            s.w.lots[lot] = (gtin, expiry, org)
            s.w.exposure.setdefault(lot, set()).add(org)
            for e in epcs:
                s.w.lot_of[e] = lot
            s.w.stock_at(org).extend(epcs)
            s.w.known_epcs.extend(epcs[:2])
            if storage is not None:
                s.w.storage[lot] = storage

        return Pending(encode_tx("EPCIS_COMMISSION", gtin=gtin, epcs=epcs, lot=lot,
                                 expiry=expiry, event_hash=s.event_hash(event), **ranged),
                       "EPCIS_COMMISSION", ok)

    def ship(self, org: str, stock: Iterator[str]) -> Pending:
        s = self.s
        kinds = ("distributor", "pharmacy", "hospital") if s.g.orgs[org] == "manufacturer" \
            else ("pharmacy", "hospital")
        targets = [o for o in s.orgs_of_type(*kinds) if o != org]
        to = s.pick(targets)
        # A shipment takes units of one lot, the first movable unit's, in stock order. Every
        # unit of that lot is movable (a lot is recalled whole), so none comes before it.
        lot = s.w.lot_of[next(stock)]
        pool = s.w.stock[org]
        epcs = pool.of_lot(lot, s.rng.randint(1, SHIP_MAX))
        for e in epcs:
            pool.remove(e)
        biz = f"urn:epcglobal:cbv:bt:{doc.org_prefix(s.g, org)}000005:DES-{s.ids + 1}"
        event = doc.epcis_event("EPCIS_SHIP", s.g, org, epcs, s.calendar_ns, to=to,
                                biz_tx=biz)

        def ok(_: bytes) -> None:
            s.w.inbound.setdefault(to, []).append(tuple(epcs))
            s.w.exposure.setdefault(lot, set()).add(to)
            for e in epcs:
                s.w.came_from[e] = org

        return Pending(encode_tx("EPCIS_SHIP", epcs=epcs, to=to, biz_tx=biz,
                                 event_hash=s.event_hash(event)), "EPCIS_SHIP", ok,
                       lambda _: pool.extend(epcs))

    def receive(self, org: str) -> Pending:
        s = self.s
        epcs = list(s.w.inbound[org].pop(0))
        event = doc.epcis_event("EPCIS_RECEIVE", s.g, org, epcs, s.calendar_ns)

        def ok(_: bytes) -> None:
            s.w.stock_at(org).extend(epcs)

        return Pending(encode_tx("EPCIS_RECEIVE", epcs=epcs, event_hash=s.event_hash(event)),
                       "EPCIS_RECEIVE", ok,
                       lambda _: s.w.inbound[org].append(tuple(epcs)))

    def dispense(self, org: str, epc: str) -> Pending:
        s = self.s
        s.w.stock[org].remove(epc)
        event = doc.epcis_event("EPCIS_DISPENSE", s.g, org, [epc], s.calendar_ns)
        pool = s.w.held_at(org)
        return Pending(encode_tx("EPCIS_DISPENSE", epcs=[epc],
                                 event_hash=s.event_hash(event)),
                       "EPCIS_DISPENSE", lambda _: pool.append(epc),
                       lambda _: s.w.stock[org].append(epc))

    def verify(self) -> Pending:
        s = self.s
        epc = s.pick(s.w.known_epcs)
        lot = s.w.lot_of[epc]
        return Pending(encode_tx("PRODUCT_VERIFY", epc=epc, lot=lot,
                                 expiry=s.w.lots[lot][1]), "PRODUCT_VERIFY")

    # -- recalls ------------------------------------------------------------------------------

    def recall(self, org: str) -> Pending:
        """The manufacturer recalls its most administered lot still on the market."""
        lots = self.own_lots(org)
        lot = max(lots, key=lambda x: (self.s.w.administered.get(x, 0), x))
        return self.recall_tx(lot)

    def recall_tx(self, lot: str) -> Pending:
        """RECALL_ISSUE of `lot` (class I); on commit, custodians that held it must ack."""
        s = self.s
        recall_id = s.new_id("recall")
        on_commit = getattr(s, "recall_news", "submitted") == "committed"
        if not on_commit:
            s.w.recalled.add(lot)

        def ok(_: bytes) -> None:
            if on_commit:
                s.w.recalled.add(lot)
            s.w.recalls[recall_id] = ((lot,), set(s.w.exposure.get(lot, ())), set())
            s.story.setdefault("recalls", []).append(
                {"recall_id": recall_id, "lot": lot, "committed_s": s.now_ns / 1e9})

        return Pending(encode_tx("RECALL_ISSUE", recall_id=recall_id, gtin=s.w.lots[lot][0],
                                 lots=[lot], reason="contamination", **{"class": "I"}),
                       "RECALL_ISSUE", ok, lambda _: s.w.recalled.discard(lot))

    def recall_ack(self, org: str, recall_id: str) -> Pending:
        w = self.s.w
        lots, _exposed, acked = w.recalls[recall_id]
        stock = w.stock.get(org)
        on_hand = 0 if stock is None else sum(stock.count_of_lot(x) for x in dict.fromkeys(lots))
        on_hand += sum(1 for shipment in w.inbound.get(org, []) for e in shipment
                       if w.lot_of[e] in lots)
        acked.add(org)
        return Pending(encode_tx("RECALL_ACK", recall_id=recall_id, on_hand=on_hand),
                       "RECALL_ACK", on_fail=lambda _: acked.discard(org))

    def recall_close(self, recall_id: str) -> Pending:
        s = self.s
        lots, exposed, acked = s.w.recalls.pop(recall_id)

        def ok(_: bytes) -> None:
            for entry in s.story.get("recalls", []):
                if entry["recall_id"] == recall_id:
                    entry["closed_s"] = s.now_ns / 1e9

        def failed(_: bytes) -> None:
            s.w.recalls.setdefault(recall_id, (lots, exposed, acked))

        return Pending(encode_tx("RECALL_CLOSE", recall_id=recall_id), "RECALL_CLOSE", ok,
                       failed)

    # -- suspect products ---------------------------------------------------------------------

    def suspect_flag(self) -> Pending:
        s = self.s
        flagged = {value for _, value in s.w.suspects}
        lot = s.pick(sorted(x for x in s.w.lots if x not in flagged))
        entry = ("lot", lot)
        s.w.suspects.append(entry)

        def failed(_: bytes) -> None:
            if entry in s.w.suspects:
                s.w.suspects.remove(entry)

        return Pending(encode_tx("SUSPECT_FLAG", lot=lot, basis="inspection"), "SUSPECT_FLAG",
                       on_fail=failed)

    def suspect_clear(self) -> Pending:
        key, value = self.s.w.suspects.pop(0)
        return Pending(encode_tx("SUSPECT_CLEAR", **{key: value}), "SUSPECT_CLEAR")
