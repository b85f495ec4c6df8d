"""Which replicated state machine a network runs, by name.

Why this exists: every replica of a network must execute the same deterministic state
machine, so the network directory names it (`network.json: state_machine`) and each node
builds it here. The key-value placeholder is the default until the healthcare ledger lands
(issue #4); the ledger plugs in by adding one line to `STATE_MACHINES` (and becoming the
default for new networks), with no change to the node, storage or transports.
"""

from __future__ import annotations

import importlib
from typing import Any

from node.membership import Membership
from node.statemachine import KeyValueStore, StateMachine

__all__ = [
    "DEFAULT_STATE_MACHINE",
    "STATE_MACHINES",
    "key_value_store",
    "make_state_machine",
    "query_state",
]

STATE_MACHINES: dict[str, str] = {
    "kv": "node.apps:key_value_store",
}
"""name -> "module:factory", a callable taking the genesis `Membership` (the ledger derives
its genesis state, e.g. organisations and roles, from it: `LedgerGenesis.from_membership`)."""

DEFAULT_STATE_MACHINE = "kv"


def key_value_store(membership: Membership) -> StateMachine:
    """The key-value placeholder (ignores the membership)."""
    return KeyValueStore()


def make_state_machine(name: str, membership: Membership) -> StateMachine:
    """A fresh state machine of kind `name` for a network of `membership`. Raises ValueError
    for an unknown name."""
    target = STATE_MACHINES.get(name)
    if target is None:
        raise ValueError(f"unknown state machine {name!r}; known: {', '.join(STATE_MACHINES)}")
    module, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    return factory(membership)  # type: ignore[no-any-return]


def query_state(sm: StateMachine, key: str) -> tuple[bool, Any]:
    """(found, value) for `key`: the machine's own `query(key)` when it has one (the ledger
    will), else a lookup in a key-value machine's `data`."""
    query = getattr(sm, "query", None)
    if callable(query):
        value = query(key)
        return value is not None, value
    data = getattr(sm, "data", None)
    if isinstance(data, dict) and key in data:
        return True, data[key]
    return False, None
