"""The scenario's sections: nodes, network and links, protocol, CPU, workload and expectations.

Each section of the file is a mapping with its own fields, defaults, shorthands and cross-field
rules (a uniform latency needs ``low <= high``; a workload is closed loop *or* open loop, not
both). This module declares those mappings as frozen models on top of ``base._Spec`` and the leaf
types of ``fields``. It knows nothing of faults or of the whole scenario: checks that span
sections (a link naming an unknown node) are made in ``model``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, create_model, field_validator, model_validator

from medbft.scenario.base import _Spec
from medbft.scenario.errors import Loc, _fail, _show
from medbft.scenario.fields import (
    DISTRIBUTIONS,
    BandwidthBps,
    CostNs,
    Count,
    DistField,
    DurationNs,
    Endpoint,
    Flag,
    Fraction,
    NodeId,
    NonNegative,
    Probability,
    RatePerS,
    RoleField,
    SizeBytes,
    Whole,
    _as_duration,
    _duration_within,
    _endpoint_problem,
    _int_at_least,
    _leaf,
)
from medbft.units import parse_duration_ns
from node.apps import STATE_MACHINES
from node.config import SCENARIO_PARAMETERS, Parameter

__all__ = [
    "APPS",
    "LEDGER_ONLY",
    "CpuSpec",
    "ExpectSpec",
    "LatencySpec",
    "LinkSpec",
    "NetworkSpec",
    "NodeSpec",
    "ProtocolSpec",
    "RangeSpec",
    "WorkloadSpec",
]


class NodeSpec(_Spec):
    """One replica. ``nodes[0]`` is the primary of view 0."""

    _EXAMPLE = "{id: hospital-1, role: hospital}"

    id: NodeId
    role: RoleField


class LatencySpec(_Spec):
    """One-way message delay distribution; parameters are integer nanoseconds.

    ``constant``: value_ns; ``uniform``: low_ns..high_ns; ``normal``: mean_ns, std_ns (the
    simulator should truncate at 0); ``lognormal``: mean_ns, std_ns of the delay itself (see
    ``lognormal_params``); ``exponential``: mean_ns. Unused parameters are None.
    """

    dist: DistField
    value_ns: DurationNs | None = Field(None, alias="value")
    mean_ns: DurationNs | None = Field(None, alias="mean")
    std_ns: DurationNs | None = Field(None, alias="std")
    low_ns: DurationNs | None = Field(None, alias="low")
    high_ns: DurationNs | None = Field(None, alias="high")

    @classmethod
    def _input_keys(cls, data: Mapping[str, Any] | None) -> tuple[str, ...]:
        dist = data.get("dist") if data is not None else None
        if isinstance(dist, str) and dist in DISTRIBUTIONS:
            return ("dist", *DISTRIBUTIONS[dist][0])
        return super()._input_keys(data)

    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return data
        try:
            parse_duration_ns(data)
        except ValueError as exc:
            reason = ("a bare number is ambiguous; expected" if "bare number" in str(exc)
                      else "expected")
            _fail(((), f"{reason} a duration such as 10ms or a mapping "
                       f"{{dist: normal, mean: 10ms, std: 2ms}} (dist: {', '.join(DISTRIBUTIONS)})"
                       f"; got {_show(data)}"))
        return {"dist": "constant", "value": data}

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        dist = data.get("dist")
        if dist is None:
            _fail((("dist",), f"missing; expected one of: {', '.join(DISTRIBUTIONS)}, "
                              f"e.g. {DISTRIBUTIONS['normal'][1]}"))
        if isinstance(dist, str) and dist in DISTRIBUTIONS:
            params, example = DISTRIBUTIONS[dist]
            missing = [((p,), f"missing; dist {dist} needs {' and '.join(params)}, "
                              f"e.g. {example}") for p in params if data.get(p) is None]
            if missing:
                _fail(*missing)
        return data

    @model_validator(mode="after")
    def _check_params(self) -> LatencySpec:
        if (self.dist == "uniform" and self.low_ns is not None and self.high_ns is not None
                and self.low_ns > self.high_ns):
            _fail((("high",), "must be >= low; e.g. {dist: uniform, low: 5ms, high: 15ms}"))
        if self.dist in ("lognormal", "exponential") and self.mean_ns == 0:
            _fail((("mean",), f"must be greater than 0 for dist {self.dist}; "
                              f"e.g. {DISTRIBUTIONS[self.dist][1]}"))
        return self

    def lognormal_params(self) -> tuple[float, float]:
        """(mu, sigma) of ln(delay in ns) giving this spec's mean and std (lognormal only)."""
        if self.dist != "lognormal" or not self.mean_ns:
            raise ValueError("lognormal_params() needs dist lognormal with mean > 0")
        sigma2 = math.log1p((self.std_ns or 0) ** 2 / self.mean_ns**2)
        return math.log(self.mean_ns) - sigma2 / 2, math.sqrt(sigma2)


_ZERO_LATENCY = LatencySpec.model_validate({"dist": "constant", "value": 0})


class LinkSpec(_Spec):
    """Override for the link ``src -> dst`` (and ``dst -> src`` when ``both``); None = inherit.

    Written as ``{between: [a, b], ...}`` (both directions) or ``{from: a, to: b, ...}``.
    Endpoints are node ids or client ids. Overrides are listed in file order.
    """

    _EXAMPLE = "{between: [hospital-1, regulator-1], latency: 40ms}"
    _INTERNAL = frozenset({"both"})

    src: Endpoint = Field(alias="from")
    dst: Endpoint = Field(alias="to")
    both: bool = Field(False, alias="both")
    latency: LatencySpec | None = None
    bandwidth_bps: BandwidthBps | None = Field(None, alias="bandwidth")
    loss: Probability | None = None

    @classmethod
    def _input_keys(cls, data: Mapping[str, Any] | None) -> tuple[str, ...]:
        return ("between", *super()._input_keys(data))

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        forms = "between: [a, b] (both directions) or from: a, to: b (one direction)"
        if "between" in data:
            if "from" in data or "to" in data:
                _fail(((), f"use either {forms}, not both forms"))
            pair = data.pop("between")
            if not (isinstance(pair, list | tuple) and len(pair) == 2):
                _fail((("between",), f"expected a list of two endpoints such as "
                                     f"[hospital-1, regulator-1]; got {_show(pair)}"))
            bad = [(("between", i), _endpoint_problem(end)) for i, end in enumerate(pair)
                   if not (isinstance(end, str) and end)]
            if bad:
                _fail(*bad)
            data["from"], data["to"], data["both"] = pair[0], pair[1], True
            ends: tuple[Loc, Loc] = (("between", 0), ("between", 1))
        else:
            missing = [((k,), f"missing; a link needs {forms}") for k in ("from", "to")
                       if k not in data]
            if missing:
                _fail(*missing)
            ends = (("from",), ("to",))
        if isinstance(data["from"], str) and data["from"] == data["to"]:
            _fail((ends[1], f"a link joins two different endpoints; got {data['to']!r} twice"))
        if all(data.get(k) is None for k in ("latency", "bandwidth", "loss")):
            _fail(((), f"a link override needs at least one of latency, bandwidth, loss; "
                       f"e.g. {cls._EXAMPLE}"))
        return data


class NetworkSpec(_Spec):
    """Defaults for every link, then per-link overrides."""

    _NULL_IS_DEFAULT = frozenset({"latency", "links", "loss"})

    latency: LatencySpec = _ZERO_LATENCY
    bandwidth_bps: BandwidthBps | None = Field(None, alias="bandwidth")
    loss: Probability = 0.0
    links: tuple[LinkSpec, ...] = ()

    @field_validator("links", mode="before")
    @classmethod
    def _links_list(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            _fail(((), f"expected a list of link overrides such as "
                       f"[{LinkSpec._EXAMPLE}]; got {_show(value)}"))
        return value


class _ProtocolFields(_Spec):
    """PBFT parameters: one field per `node.config.SCENARIO_PARAMETERS` entry (`ProtocolSpec`
    adds them), written by the parameter's name, held by its attribute name (`batch_timeout:
    10ms` -> `batch_timeout_ns`), with its default and bounds."""

    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any: ...

    @model_validator(mode="after")
    def _check_window(self) -> _ProtocolFields:
        if self.watermark_window < self.checkpoint_interval:
            _fail((("watermark_window",),
                   f"must be >= checkpoint_interval ({self.checkpoint_interval}), or replicas "
                   f"stall before a checkpoint can advance the low watermark; "
                   f"{2 * self.checkpoint_interval} (2x checkpoint_interval) is recommended; "
                   f"got {self.watermark_window}"))
        return self


def _parameter_field(p: Parameter) -> tuple[Any, Any]:
    """(type, FieldInfo) of one protocol parameter: its unit's parser bounded by p.low and
    p.high, whose errors name the allowed range and give an example."""
    low = p.low if p.low is not None else 0
    kind: Any
    if p.unit == "bool":
        kind = Flag
    elif p.unit == "ns":
        kind = Annotated[int, _leaf(_duration_within(low, p.high)), _as_duration]
    else:
        example = 16 if low <= 16 and (p.high is None or p.high >= 16) else p.default
        kind = Annotated[int, _leaf(_int_at_least(low, str(example), p.high))]
    return kind, Field(p.default, alias=p.name if p.name != p.attr else None,
                       description=p.doc)


if TYPE_CHECKING:
    ProtocolSpec = _ProtocolFields
else:
    ProtocolSpec = create_model(
        "ProtocolSpec", __base__=_ProtocolFields, __module__=__name__,
        __doc__=_ProtocolFields.__doc__,
        **{p.attr: _parameter_field(p) for p in SCENARIO_PARAMETERS})


class CpuSpec(_Spec):
    """Per-operation CPU costs in float nanoseconds (None means "use the measured default"),
    and optionally the machine they run on (`cores`), the load generator's cost (`client`) and
    the pauses of a process on a shared machine (`pause`, `pause_chance`; sim/cpu.py)."""

    _EXAMPLE = "{sign: 16us, verify: 43us}"

    message_ns: CostNs | None = Field(None, alias="message")
    byte_ns: CostNs | None = Field(None, alias="byte")
    sign_ns: CostNs | None = Field(None, alias="sign")
    verify_ns: CostNs | None = Field(None, alias="verify")
    mac_ns: CostNs | None = Field(None, alias="mac")
    digest_ns: CostNs | None = Field(None, alias="digest")
    execute_ns: CostNs | None = Field(None, alias="execute")
    cores: Count | None = None
    """The whole network shares a machine with this many cores (a cluster on one host, as on
    loopback): a replica's step waits for a free one. Unset: each replica has a core of its
    own."""
    client_ns: CostNs | None = Field(None, alias="client")
    """CPU the load generator spends per reply it handles (its share of building, signing and
    sending a request and checking the replies), on one CPU shared by all clients. Unset:
    clients cost nothing."""
    pause_ns: CostNs | None = Field(None, alias="pause")
    """Mean length of a pause after a step (exponential): a process descheduled, collecting
    garbage or faulting a page, as on a real, shared machine. Needs `pause_chance`."""
    pause_chance: Probability | None = None
    """The chance that a process pauses after a step. Needs `pause`."""

    @model_validator(mode="after")
    def _check_pauses(self) -> CpuSpec:
        if (self.pause_ns is None) != (self.pause_chance is None):
            given, missing = (("pause", "pause_chance") if self.pause_chance is None
                              else ("pause_chance", "pause"))
            _fail(((missing,), f"missing; {given} needs it (a pause's mean length and the "
                               f"chance that a step pauses go together), e.g. "
                               f"{{pause: 1ms, pause_chance: 0.01}}"))
        return self

    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str) and data.strip().lower() == "default":
            return {}
        if isinstance(data, Mapping):
            return data
        _fail(((), f"expected none, default, or a mapping of per-operation costs such as "
                   f"{{message: 20us, byte: 2ns, sign: 16us}} (fields: "
                   f"{', '.join(cls._input_keys(None))}); got {_show(data)}"))


def _cpu_none(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    return value


def _app(value: Any) -> str:
    if value not in APPS:
        raise ValueError(f"expected an application, one of: {', '.join(APPS)}; got {_show(value)}")
    return str(value)


def _flow(value: Any) -> str:
    from medbft.traffic.ledger import FLOWS

    if not isinstance(value, str) or value not in FLOWS:
        raise ValueError(f"expected a flow, one of: {', '.join(FLOWS)}; got {_show(value)}")
    return value


def _mix(value: Any) -> dict[str, float]:
    from node.ledger.roles import KINDS

    hint = "expected weights by transaction kind such as {EPCIS_SHIP: 4, ACCESS_REQUEST: 2}"
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{hint}; got {_show(value)}")
    out = {}
    for kind, weight in value.items():
        if kind not in KINDS:
            guess = difflib.get_close_matches(str(kind), KINDS, n=1)
            hint2 = f"did you mean {guess[0]!r}? " if guess else ""
            raise ValueError(f"unknown transaction kind {kind!r}; {hint2}allowed: "
                             f"{', '.join(KINDS)}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ValueError(f"{kind}: expected a weight >= 0; got {_show(weight)}")
        out[str(kind)] = float(weight)
    if not any(out.values()):
        raise ValueError(f"{hint}; at least one weight must be > 0")
    return out


def _population(value: Any) -> dict[str, int]:
    from node.ledger.roles import LEDGER_ROLES

    hint = "expected client counts by role such as {manufacturer: 1, patient: 4}"
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{hint}; got {_show(value)}")
    for role, count in value.items():
        if role not in LEDGER_ROLES:
            raise ValueError(f"unknown role {role!r}; allowed: {', '.join(LEDGER_ROLES)}")
        _int_at_least(0, "1")(count)
    if not sum(value.values()):
        raise ValueError(f"{hint}; at least one client is needed")
    return {role: int(value[role]) for role in LEDGER_ROLES if value.get(role)}


#: Applications a run can execute: the healthcare ledger, or the key-value placeholder
#: (node/apps.py holds the one list).
APPS: tuple[str, ...] = tuple(STATE_MACHINES)
#: The workload fields of the ledger app, by their names in the file (refused for app: kv).
LEDGER_ONLY = ("flow", "mix", "invalid", "population", "event_at", "home_gateway",
               "recall_news")
#: When custodians learn of a recall: when the manufacturer submits it (out of band, a phone
#: call; the default) or only when it commits on the ledger.
RECALL_NEWS = ("submitted", "committed")


def _recall_news(value: Any) -> str:
    if value not in RECALL_NEWS:
        raise ValueError(f"expected when custodians learn of a recall, one of: "
                         f"{', '.join(RECALL_NEWS)}; got {_show(value)}")
    return str(value)


class WorkloadSpec(_Spec):
    """Client identities, the load shape (closed loop ``outstanding`` xor open loop ``rate``)
    and what they submit (``app``): healthcare-ledger transactions (the default) from a
    named ``flow`` or ``mix`` of kinds with an ``invalid`` share, or tiny ``put k v`` ops
    (``app: kv``, for protocol measurements). Ledger identities are ``client-1 .. client-N``
    with roles in the order manufacturer, distributor, pharmacist, clinician, patient,
    inspector, auditor (repeating), or ``<role>-<k>`` when ``population`` gives the counts."""

    clients: Count = 1
    outstanding: Count | None = None
    rate_per_s: RatePerS | None = Field(None, alias="rate")
    op_size_bytes: SizeBytes = Field(64, alias="op_size")
    app: Annotated[str, _leaf(_app)] = "ledger"
    flow: Annotated[str, _leaf(_flow)] = "mixed"
    mix: Annotated[dict[str, float], _leaf(_mix)] | None = None
    invalid: Probability = 0.02
    population: Annotated[dict[str, int], _leaf(_population)] | None = None
    event_at_ns: DurationNs | None = Field(None, alias="event_at")
    home_gateway: Flag = False
    recall_news: Annotated[str, _leaf(_recall_news)] | None = None
    """None: `submitted` (kept out of the canonical form, so older scenarios hash the same)."""

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("app") == "kv":
            given = [k for k in LEDGER_ONLY if data.get(k) is not None]
            if given:
                _fail(((given[0],), "only for app: ledger (the key-value app submits "
                                    "put k v ops)"))
        population = data.get("population")
        if isinstance(population, Mapping) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in population.values()):
            total = sum(population.values())
            if data.get("clients") is not None and data["clients"] != total:
                _fail((("clients",), f"population names {total} clients; leave clients "
                                     f"out or make it {total}"))
            data["clients"] = total
        has_outstanding = data.get("outstanding") is not None
        has_rate = data.get("rate") is not None
        if has_outstanding and has_rate:
            _fail(((), "give either outstanding (closed loop, e.g. outstanding: 1) or rate "
                       "(open loop, e.g. rate: 200/s), not both"))
        if not has_outstanding and not has_rate:
            data["outstanding"] = 1
        return data


class RangeSpec(_Spec):
    """``{min: 1, max: 3}``: bounds on a count (either may be left out)."""

    _EXAMPLE = "{min: 1, max: 3}"

    min: Whole | None = None
    max: Whole | None = None


class ExpectSpec(_Spec):
    """What the run should show; None means "not asserted". Each failed expectation is
    reported with its name and the measured value."""

    _EXAMPLE = "{safety: true, liveness: true, latency_ms_p99_max: 200}"

    safety: Flag | None = None
    liveness: Flag | None = None
    committed_fraction_min: Fraction | None = None
    latency_ms_p50_max: NonNegative | None = None
    latency_ms_p99_max: NonNegative | None = None
    latency_ms_p99_min: NonNegative | None = None
    throughput_tps_min: NonNegative | None = None
    throughput_tps_max: NonNegative | None = None
    view_changes: RangeSpec | None = None
    rejected_messages_min: Whole | None = None
    state_transfers_min: Whole | None = None
    final_view_min: Whole | None = None
    harm: Whole | None = None
    """Domain harm events (summary `harm.events`; medbft/harm.py): 0 within f faults."""
    harm_unfair: RangeSpec | None = None
    """Unfair orderings (summary `harm.unfair.events`), e.g. {min: 1} for a censor."""

