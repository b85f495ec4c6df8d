"""Scenario field types: the leaf values of the file and the units they are written in.

Every leaf of a scenario (a duration, a probability, a node id, a role ...) is written by hand in
YAML, so each type here parses the forms people write (``10ms``, ``'1%'``, ``hospital-1``) into
one canonical value and, when it cannot, says what is allowed (``expected a probability in [0, 1)
such as 0.01 or '1%'; got 2``). Units come from ``medbft.units``; durations serialise back to
canonical strings (``10ms``) in the JSON form. This module knows values, not mappings: which
field uses which type is the business of ``specs``, ``faults`` and ``model``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, PlainSerializer

from medbft.scenario.errors import _fail, _show
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
    "CLIENT_ID_RE",
    "DISTRIBUTIONS",
    "NAME_RE",
    "NODE_ID_RE",
    "ROLES",
    "BandwidthBps",
    "CostNs",
    "Count",
    "Dist",
    "DistField",
    "DurationNs",
    "Endpoint",
    "Flag",
    "Fraction",
    "Name",
    "NodeId",
    "NonNegative",
    "PositiveDurationNs",
    "Probability",
    "RatePerS",
    "Role",
    "RoleField",
    "Seed",
    "SizeBytes",
    "Text",
    "Whole",
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

#: A scenario name: it names the results folder, so it is a safe file-name slug.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NODE_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
CLIENT_ID_RE = re.compile(r"client-([1-9][0-9]*)")


# --------------------------------------------------------------------------------------------
# Leaf value types: each parses the YAML form and explains what is allowed when it cannot.


def _leaf(parse: Callable[[Any], Any]) -> BeforeValidator:
    def run(value: Any) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            _fail(((), str(exc)))

    return BeforeValidator(run)


def _duration_within(low: int, high: int | None) -> Callable[[Any], int]:
    """A duration parser for [low, high] ns (high None: no upper bound)."""

    def parse(value: Any) -> int:
        ns = parse_duration_ns(value)
        if ns < low:
            need = "greater than 0" if low == 1 else f"at least {format_duration_ns(low)}"
            raise ValueError(f"must be {need}; expected a duration such as 500ms; "
                             f"got {_show(value)}")
        if high is not None and ns > high:
            raise ValueError(f"must be at most {format_duration_ns(high)}; expected a duration "
                             f"such as 500ms; got {_show(value)}")
        return ns

    return parse


_positive_duration = _duration_within(1, None)


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


def _int_at_least(low: int, example: str, high: int | None = None) -> Callable[[Any], int]:
    """A whole-number parser for [low, high] (high None: no upper bound)."""
    bound = f">= {low}" if high is None else f">= {low} and <= {high}"

    def parse(value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if (isinstance(value, bool) or not isinstance(value, int) or value < low
                or (high is not None and value > high)):
            raise ValueError(f"expected a whole number {bound}, e.g. {example}; "
                             f"got {_show(value)}")
        return value

    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text (quote it if it looks like a number); got {_show(value)}")
    return value


def _name(value: Any) -> str:
    # The name becomes a folder (results/<name>/), so it must be a safe slug: no '/', no '..'
    # climbing out of results/, no leading dot or dash, nothing a shell would mangle.
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValueError("expected a name of 1-64 letters, digits, '.', '_' or '-', starting "
                         f"with a letter or digit, such as baseline; got {_show(value)}")
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


def _non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"expected a number >= 0 such as 100; got {_show(value)}")
    return float(value)


def _fraction(value: Any) -> float:
    number = _non_negative_number(value)
    if number > 1:
        raise ValueError(f"expected a fraction between 0 and 1 such as 0.95; got {_show(value)}")
    return number


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
NonNegative = Annotated[float, _leaf(_non_negative_number)]
Fraction = Annotated[float, _leaf(_fraction)]
Whole = Annotated[int, _leaf(_int_at_least(0, "1"))]
