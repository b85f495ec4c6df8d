"""Which replicated state machine a network runs, by name.

Why this exists: every replica of a network must execute the same deterministic state
machine, so the network directory names it (`network.json: state_machine`) and each node
builds it here: `ledger`, the healthcare ledger (node/ledger, the default for new networks),
or `kv`, a key-value placeholder that protocol measurements use because its execution costs
next to nothing.

Real replicas stamp each batch with Unix-epoch nanoseconds (node/realtime.py), so a real
network's ledger genesis has epoch 0: block calendar time is the agreed timestamp itself. (The
simulator counts time from 0 and uses `DEFAULT_EPOCH_NS` instead.)
"""

from __future__ import annotations

import importlib
from typing import Any

from node.membership import Membership
from node.statemachine import KeyValueStore, StateMachine

__all__ = [
    "DEFAULT_STATE_MACHINE",
    "STATE_MACHINES",
    "healthcare_ledger",
    "key_value_store",
    "make_state_machine",
    "query_state",
]

STATE_MACHINES: dict[str, str] = {
    "ledger": "node.apps:healthcare_ledger",
    "kv": "node.apps:key_value_store",
}
"""name -> "module:factory", a callable taking the genesis `Membership` (the ledger derives
its genesis state, e.g. organisations and roles, from it: `LedgerGenesis.from_membership`)
and the calendar epoch. The one list of state machines: a scenario's `workload.app`, a
network directory's `state_machine` and the simulator's run-side apps (medbft/apps.py) all
name one of these."""

DEFAULT_STATE_MACHINE = "ledger"


def key_value_store(membership: Membership, epoch_ns: int = 0) -> StateMachine:
    """The key-value placeholder (ignores the membership and the calendar)."""
    return KeyValueStore()


def healthcare_ledger(membership: Membership, epoch_ns: int = 0) -> StateMachine:
    """The healthcare ledger, its genesis derived from the membership (client roles become
    ledger parties). `epoch_ns` is the calendar time of timestamp 0: 0 for real replicas,
    which stamp batches with Unix-epoch nanoseconds; the simulator's own epoch for virtual
    time."""
    from node.ledger.genesis import LedgerGenesis
    from node.ledger.ledger import Ledger

    return Ledger(LedgerGenesis.from_membership(membership, epoch_ns=epoch_ns))


def make_state_machine(name: str, membership: Membership, epoch_ns: int = 0) -> StateMachine:
    """A fresh state machine of kind `name` for a network of `membership` (`epoch_ns`: see
    `healthcare_ledger`). Raises ValueError for an unknown name."""
    target = STATE_MACHINES.get(name)
    if target is None:
        raise ValueError(f"unknown state machine {name!r}; known: {', '.join(STATE_MACHINES)}")
    module, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    return factory(membership, epoch_ns)  # type: ignore[no-any-return]


def query_state(sm: StateMachine, key: str) -> tuple[bool, Any]:
    """(found, value) for `key`: the machine's own `query(key)` when it has one, else a
    lookup in a key-value machine's `data`."""
    query = getattr(sm, "query", None)
    if callable(query):
        value = query(key)
        return value is not None, value
    data = getattr(sm, "data", None)
    if isinstance(data, dict) and key in data:
        return True, data[key]
    return False, None
