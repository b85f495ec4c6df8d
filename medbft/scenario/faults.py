"""Fault entries: what a scenario injects, when, and into which nodes.

A scenario's ``faults`` list is a timeline of single-action mappings (``{at: 3s, crash:
hospital-1}``). This module declares one model per action, the target forms they accept
(a node id, ``primary``, ``{role: ...}``, ``{random: k}``), the Byzantine behaviours
(sim/byzantine.py implements them) and the checks on each entry on its own: exactly one known
action, ``until`` after ``at``. Checks against the rest of the scenario (does the node exist, is
the time before the end of the run) need the whole file and live in ``model``.

Adding a fault kind: subclass ``FaultSpec`` with ``action: ClassVar[str] = '<key>'``, a field whose
alias is the action key, override ``node_refs``/``times`` if it names nodes or has ``until``
(``targets`` if it takes a target form), and add it to ``FAULT_KINDS`` and ``AnyFault`` (the
discriminated union keyed by which action key is present).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Union

from pydantic import Discriminator, Field, PlainSerializer, Tag, model_validator

from medbft.scenario.base import _Spec
from medbft.scenario.errors import Loc, _fail, _show
from medbft.scenario.fields import (
    NODE_ID_RE,
    DurationNs,
    Probability,
    _int_at_least,
    _leaf,
    _node_id,
    _positive_duration,
    _role,
)
from medbft.scenario.specs import LinkSpec
from medbft.units import format_duration_ns

__all__ = [
    "BEHAVIORS",
    "FAULT_KINDS",
    "LEDGER_BEHAVIORS",
    "PLANNED_FAULT_KINDS",
    "AnyFault",
    "ByzantineFault",
    "CrashFault",
    "FaultSpec",
    "HealFault",
    "IsolateFault",
    "LinkChangeSpec",
    "LinkFault",
    "PartitionFault",
    "RecoverFault",
    "RequestFault",
    "SlowFault",
    "TamperFault",
]

#: Fault actions we plan to support; using one now gives "not supported yet" instead of "unknown".
PLANNED_FAULT_KINDS: tuple[str, ...] = ()
#: Byzantine behaviours (sim/byzantine.py) -> the parameters each takes, with an example.
BEHAVIORS: dict[str, tuple[tuple[str, ...], str]] = {
    "silent": ((), "silent"),
    "equivocate": ((), "equivocate"),
    "corrupt-digest": ((), "corrupt-digest"),
    "forge": ((), "forge"),
    "replay": (("every",), "{replay: {every: 50ms}}"),
    "slow-primary": (("delay",), "{slow-primary: {delay: 400ms}}"),
    "censor": (("clients",), "{censor: {clients: [client-1]}}"),
    "premature-view-change": (("every",), "{premature-view-change: {every: 1s}}"),
    # Ledger-aware (they need workload.app: ledger; docs/harm.md):
    "censor-kind": (("kinds",), "{censor-kind: {kinds: [RECALL_ISSUE]}}"),
    "front-run-revoke": (("hold",), "{front-run-revoke: {hold: 200ms}}"),
    "delay-regulator": (("delay", "roles"), "{delay-regulator: {delay: 450ms}}"),
    "false-reply": (("lies",), "{false-reply: {lies: [permit, paid, released]}}"),
}
#: What a `false-reply` replica lies about (sim/byzantine.py): an access `deny:` told as
#: `permit:` (the default), a claim adjudication the ledger did not pay told as `ok:paid`, a
#: suppressed research answer told as released.
FALSE_REPLY_LIES: tuple[str, ...] = ("permit", "paid", "released")
#: The behaviours that read ledger transactions (a key-value run has none to read).
LEDGER_BEHAVIORS: tuple[str, ...] = ("censor-kind", "front-run-revoke", "delay-regulator",
                                     "false-reply")
#: Behaviours whose parameters are required (the rest have defaults).
_REQUIRED: dict[str, tuple[str, ...]] = {"censor-kind": ("kinds",)}

#: Prefix of the union tag naming each fault kind; stripped from error paths (``loading``).
_FAULT_TAG = "fault:"


class FaultSpec(_Spec):
    """Base of all fault actions: something happens to the system at ``at_ns``."""

    action: ClassVar[str] = ""

    at_ns: DurationNs = Field(alias="at")

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("at") is None:
            _fail((("at",), f"missing; every fault needs a time, e.g. "
                            f"{{at: 3s, {cls.action}: hospital-1}}"))
        return data

    def times(self) -> tuple[tuple[str, int], ...]:
        """(field, ns) for every instant this fault names; checked against the run's end."""
        return (("at", self.at_ns),)

    def node_refs(self) -> tuple[tuple[Loc, str], ...]:
        """(relative path, node id) for every node this fault names; checked to exist."""
        return ()


def _target(value: Any) -> str:
    """A fault target: a node id, ``primary``, ``{role: pharmacy}`` or ``{random: 2}``.
    Normalised to the text forms ``hospital-1``, ``primary``, ``role:pharmacy``, ``random:2``."""
    hint = ("expected a node id such as hospital-1, primary (whoever is primary then), "
            "{role: pharmacy} or {random: 2}")
    if isinstance(value, Mapping) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "role":
            return f"role:{_role(arg)}"
        if key == "random":
            return f"random:{_int_at_least(1, '1')(arg)}"
        raise ValueError(f"{hint}; got {_show(value)}")
    if isinstance(value, str):
        if value == "primary":
            return value
        if value.startswith("role:"):
            return f"role:{_role(value[5:])}"
        if value.startswith("random:"):
            count = value[7:]
            return f"random:{_int_at_least(1, '1')(int(count) if count.isdigit() else count)}"
        return _node_id(value)
    raise ValueError(f"{hint}; got {_show(value)}")


def _target_json(value: str) -> Any:
    kind, _, arg = value.partition(":")
    if kind == "role":
        return {"role": arg}
    if kind == "random":
        return {"random": int(arg)}
    return value


Target = Annotated[str, _leaf(_target), PlainSerializer(_target_json, when_used="json")]


def _is_node_id(target: str) -> bool:
    return target != "primary" and ":" not in target


class _WindowFault(FaultSpec):
    """A fault with an optional end: ``until`` (absent: until a later heal/recover, or the end)."""

    until_ns: DurationNs | None = Field(None, alias="until")

    def times(self) -> tuple[tuple[str, int], ...]:
        return super().times() + ((("until", self.until_ns),) if self.until_ns is not None
                                  else ())

    @model_validator(mode="after")
    def _check_until(self) -> _WindowFault:
        if self.until_ns is not None and self.until_ns <= self.at_ns:
            _fail((("until",), f"must be after at ({format_duration_ns(self.at_ns)}); "
                               f"got {format_duration_ns(self.until_ns)}"))
        return self

    def targets(self) -> tuple[tuple[Loc, str], ...]:
        """(relative path, target) for every target of this fault (checked against nodes)."""
        return ()


class CrashFault(_WindowFault):
    """``{at: 3s, crash: hospital-1, until: 6s}``: the node stops (keeps its durable state),
    and restarts at ``until`` when given. Targets: a node, primary, {role}, {random: k}."""

    action: ClassVar[str] = "crash"

    node: Target = Field(alias="crash")

    def targets(self) -> tuple[tuple[Loc, str], ...]:
        return ((("crash",), self.node),)


class RecoverFault(_WindowFault):
    """``{at: 6s, recover: hospital-1}``: crashed nodes restart (targets as for crash)."""

    action: ClassVar[str] = "recover"

    node: Target = Field(alias="recover")

    def targets(self) -> tuple[tuple[Loc, str], ...]:
        return ((("recover",), self.node),)


def _groups(value: Any) -> tuple[tuple[str, ...], ...]:
    hint = "expected a list of node groups such as [[hospital-1, hospital-2], [pharmacy-1]]"
    if not isinstance(value, list | tuple) or len(value) < 2:
        raise ValueError(f"{hint} (two groups or more); got {_show(value)}")
    groups = []
    for group in value:
        if not isinstance(group, list | tuple) or not group:
            raise ValueError(f"{hint}; got a group {_show(group)}")
        groups.append(tuple(_node_id(n) for n in group))
    flat = [n for g in groups for n in g]
    if len(set(flat)) != len(flat):
        raise ValueError(f"a node may be in one group only; got {_show(value)}")
    return tuple(groups)


class PartitionFault(_WindowFault):
    """``{at: 2s, partition: [[a, b], [c, d]], until: 5s}``: messages between groups are lost.
    Nodes not listed form one more group together. Clients still reach every node."""

    action: ClassVar[str] = "partition"

    groups: Annotated[tuple[tuple[str, ...], ...], _leaf(_groups)] = Field(alias="partition")

    def node_refs(self) -> tuple[tuple[Loc, str], ...]:
        return tuple((("partition", i, j), n) for i, g in enumerate(self.groups)
                     for j, n in enumerate(g))


class IsolateFault(_WindowFault):
    """``{at: 2s, isolate: regulator-1, until: 4s}``: every message to or from the node is
    lost (clients included)."""

    action: ClassVar[str] = "isolate"

    node: Target = Field(alias="isolate")

    def targets(self) -> tuple[tuple[Loc, str], ...]:
        return ((("isolate",), self.node),)


def _heal_what(value: Any) -> str:
    if value != "all":
        raise ValueError(f"expected all (heal: all ends every partition, isolation and link "
                         f"fault); got {_show(value)}")
    return "all"


class HealFault(FaultSpec):
    """``{at: 5s, heal: all}``: ends every partition, isolation and link fault."""

    action: ClassVar[str] = "heal"

    what: Annotated[str, _leaf(_heal_what)] = Field(alias="heal")


class LinkChangeSpec(LinkSpec):
    """A link fault's mapping: LinkSpec plus duplication and reordering probabilities."""

    _EXAMPLE = "{between: [hospital-1, regulator-1], latency: 200ms, loss: 0.1}"

    duplicate: Probability | None = None
    reorder: Probability | None = None

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        if all(data.get(k) is None for k in ("duplicate", "reorder")):
            return super()._prepare(data)
        # LinkSpec insists on one of latency/bandwidth/loss; duplicate or reorder suffice here.
        probe = {**data, "loss": data.get("loss") if data.get("loss") is not None else 0.0}
        super()._prepare(probe)
        rest = {k: v for k, v in data.items() if k != "between"}
        return {**rest, "from": probe["from"], "to": probe["to"], "both": probe["both"]}


class LinkFault(_WindowFault):
    """``{at: 1s, link: {between: [a, b], latency: 200ms, loss: 0.2, duplicate: 0.1,
    reorder: 0.1, bandwidth: 1Mbps}, until: 4s}``: degrades a link (``from``/``to``: one way)."""

    action: ClassVar[str] = "link"

    change: LinkChangeSpec = Field(alias="link")


class SlowFault(_WindowFault):
    """``{at: 1s, slow: hospital-1, factor: 10, until: 3s}``: its CPU runs ten times slower
    (only visible with a CPU model: with ``cpu: none`` processing is free anyway)."""

    action: ClassVar[str] = "slow"

    node: Target = Field(alias="slow")
    factor: Annotated[float, _leaf(lambda v: _positive_factor(v))] = 10.0

    def targets(self) -> tuple[tuple[Loc, str], ...]:
        return ((("slow",), self.node),)


def _positive_factor(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"expected a positive factor such as 10; got {_show(value)}")
    return float(value)


def _behavior(value: Any) -> dict[str, Any]:
    names = ", ".join(BEHAVIORS)
    if isinstance(value, str):
        value = {value: {}}
    if not (isinstance(value, Mapping) and len(value) == 1):
        raise ValueError(f"expected a behavior, one of: {names}; or a mapping such as "
                         f"{{slow-primary: {{delay: 400ms}}}}; got {_show(value)}")
    ((name, params),) = value.items()
    if name not in BEHAVIORS:
        guess = difflib.get_close_matches(str(name), list(BEHAVIORS), n=1)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        raise ValueError(f"unknown behavior {name!r}; {hint}allowed: {names}")
    allowed, example = BEHAVIORS[name]
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise ValueError(f"behavior {name} takes a mapping of parameters, e.g. {example}")
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise ValueError(f"behavior {name} has no parameter {unknown[0]!r}; allowed: "
                         f"{', '.join(allowed) or 'none'}; e.g. {example}")
    missing = [k for k in _REQUIRED.get(name, ()) if k not in params]
    if missing:
        raise ValueError(f"behavior {name} needs {missing[0]}; e.g. {example}")
    out: dict[str, Any] = {}
    for key, raw in params.items():
        if key in ("delay", "every", "hold"):
            out[key] = _positive_duration(raw)
        elif key == "kinds":
            out[key] = _tx_kinds(raw)
        elif key == "roles":
            out[key] = _client_roles(raw)
        elif key == "lies":
            out[key] = _lies(raw)
        elif key == "clients":
            if not isinstance(raw, list | tuple) or not all(
                    isinstance(c, str) and NODE_ID_RE.fullmatch(c) for c in raw):
                raise ValueError(f"clients: expected a list of client ids such as "
                                 f"[client-1, patient-2]; got {_show(raw)}")
            out[key] = list(raw)
    return {"name": name, **out}


def _tx_kinds(raw: Any) -> list[str]:
    from node.ledger.txs import SCHEMA

    if not isinstance(raw, list | tuple) or not raw:
        raise ValueError(f"kinds: expected a list of transaction kinds such as "
                         f"[RECALL_ISSUE, CONSENT_REVOKE]; got {_show(raw)}")
    for kind in raw:
        if not isinstance(kind, str) or kind not in SCHEMA:
            guess = difflib.get_close_matches(str(kind), list(SCHEMA), n=1)
            hint = f"did you mean {guess[0]!r}? " if guess else ""
            raise ValueError(f"kinds: unknown transaction kind {_show(kind)}; {hint}allowed: "
                             f"{', '.join(sorted(SCHEMA))}")
    return list(raw)


def _lies(raw: Any) -> list[str]:
    """false-reply's `lies`: a non-empty list drawn from FALSE_REPLY_LIES, each once."""
    if not isinstance(raw, list | tuple) or not raw or len(set(map(str, raw))) != len(raw) \
            or not all(isinstance(x, str) and x in FALSE_REPLY_LIES for x in raw):
        raise ValueError(f"lies: expected a list of what to lie about, each once, from "
                         f"{', '.join(FALSE_REPLY_LIES)}; got {_show(raw)}")
    return list(raw)


def _client_roles(raw: Any) -> list[str]:
    from node.ledger.roles import CLIENT_ROLES

    if not isinstance(raw, list | tuple) or not raw or not all(
            isinstance(r, str) and r in CLIENT_ROLES for r in raw):
        raise ValueError(f"roles: expected a list of client roles, each one of "
                         f"{', '.join(CLIENT_ROLES)}; got {_show(raw)}")
    return list(raw)


def _behavior_json(value: dict[str, Any]) -> Any:
    params = {k: (format_duration_ns(v) if k in ("delay", "every", "hold") else v)
              for k, v in value.items() if k != "name"}
    return {value["name"]: params} if params else value["name"]


Behavior = Annotated[dict[str, Any], _leaf(_behavior),
                     PlainSerializer(_behavior_json, when_used="json")]


class ByzantineFault(_WindowFault):
    """``{at: 1s, byzantine: hospital-1, behavior: equivocate, until: 5s}``: the node's
    replica stays honest inside, but what it sends (and when) is rewritten by the behaviour.
    Nodes given the same behaviour collude."""

    action: ClassVar[str] = "byzantine"

    node: Target = Field(alias="byzantine")
    behavior: Behavior

    def targets(self) -> tuple[tuple[Loc, str], ...]:
        return ((("byzantine",), self.node),)


class RequestFault(FaultSpec):
    """``{at: 2s, request: client-1}``: that client sends one request more, at ``at``, in a
    session of its own (its usual traffic goes on as before). `medbft studio` records its
    "send a client request" action this way."""

    action: ClassVar[str] = "request"

    client: Annotated[str, _leaf(_node_id)] = Field(alias="request")


def _tamper_target(value: Any) -> str:
    from medbft.harm import TAMPER_TARGETS

    if value not in TAMPER_TARGETS:
        raise ValueError(f"expected what to alter, one of: {', '.join(TAMPER_TARGETS)} "
                         f"(the replica's audit log, block headers or state tables); "
                         f"got {_show(value)}")
    return str(value)


class TamperFault(FaultSpec):
    """``{at: 2s, tamper: hospital-2, target: audit}``: alters that replica's stored ledger
    (``audit``: an audit entry's decision; ``blocks``: a block header; ``state``: a table row)
    and recomputes the chain head, as an insider covering their tracks would. The replica is
    faulty from then on. Its next checkpoint disagrees with the quorum's, so it notices and
    repairs its state by state transfer (docs/harm.md). Needs workload.app: ledger."""

    action: ClassVar[str] = "tamper"

    node: Target = Field(alias="tamper")
    target: Annotated[str, _leaf(_tamper_target)] = Field(alias="target")

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        data = super()._prepare(data)
        if data.get("target") is None:
            _fail((("target",), "missing; expected what to alter: audit, blocks or state, "
                                "e.g. {at: 2s, tamper: hospital-2, target: audit}"))
        return data

    def targets(self) -> tuple[tuple[Loc, str], ...]:
        return ((("tamper",), self.node),)


#: Implemented fault actions: action key -> class.
FAULT_KINDS: dict[str, type[FaultSpec]] = {c.action: c for c in (
    CrashFault, RecoverFault, PartitionFault, IsolateFault, HealFault, LinkFault,
    SlowFault, ByzantineFault, RequestFault, TamperFault)}


def _fault_tag(value: Any) -> str | None:
    if isinstance(value, FaultSpec):
        return _FAULT_TAG + value.action
    if isinstance(value, Mapping):
        kinds = [key for key in value if key in FAULT_KINDS]
        if len(kinds) == 1:
            return _FAULT_TAG + kinds[0]
    return None


AnyFault = Annotated[
    Union[  # noqa: UP007 - one Tag per kind; add new kinds here and in FAULT_KINDS
        Annotated[CrashFault, Tag(_FAULT_TAG + "crash")],
        Annotated[RecoverFault, Tag(_FAULT_TAG + "recover")],
        Annotated[PartitionFault, Tag(_FAULT_TAG + "partition")],
        Annotated[IsolateFault, Tag(_FAULT_TAG + "isolate")],
        Annotated[HealFault, Tag(_FAULT_TAG + "heal")],
        Annotated[LinkFault, Tag(_FAULT_TAG + "link")],
        Annotated[SlowFault, Tag(_FAULT_TAG + "slow")],
        Annotated[ByzantineFault, Tag(_FAULT_TAG + "byzantine")],
        Annotated[RequestFault, Tag(_FAULT_TAG + "request")],
        Annotated[TamperFault, Tag(_FAULT_TAG + "tamper")],
    ],
    Discriminator(_fault_tag),
]


def _check_fault_entries(value: Any) -> Any:
    """Each fault is a mapping with ``at`` and exactly one known action key."""
    example = "{at: 3s, crash: hospital-1}"
    if not isinstance(value, list | tuple):
        _fail(((), f"expected a list of faults such as [{example}]; got {_show(value)}"))
    allowed = ", ".join(FAULT_KINDS)
    problems: list[tuple[Loc, str]] = []
    for i, entry in enumerate(value):
        if isinstance(entry, FaultSpec):
            continue
        if not isinstance(entry, Mapping):
            problems.append(((i,), f"expected a mapping such as {example}; got {_show(entry)}"))
            continue
        kinds = [k for k in entry if k in FAULT_KINDS]
        others = [str(k) for k in entry if k not in FAULT_KINDS
                  and k not in ("at", "until", "factor", "behavior", "target")]
        if len(kinds) > 1:
            problems.append(((i,), f"one action per fault; got {' and '.join(kinds)}: split them "
                                   f"into separate entries"))
        elif not kinds:
            planned = [k for k in others if k in PLANNED_FAULT_KINDS]
            if planned:
                problems.append(((i, planned[0]), f"fault action {planned[0]!r} is not supported "
                                                  f"yet; supported actions: {allowed}"))
            elif len(others) == 1:
                problems.append(((i, others[0]), f"unknown fault action {others[0]!r}; allowed "
                                                 f"actions: {allowed}, e.g. {example}"))
            else:
                problems.append(((i,), f"no fault action found; expected exactly one of: "
                                       f"{allowed}, e.g. {example}"))
    if problems:
        _fail(*problems)
    return value
