"""The rules for the deeper supply chain issue 16 added: cases (EPCIS 2.0 AggregationEvents),
returns, cold-chain excursions, and the regulator's review of a serious adverse-event signal.

Why this exists: medicines travel in cases and pallets, not one serial at a time; they come
back (damaged, recalled, overstocked); a vaccine that warmed up in transit is no longer safe
to give; and a serious adverse event must reach the regulator as a task, not as a row nobody
reads. Here a custodian packs units into a case named by an SSCC (`EPCIS_AGGREGATE`) and the
units then move with the case (shipping or receiving the case moves every unit in it, and a
packed unit cannot move on its own) until it is unpacked (`EPCIS_DISAGGREGATE`); a custodian
returns units to an organisation that held them before (`EPCIS_RETURN`, CBV bizStep
`returning`, disposition `returned`), recalled or quarantined ones included; a sensor reading
outside the storage range the manufacturer stated for the lot (`COLD_CHAIN_EXCURSION`, an
EPCIS sensorReport) quarantines the whole lot, so nothing of it is shipped, dispensed or
administered until the regulator clears it; and the regulator closes the review that a
severe or fatal adverse-event report opened (`AE_REVIEW_CLOSE`).
docs/ledger.md#cold-chain-aggregation-and-returns and #adverse-event-signals.

Must not know: the wall clock, randomness, the network (as rules.py).
"""

from __future__ import annotations

from collections.abc import Callable

from node.ledger.rules import (
    MOVABLE,
    Ctx,
    _celsius_tenths,
    _event,
    _need,
    _not_packed,
    _units,
)

__all__ = ["LOGISTICS_HANDLERS", "holds_lot"]


def epcis_aggregate(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    parent = tx["parent"]
    _need(st.get("cases", parent) is None, "sscc-reused")  # GS1: an SSCC names one case
    rows = _units(ctx, tx["epcs"])
    _not_packed(ctx, tx["epcs"])
    for _, row in rows:
        _need(row[2] == ctx.party.org, "not-custodian")
        _need(row[3] in MOVABLE, f"bad-lifecycle:{row[3]}")
    children = tuple(sorted(tx["epcs"]))
    st.put("cases", parent, (ctx.party.org, children, "packed", ctx.pos, None))
    for epc in children:
        st.put("case_of", epc, (parent,))
    _event(ctx, children, parent)
    return b"ok"


def epcis_disaggregate(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    case = st.get("cases", tx["parent"])
    _need(case is not None and case[2] == "packed", "unknown-case")
    assert case is not None
    rows = _units(ctx, list(case[1]))
    for _, row in rows:
        _need(row[2] == ctx.party.org, "not-custodian")
        _need(row[3] in MOVABLE, f"bad-lifecycle:{row[3]}")
    st.put("cases", tx["parent"], (*case[:2], "unpacked", case[3], ctx.pos))
    for epc in case[1]:
        st.put("case_of", epc, None)
    _event(ctx, case[1], tx["parent"])
    return b"ok"


def _held_before(ctx: Ctx, epc: str, org: str) -> bool:
    """Whether `org` commissioned or received `epc` before (a return goes upstream only)."""
    entries = ctx.st.events.entries
    return any(entries[n][3] == org and entries[n][2] in ("EPCIS_COMMISSION", "EPCIS_RECEIVE")
               for n in ctx.st.trace_idx.get(epc, ()))


def epcis_return(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    to = tx["to"]
    _need(to != ctx.party.org, "ship-to-self")
    _need(st.get("org_status", to) is None, "destination-suspended")
    rows = _units(ctx, tx["epcs"])
    _not_packed(ctx, tx["epcs"])
    for epc, row in rows:
        _need(row[2] == ctx.party.org, "not-custodian")
        _need(row[3] == "in_progress", f"bad-lifecycle:{row[3]}")
        _need(_held_before(ctx, epc, to), "not-upstream")
    for epc, row in rows:  # recalled and quarantined units may (should) go back
        st.put("units", epc, (*row[:3], "returned", to))
    _event(ctx, tx["epcs"], to)
    return b"ok"


def holds_lot(ctx: Ctx, lot: str, org: str) -> bool:
    """Whether `org` holds a unit of `lot` (in stock, or in transit from or to it)."""
    units = ctx.st.tables["units"]
    for epc in ctx.st.lot_units.get(lot, ()):
        row = units[epc]
        if (row[2] == org and row[3] in ("active", "in_progress", "in_transit", "returned")) \
                or (row[4] == org):
            return True
    return False


def cold_chain_excursion(ctx: Ctx) -> bytes:
    tx, st = ctx.tx, ctx.st
    lot = tx["lot"]
    _need(st.get("lots", lot) is not None, "unknown-lot")
    storage = st.get("lot_storage", lot)
    _need(storage is not None, "no-storage-range")
    assert storage is not None
    _need(holds_lot(ctx, lot, ctx.party.org), "not-holding-lot")
    reading = _celsius_tenths(tx["reading"])
    _need(not storage[0] <= reading <= storage[1], "within-range")
    key = "lot:" + lot
    quarantine = st.get("suspects", key) is None
    st.put("excursions", f"ex-{ctx.height}-{ctx.index}",
           (lot, reading, storage[0], storage[1], ctx.party.id, ctx.party.org,
            tx["event_hash"], ctx.pos, quarantine))
    if quarantine:
        st.put("suspects", key, ("cold-chain-excursion", ctx.party.id, ctx.pos, ctx.now_ns))
    return b"ok:quarantined" if quarantine else b"ok:already-quarantined"


def ae_review_close(ctx: Ctx) -> bytes:
    row = ctx.st.get("signals", ctx.tx["review_id"])
    _need(row is not None, "unknown-review")
    assert row is not None
    _need(row[4] == "open", "review-closed")
    ctx.st.put("signals", ctx.tx["review_id"], (*row[:4], "closed", ctx.tx["outcome"], ctx.pos))
    return b"ok"


LOGISTICS_HANDLERS: dict[str, Callable[[Ctx], bytes]] = {
    "EPCIS_AGGREGATE": epcis_aggregate, "EPCIS_DISAGGREGATE": epcis_disaggregate,
    "EPCIS_RETURN": epcis_return, "COLD_CHAIN_EXCURSION": cold_chain_excursion,
    "AE_REVIEW_CLOSE": ae_review_close,
}
