"""The scenario file format: what a simulation run is, as researchers write it in YAML.

A scenario says which nodes run PBFT, how the network between them behaves, how the clients load
the system, which faults to inject and what the run is expected to show. Researchers write these
files by hand, so this module exists to turn a file into one validated, immutable ``Scenario``
that the simulator can trust, and to turn every mistake into a one-line message that names the
file, the field (dotted path such as ``network.links[0].latency``) and what is allowed -- never a
traceback. It also gives every scenario a canonical form (``to_dict``) and a content hash
(``scenario_hash``) so results can record exactly what was run.

File format (all durations take units ns/us/ms/s/m, see ``medbft.units``)::

    name: baseline                 # required, non-empty text
    description: ...               # optional text
    seed: 1                        # optional, integer >= 0, default 1
    duration: 10s                  # required, > 0: clients submit for this long ...
    drain: 5s                      # optional, default 5s: ... then the run drains this long
    nodes: 4                       # required, n >= 4; see ``expand_nodes`` for the three forms
    network:                       # optional
      latency: 10ms                # default 0s; or {dist: constant|uniform|normal|lognormal|...}
      bandwidth: 1Gbps             # optional, default unlimited
      loss: 0.0                    # probability in [0, 1), also '1%'; default 0
      links:                       # optional per-link overrides (latency, bandwidth, loss)
        - {between: [hospital-1, regulator-1], latency: 40ms}   # both directions
        - {from: client-1, to: hospital-1, loss: 0.1}           # one direction
    protocol: {batch_size: 1, batch_timeout: 0ms, max_in_flight: 16, checkpoint_interval: 128,
               watermark_window: 256, view_change_timeout: 500ms, client_timeout: 1s}  # defaults
    cpu: none                      # default; or 'default', or {message, byte, sign, verify, mac,
                                   # digest} costs such as {sign: 16us, byte: 0.5ns}
    workload: {clients: 1, outstanding: 1, op_size: 64B}   # defaults; or rate: 200/s instead of
                                   # outstanding (exactly one; neither means outstanding: 1);
                                   # app: ledger|kv, flow, mix, invalid, population, event_at,
                                   # home_gateway: the healthcare ledger's traffic (docs/ledger.md)
    faults:                        # optional list of single-action mappings, sorted by `at`
      - {at: 3s, crash: hospital-1}
      - {at: 6s, recover: hospital-1}
    expect: {safety: true, liveness: true}   # optional; null/absent means "not asserted"

A ``null`` value for a whole section (``network:``, ``faults:`` ...) means "use the defaults".
Latency distributions: ``constant {value}``, ``uniform {low, high}``, ``normal {mean, std}``,
``lognormal {mean, std}`` (mean and std of the delay itself, not of its logarithm) and
``exponential {mean}``.

Adding a fault kind: subclass ``FaultSpec`` with ``action: ClassVar[str] = '<key>'``, a field whose
alias is the action key, override ``node_refs``/``times`` if it names nodes or has ``until``, and
add it to ``AnyFault`` (the discriminated union keyed by which action key is present).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, NoReturn, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from medbft.units import (
    format_bandwidth_bps,
    format_duration_ns,
    parse_bandwidth_bps,
    parse_duration_ns,
    parse_duration_ns_float,
    parse_rate_per_s,
    parse_size_bytes,
)

__all__ = [
    "DISTRIBUTIONS",
    "FAULT_KINDS",
    "ROLES",
    "AnyFault",
    "CpuSpec",
    "CrashFault",
    "ExpectSpec",
    "FaultSpec",
    "LatencySpec",
    "LinkSpec",
    "NetworkSpec",
    "NodeSpec",
    "Problem",
    "ProtocolSpec",
    "RecoverFault",
    "Scenario",
    "ScenarioError",
    "WorkloadSpec",
    "apply_overrides",
    "expand_nodes",
    "load_scenario",
    "parse_scenario",
    "scenario_hash",
    "to_dict",
]

Role = Literal["hospital", "pharmacy", "regulator"]
#: Node roles, in the rotation used by the count form ``nodes: 7``.
ROLES: tuple[Role, ...] = ("hospital", "pharmacy", "regulator")

Dist = Literal["constant", "uniform", "normal", "lognormal", "exponential"]
#: Latency distribution -> the parameters it takes (all durations), with an example.
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "constant": (("value",), "{dist: constant, value: 10ms}"),
    "uniform": (("low", "high"), "{dist: uniform, low: 5ms, high: 15ms}"),
    "normal": (("mean", "std"), "{dist: normal, mean: 10ms, std: 2ms}"),
    "lognormal": (("mean", "std"), "{dist: lognormal, mean: 10ms, std: 2ms}"),
    "exponential": (("mean",), "{dist: exponential, mean: 10ms}"),
}

NODE_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
CLIENT_ID_RE = re.compile(r"client-([1-9][0-9]*)")
#: Upper bound for the count forms of ``nodes`` (guards against typos like ``nodes: 40000000``).
MAX_NODES = 10_000
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
}

_ERROR_TYPE = "medbft"
_FAULT_TAG = "fault:"
Loc = tuple[str | int, ...]


# --------------------------------------------------------------------------------------------
# Errors


class Problem(NamedTuple):
    """One thing wrong with a scenario: the dotted field path ('' for the whole file) and why."""

    field: str
    message: str


class ScenarioError(Exception):
    """A scenario file (or mapping) is invalid. ``str()`` gives one line per problem.

    ``source``, ``field`` and ``message`` describe the first problem; ``problems`` holds all.
    """

    def __init__(self, source: str, field: str, message: str,
                 more: Sequence[Problem] = ()) -> None:
        self.source = source
        self.field = field
        self.message = message
        self.problems: tuple[Problem, ...] = (Problem(field, message), *more)
        super().__init__(str(self))

    @classmethod
    def from_problems(cls, source: str, problems: Sequence[Problem]) -> ScenarioError:
        first, *rest = problems
        return cls(source, first.field, first.message, rest)

    def __str__(self) -> str:
        return "\n".join(
            f"{self.source}: {p.field}: {p.message}" if p.field else f"{self.source}: {p.message}"
            for p in self.problems
        )

    def __reduce__(self) -> tuple[Any, ...]:  # keep all problems when pickled (process pools)
        return (type(self), (self.source, self.field, self.message, self.problems[1:]))


def _fail(*problems: tuple[Loc, str]) -> NoReturn:
    """Raise a validation error carrying problems at paths relative to the current location."""
    raise PydanticCustomError(
        _ERROR_TYPE,
        "{summary}",
        {"summary": "; ".join(message for _, message in problems), "problems": tuple(problems)},
    )


def _show(value: object) -> str:
    """Render a user value for an error message, shortened if huge."""
    if isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    elif isinstance(value, Mapping):
        text = "a mapping {" + ", ".join(str(k) for k in value) + "}"
    elif isinstance(value, list):
        text = f"a list of {len(value)} item(s)"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _names(names: Sequence[str], limit: int = 20) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names) - limit} more)"


def _dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --------------------------------------------------------------------------------------------
# Leaf value types: each parses the YAML form and explains what is allowed when it cannot.


def _leaf(parse: Callable[[Any], Any]) -> BeforeValidator:
    def run(value: Any) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            _fail(((), str(exc)))

    return BeforeValidator(run)


def _positive_duration(value: Any) -> int:
    ns = parse_duration_ns(value)
    if ns <= 0:
        raise ValueError(f"must be greater than 0; expected a duration such as 500ms; "
                         f"got {_show(value)}")
    return ns


def _probability(value: Any) -> float:
    hint = "expected a probability in [0, 1) such as 0.01 or '1%'"
    if isinstance(value, bool):
        raise ValueError(f"{hint}; got {_show(value)}")
    try:
        if isinstance(value, str):
            text = value.strip()
            p = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        elif isinstance(value, int | float):
            p = float(value)
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"{hint}; got {_show(value)}") from None
    if not (math.isfinite(p) and 0.0 <= p < 1.0):
        raise ValueError(f"{hint}; got {_show(value)}")
    return p


def _int_at_least(low: int, example: str) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"expected a whole number >= {low}, e.g. {example}; "
                             f"got {_show(value)}")
        return value

    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text (quote it if it looks like a number); got {_show(value)}")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty name such as baseline; got {_show(value)}")
    return value


def _node_id(value: Any) -> str:
    if not isinstance(value, str) or not NODE_ID_RE.fullmatch(value):
        raise ValueError("expected a node id of 1-63 lowercase letters, digits, '_', '.' or '-', "
                         f"starting with a letter or digit, e.g. hospital-1; got {_show(value)}")
    return value


def _role(value: Any) -> str:
    if not isinstance(value, str) or value not in ROLES:
        raise ValueError(f"expected a role, one of: {', '.join(ROLES)}; got {_show(value)}")
    return str(value)


def _dist(value: Any) -> str:
    if not isinstance(value, str) or value not in DISTRIBUTIONS:
        raise ValueError(f"expected a distribution, one of: {', '.join(DISTRIBUTIONS)}; "
                         f"got {_show(value)}")
    return str(value)


def _endpoint_problem(value: Any) -> str:
    return f"expected a node or client id such as hospital-1 or client-1; got {_show(value)}"


def _endpoint(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(_endpoint_problem(value))
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false; got {_show(value)}")
    return value


def _positive_rate(value: Any) -> float:
    rate = parse_rate_per_s(value)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"expected a positive request rate such as 200/s or 12000/min; "
                         f"got {_show(value)}")
    return rate


_as_duration = PlainSerializer(format_duration_ns, when_used="json")
DurationNs = Annotated[int, _leaf(parse_duration_ns), _as_duration]
PositiveDurationNs = Annotated[int, _leaf(_positive_duration), _as_duration]
CostNs = Annotated[float, _leaf(parse_duration_ns_float), _as_duration]
BandwidthBps = Annotated[
    int, _leaf(parse_bandwidth_bps), PlainSerializer(format_bandwidth_bps, when_used="json")
]
Probability = Annotated[float, _leaf(_probability)]
Count = Annotated[int, _leaf(_int_at_least(1, "16"))]
Seed = Annotated[int, _leaf(_int_at_least(0, "1"))]
Text = Annotated[str, _leaf(_text)]
Name = Annotated[str, _leaf(_name)]
NodeId = Annotated[str, _leaf(_node_id)]
Endpoint = Annotated[str, _leaf(_endpoint)]
RoleField = Annotated[Role, _leaf(_role)]
DistField = Annotated[Dist, _leaf(_dist)]
Flag = Annotated[bool, _leaf(_bool)]
RatePerS = Annotated[float, _leaf(_positive_rate)]
SizeBytes = Annotated[int, _leaf(parse_size_bytes)]


# --------------------------------------------------------------------------------------------
# Models


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    guess = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    return f"unknown field {key!r}; {hint}allowed: {', '.join(allowed)}"


class _UnknownKey:
    """Stands in for the value of a key the schema does not know; carries the error message."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return "<unknown field>"


class _Spec(BaseModel):
    """Base for every mapping in the file: frozen, no extra keys, friendly key errors.

    The ``before`` validator turns shorthands into mappings (``_shorthand``), rejects unknown keys
    listing the allowed ones (``_input_keys``), drops ``null`` for keys whose null means "default"
    and finally lets subclasses normalise the mapping (``_prepare``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    _EXAMPLE: ClassVar[str] = ""
    _NULL_IS_DEFAULT: ClassVar[frozenset[str]] = frozenset()
    _INTERNAL: ClassVar[frozenset[str]] = frozenset()  # fields users may not write

    @classmethod
    def _input_keys(cls, data: Mapping[str, Any] | None) -> tuple[str, ...]:
        return tuple(f.alias or name for name, f in cls.model_fields.items()
                     if name not in cls._INTERNAL)

    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return data

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data

    @model_validator(mode="before")
    @classmethod
    def _check_mapping(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        data = cls._shorthand(data)
        if not isinstance(data, Mapping):
            example = f", e.g. {cls._EXAMPLE}" if cls._EXAMPLE else ""
            _fail(((), f"expected a mapping with fields {', '.join(cls._input_keys(None))}"
                       f"{example}; got {_show(data)}"))
        allowed = cls._input_keys(data)
        internal = [((str(key),), _unknown_key(str(key), allowed)
                     if isinstance(key, str) else f"field names must be text; got {_show(key)}")
                    for key in data
                    if key not in allowed and (cls._is_field_key(key) or not isinstance(key, str))]
        if internal:
            _fail(*internal)
        # Unknown keys stay in, wrapped, so that pydantic reports them (extra='forbid') together
        # with every other problem in the file; _problems() unwraps the message.
        return cls._prepare({
            k: v if k in allowed else _UnknownKey(_unknown_key(str(k), allowed))
            for k, v in data.items() if not (v is None and k in cls._NULL_IS_DEFAULT)
        })

    @classmethod
    def _is_field_key(cls, key: object) -> bool:
        return any(key == (f.alias or name) for name, f in cls.model_fields.items())


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


class ProtocolSpec(_Spec):
    """PBFT parameters."""

    batch_size: Count = 1
    batch_timeout_ns: DurationNs = Field(0, alias="batch_timeout")
    max_in_flight: Count = 16
    checkpoint_interval: Count = 128
    watermark_window: Count = 256
    view_change_timeout_ns: PositiveDurationNs = Field(500_000_000, alias="view_change_timeout")
    client_timeout_ns: PositiveDurationNs = Field(1_000_000_000, alias="client_timeout")

    @model_validator(mode="after")
    def _check_window(self) -> ProtocolSpec:
        if self.watermark_window < self.checkpoint_interval:
            _fail((("watermark_window",),
                   f"must be >= checkpoint_interval ({self.checkpoint_interval}), or replicas "
                   f"stall before a checkpoint can advance the low watermark; "
                   f"{2 * self.checkpoint_interval} (2x checkpoint_interval) is recommended; "
                   f"got {self.watermark_window}"))
        return self


class CpuSpec(_Spec):
    """Per-operation CPU costs in float nanoseconds; None means "use the measured default"."""

    _EXAMPLE = "{sign: 16us, verify: 43us}"

    message_ns: CostNs | None = Field(None, alias="message")
    byte_ns: CostNs | None = Field(None, alias="byte")
    sign_ns: CostNs | None = Field(None, alias="sign")
    verify_ns: CostNs | None = Field(None, alias="verify")
    mac_ns: CostNs | None = Field(None, alias="mac")
    digest_ns: CostNs | None = Field(None, alias="digest")

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
    from medbft.traffic import FLOWS

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
    from node.ledger.roles import CLIENT_ROLES

    hint = "expected client counts by role such as {manufacturer: 1, patient: 4}"
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{hint}; got {_show(value)}")
    for role, count in value.items():
        if role not in CLIENT_ROLES:
            raise ValueError(f"unknown role {role!r}; allowed: {', '.join(CLIENT_ROLES)}")
        _int_at_least(0, "1")(count)
    if not sum(value.values()):
        raise ValueError(f"{hint}; at least one client is needed")
    return {role: int(value[role]) for role in CLIENT_ROLES if value.get(role)}


#: Applications a run can execute: the healthcare ledger, or the key-value placeholder.
APPS: tuple[str, ...] = ("ledger", "kv")
_LEDGER_ONLY = ("flow", "mix", "invalid", "population", "event_at", "home_gateway")


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

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("app") == "kv":
            given = [k for k in _LEDGER_ONLY if data.get(k) is not None]
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


def _non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"expected a number >= 0 such as 100; got {_show(value)}")
    return float(value)


def _fraction(value: Any) -> float:
    number = _non_negative_number(value)
    if number > 1:
        raise ValueError(f"expected a fraction between 0 and 1 such as 0.95; got {_show(value)}")
    return number


NonNegative = Annotated[float, _leaf(_non_negative_number)]
Fraction = Annotated[float, _leaf(_fraction)]
Whole = Annotated[int, _leaf(_int_at_least(0, "1"))]


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
    out: dict[str, Any] = {}
    for key, raw in params.items():
        if key in ("delay", "every"):
            out[key] = _positive_duration(raw)
        elif key == "clients":
            if not isinstance(raw, list | tuple) or not all(
                    isinstance(c, str) and NODE_ID_RE.fullmatch(c) for c in raw):
                raise ValueError(f"clients: expected a list of client ids such as "
                                 f"[client-1, patient-2]; got {_show(raw)}")
            out[key] = list(raw)
    return {"name": name, **out}


def _behavior_json(value: dict[str, Any]) -> Any:
    params = {k: (format_duration_ns(v) if k in ("delay", "every") else v)
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


#: Implemented fault actions: action key -> class.
FAULT_KINDS: dict[str, type[FaultSpec]] = {c.action: c for c in (
    CrashFault, RecoverFault, PartitionFault, IsolateFault, HealFault, LinkFault,
    SlowFault, ByzantineFault)}



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
        others = [str(k) for k in entry
                  if k not in FAULT_KINDS and k not in ("at", "until", "factor", "behavior")]
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


def expand_nodes(value: Any) -> Any:
    """Expand the count forms of ``nodes`` into a list of ``{id, role}`` mappings.

    * ``7``: roles rotate hospital, pharmacy, regulator, hospital, ...; ids number each role from
      1: hospital-1, pharmacy-1, regulator-1, hospital-2, pharmacy-2, regulator-2, hospital-3.
    * ``{hospital: 3, pharmacy: 2, regulator: 2}``: ids hospital-1..3, then pharmacy-1..2, then
      regulator-1..2, following the key order of the mapping.
    * a list of ``{id, role}`` mappings is returned unchanged.
    """
    forms = ("a list of {id, role} mappings, a count such as 4, or role counts such as "
             "{hospital: 2, pharmacy: 1, regulator: 1}")
    if isinstance(value, list | tuple):
        return value
    if isinstance(value, bool) or not isinstance(value, int | Mapping):
        _fail(((), f"expected {forms}; got {_show(value)}"))
    if isinstance(value, int):
        if not 0 <= value <= MAX_NODES:
            _fail(((), f"expected a node count between 4 and {MAX_NODES}; got {value}"))
        seen = dict.fromkeys(ROLES, 0)
        nodes = []
        for i in range(value):
            role = ROLES[i % len(ROLES)]
            seen[role] += 1
            nodes.append({"id": f"{role}-{seen[role]}", "role": role})
        return nodes
    problems: list[tuple[Loc, str]] = []
    for role, count in value.items():
        if role not in ROLES:
            problems.append(((str(role),), f"unknown role {role!r}; allowed roles: "
                                           f"{', '.join(ROLES)}"))
        elif isinstance(count, bool) or not isinstance(count, int) or count < 0:
            problems.append(((role,), f"expected a whole number of {role} nodes >= 0, e.g. 2; "
                                      f"got {_show(count)}"))
    if problems:
        _fail(*problems)
    if sum(value.values()) > MAX_NODES:
        _fail(((), f"expected at most {MAX_NODES} nodes; got {sum(value.values())}"))
    return [{"id": f"{role}-{k}", "role": role}
            for role, count in value.items() for k in range(1, count + 1)]


class Scenario(_Spec):
    """A validated simulation run. Build it with ``load_scenario`` or ``parse_scenario``."""

    _NULL_IS_DEFAULT = frozenset(
        {"description", "seed", "drain", "network", "protocol", "workload", "faults", "expect"}
    )

    name: Name
    description: Text = ""
    seed: Seed = 1
    duration_ns: PositiveDurationNs = Field(alias="duration")
    drain_ns: DurationNs = Field(5_000_000_000, alias="drain")
    nodes: tuple[NodeSpec, ...]
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    cpu: Annotated[CpuSpec | None, BeforeValidator(_cpu_none)] = None
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    faults: tuple[AnyFault, ...] = ()
    expect: ExpectSpec = Field(default_factory=ExpectSpec)

    @property
    def n(self) -> int:
        """Number of replicas."""
        return len(self.nodes)

    @property
    def f(self) -> int:
        """Byzantine faults tolerated: the largest f with n >= 3f + 1."""
        return (self.n - 1) // 3

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(node.id for node in self.nodes)

    @property
    def clients(self) -> tuple[str, ...]:
        """Client ids: ``client-1 .. client-N`` (N = workload.clients), or for a ledger
        ``population`` ``<role>-<k>`` in role order."""
        return tuple(self.client_roles)

    @property
    def client_roles(self) -> dict[str, str]:
        """Client id -> role in the membership (``client`` for the key-value app)."""
        w = self.workload
        if w.app != "ledger":
            return {f"client-{i}": "client" for i in range(1, w.clients + 1)}
        if w.population:
            return {f"{role}-{k}": role for role, count in w.population.items()
                    for k in range(1, count + 1)}
        from node.ledger.roles import rotating_client_roles

        return rotating_client_roles(w.clients)

    @property
    def end_ns(self) -> int:
        """When the run stops: duration + drain."""
        return self.duration_ns + self.drain_ns

    def is_client(self, name: str) -> bool:
        if self.workload.population:
            return name in self.client_roles
        match = CLIENT_ID_RE.fullmatch(name)
        return match is not None and int(match[1]) <= self.workload.clients

    @field_validator("nodes", mode="before")
    @classmethod
    def _expand_nodes(cls, value: Any) -> Any:
        return expand_nodes(value)

    @field_validator("nodes", mode="after")
    @classmethod
    def _check_nodes(cls, nodes: tuple[NodeSpec, ...]) -> tuple[NodeSpec, ...]:
        problems: list[tuple[Loc, str]] = []
        if len(nodes) < 4:
            problems.append(((), f"expected at least 4 nodes: PBFT needs n >= 3f+1 replicas to "
                                 f"tolerate f faulty ones, and f >= 1 means n >= 4; "
                                 f"got {len(nodes)}"))
        first: dict[str, int] = {}
        for i, node in enumerate(nodes):
            if node.id in first:
                problems.append(((i, "id"), f"duplicate node id {node.id!r} (also nodes"
                                            f"[{first[node.id]}]); node ids must be unique"))
            elif CLIENT_ID_RE.fullmatch(node.id):
                problems.append(((i, "id"), f"{node.id!r} looks like a client id; client-<number> "
                                            f"is reserved for workload clients, use e.g. "
                                            f"hospital-{i + 1}"))
            first.setdefault(node.id, i)
        if problems:
            _fail(*problems)
        return nodes

    @field_validator("faults", mode="before")
    @classmethod
    def _fault_entries(cls, value: Any) -> Any:
        return _check_fault_entries(value)

    @field_validator("faults", mode="after")
    @classmethod
    def _check_faults(cls, faults: tuple[FaultSpec, ...],
                      info: ValidationInfo) -> tuple[FaultSpec, ...]:
        nodes: tuple[NodeSpec, ...] | None = info.data.get("nodes")
        duration, drain = info.data.get("duration_ns"), info.data.get("drain_ns")
        problems: list[tuple[Loc, str]] = []
        for i, fault in enumerate(faults):
            if duration is not None and drain is not None:
                end = duration + drain
                for key, t in fault.times():
                    if t > end:
                        problems.append(((i, key), (
                            f"{format_duration_ns(t)} is after the end of the run; expected a "
                            f"time from 0s to {format_duration_ns(end)} (duration "
                            f"{format_duration_ns(duration)} + drain {format_duration_ns(drain)})"
                        )))
            if nodes is not None:
                ids = [node.id for node in nodes]
                refs = list(fault.node_refs())
                for path, target in getattr(fault, "targets", tuple)():
                    if _is_node_id(target):
                        refs.append((path, target))
                    elif target.startswith("role:") and not any(
                            nd.role == target[5:] for nd in nodes):
                        present = _names(sorted({nd.role for nd in nodes}))
                        problems.append(((i, *path), f"no node has role {target[5:]!r}; roles "
                                                     f"present: {present}"))
                    elif target.startswith("random:") and int(target[7:]) > len(nodes):
                        problems.append(((i, *path), f"random: {target[7:]} asks for more nodes "
                                                     f"than the network has ({len(nodes)})"))
                for path, ref in refs:
                    if ref not in ids:
                        problems.append(((i, *path), f"unknown node {ref!r}; known nodes: "
                                                     f"{_names(ids)}"))
        if problems:
            _fail(*problems)
        return tuple(sorted(faults, key=lambda fault: fault.at_ns))

    @model_validator(mode="after")
    def _check_links(self) -> Scenario:
        ids = self.node_ids
        known = f"known nodes: {_names(ids)}; clients: " + (
            _names(self.clients) if self.workload.population
            else f"client-1 .. client-{self.workload.clients}")
        problems: list[tuple[Loc, str]] = [
            (("workload", "population"), f"client id {c!r} is also a node id; rename the node")
            for c in self.clients if c in ids]
        for i, link in enumerate(self.network.links):
            where: Loc = ("network", "links", i)
            ends: tuple[Loc, Loc] = ((("between", 0), ("between", 1)) if link.both
                                     else (("from",), ("to",)))
            for path, name in zip(ends, (link.src, link.dst), strict=True):
                if name not in ids and not self.is_client(name):
                    problems.append(((*where, *path), f"unknown endpoint {name!r}; {known}"))
            if self.is_client(link.src) and self.is_client(link.dst):
                problems.append((where, "clients only exchange messages with nodes, so a link "
                                        "between two clients has no effect; name a node"))
        if problems:
            _fail(*problems)
        return self


# --------------------------------------------------------------------------------------------
# Turning pydantic errors into problems


_MISSING_HINTS = {
    "name": "e.g. name: baseline",
    "duration": "how long clients submit, e.g. duration: 10s",
    "nodes": "e.g. nodes: 4, nodes: {hospital: 2, pharmacy: 1, regulator: 1}, or a list of "
             "{id: hospital-1, role: hospital}",
    "nodes[].id": "e.g. {id: hospital-1, role: hospital}",
    "nodes[].role": f"one of: {', '.join(ROLES)}",
}


def _problems(exc: ValidationError) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(_FAULT_TAG)))
        ctx = err.get("ctx") or {}
        if err["type"] == _ERROR_TYPE and "problems" in ctx:
            out.extend(Problem(_dotted((*loc, *sub)), message) for sub, message in ctx["problems"])
            continue
        if err["type"] == "missing":
            pattern = re.sub(r"\[\d+\]", "[]", _dotted(loc))
            hint = _MISSING_HINTS.get(pattern)
            message = "missing required field" + (f"; {hint}" if hint else "")
        elif err["type"] == "extra_forbidden":
            unknown = err.get("input")
            message = unknown.message if isinstance(unknown, _UnknownKey) else "unknown field"
        else:
            message = f"{err['msg']}; got {_show(err.get('input'))}"
        out.append(Problem(_dotted(loc), message))
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------
# Loading


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"duplicate key {key!r} (first given on line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        what = exc.problem or "syntax error"
        context = f" ({exc.context})" if exc.context else ""
        return f"{where}: invalid YAML: {what}{context}"
    return f"invalid YAML: {exc}"


def _read(path: Path, source: str) -> str:
    def siblings(folder: Path) -> str:
        try:
            names = sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".yml"))
        except OSError:
            return ""
        return f"; scenario files in {folder}: {_names(names, 10)}" if names else ""

    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(source, "", "file not found; expected the path of a YAML scenario "
                            "file such as scenarios/baseline.yaml"
                            + siblings(path.parent)) from None
    except IsADirectoryError:
        raise ScenarioError(source, "", "is a directory; expected the path of a YAML scenario "
                            "file" + siblings(path)) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(source, "", f"not UTF-8 text (byte {exc.start}); expected a YAML "
                            "scenario file") from None
    except OSError as exc:
        raise ScenarioError(source, "", f"cannot read file: {exc.strerror or exc}") from None


def _override_segments(path_text: str) -> list[str | int]:
    text = re.sub(r"\[(\d+)\]", r".\1", path_text.strip())
    parts = text.split(".")
    if not text or any(not p for p in parts):
        raise ValueError
    return [int(p) if p.isdigit() else p for p in parts]


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str],
                    source: str = "<overrides>") -> dict[str, Any]:
    """Return a deep copy of ``raw`` with ``dotted.path=value`` overrides applied in order.

    Values are parsed as YAML (``nodes=7``, ``network.latency={dist: normal, mean: 10ms, std:
    2ms}``); list items are addressed by index (``faults.0.at=2s`` or ``faults[0].at=2s``; the
    index one past the end appends). Missing intermediate mappings are created; unknown field
    names are reported by validation afterwards.
    """
    data: dict[str, Any] = copy.deepcopy(dict(raw))
    for spec in overrides:
        path_text, sep, value_text = spec.partition("=")
        try:
            if not sep:
                raise ValueError
            segments = _override_segments(path_text)
        except ValueError:
            raise ScenarioError(source, "", f"bad override {spec!r}; expected dotted.path=value, "
                                "e.g. protocol.batch_size=10 or faults.0.at=2s") from None
        field = _dotted(segments)
        try:
            value = yaml.load(value_text, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise ScenarioError(source, field, f"override {spec!r}: the value is not valid YAML "
                                f"({_yaml_error(exc)}); quote text, e.g. name='my run'") from None
        node: Any = data
        for depth, segment in enumerate(segments):
            here = _dotted(segments[:depth]) or "the top level"
            last = depth == len(segments) - 1
            if isinstance(node, dict):
                if last:
                    node[segment] = value
                elif not isinstance(node.get(segment), dict | list):
                    if node.get(segment) is not None:
                        raise ScenarioError(source, field, (
                            f"bad override path {spec!r}: {_dotted(segments[:depth + 1])} is "
                            f"{node[segment]!r}, not a mapping or list; set it whole instead, "
                            f"e.g. {_dotted(segments[:depth + 1])}={{...}}"))
                    node[segment] = {}
                if not last:
                    node = node[segment]
            elif isinstance(node, list):
                if not isinstance(segment, int) or segment > len(node) or (
                        segment == len(node) and not last):
                    raise ScenarioError(source, field, (
                        f"bad override path {spec!r}: {here} is a list of {len(node)} item(s); "
                        f"expected an index from 0 to {len(node) - 1}"
                        + (f" (or {len(node)} to append)" if last else "")))
                if last:
                    node[segment:segment + 1] = [value]
                else:
                    node = node[segment]
            else:  # pragma: no cover - intermediate scalars are rejected above
                raise ScenarioError(source, field, f"bad override path {spec!r}")
    return data


def _note_overrides(problems: list[Problem], overrides: Sequence[str]) -> list[Problem]:
    fields = []
    for spec in overrides:
        try:
            fields.append((_dotted(_override_segments(spec.partition("=")[0])), spec))
        except ValueError:  # pragma: no cover - apply_overrides already rejected it
            continue
    out = []
    for problem in problems:
        notes = [spec for field, spec in fields if problem.field and (
            problem.field == field
            or problem.field.startswith((field + ".", field + "["))
            or field.startswith((problem.field + ".", problem.field + "[")))]
        suffix = "".join(f" (set by override {spec!r})" for spec in notes)
        out.append(Problem(problem.field, problem.message + suffix))
    return out


def parse_scenario(data: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate a raw mapping (as loaded from YAML); raise ScenarioError naming ``source``."""
    return _parse(data, source, ())


def _parse(data: Any, source: str, overrides: Sequence[str]) -> Scenario:
    if not isinstance(data, Mapping):
        raise ScenarioError(source, "", "expected a mapping of scenario fields at the top level "
                            "(name, duration, nodes, ...); got " + _show(data))
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = _note_overrides(_problems(exc), overrides)
        raise ScenarioError.from_problems(source, problems) from None


def load_scenario(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Scenario:
    """Read a YAML scenario file, apply ``dotted.path=value`` overrides, and validate it."""
    source = os.fspath(path)
    text = _read(Path(source), source)
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ScenarioError(source, "", _yaml_error(exc)) from None
    if data is None:
        if not overrides:
            raise ScenarioError(source, "", "the file is empty; expected a mapping with at "
                                "least name, duration and nodes")
        data = {}
    if overrides and isinstance(data, Mapping):
        data = apply_overrides(data, overrides, source)
    return _parse(data, source, overrides)


# --------------------------------------------------------------------------------------------
# Canonical form and hash


def to_dict(scenario: Scenario) -> dict[str, Any]:
    """A JSON-able, normalised form of ``scenario`` for results files.

    It uses the file format itself, so ``parse_scenario(to_dict(s))`` gives back ``s``:
    durations are canonical strings in the largest exact unit ('10ms', '1300ns', '0s'; CPU costs
    may be fractional, '0.5ns'), bandwidth likewise ('1Gbps'), sizes are integer bytes, rates
    float per second, nodes an explicit list of {id, role}, latency always the mapping form
    {dist, ...}, links use between/from-to, cpu is 'none' or a mapping of the costs given,
    and unset optional values are omitted.
    """
    out: dict[str, Any] = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    links = out["network"]["links"]
    for i, link in enumerate(links):
        links[i] = _link_form(link)
    for fault in out["faults"]:
        if "link" in fault:
            fault["link"] = _link_form(fault["link"])
    if scenario.cpu is None:
        out = {key: "none" if key == "cpu" else out[key] for key in Scenario._input_keys(None)}
    return out


def _link_form(link: dict[str, Any]) -> dict[str, Any]:
    if link.pop("both"):
        return {"between": [link.pop("from"), link.pop("to")], **link}
    return link


def scenario_hash(scenario_or_raw: Scenario | Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of the validated, normalised scenario.

    Equivalent spellings (``nodes: 4`` vs the explicit list, ``10ms`` vs ``10000us``) hash the
    same; every field, including name and description, is covered.
    """
    scenario = (scenario_or_raw if isinstance(scenario_or_raw, Scenario)
                else parse_scenario(scenario_or_raw, "<scenario>"))
    canonical = json.dumps(to_dict(scenario), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
