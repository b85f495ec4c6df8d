"""Parse and format the human-friendly quantities used in scenario files.

Scenario files are written by researchers, so they say ``10ms``, ``1Gbps``, ``200/s`` or ``1KiB``
rather than raw integers. This module turns those strings into the exact integers (or floats) the
simulator computes with, and back again, in one place, so every part of medbft agrees on what a
unit means:

* durations -> integer nanoseconds (``parse_duration_ns``), or float nanoseconds for
  sub-nanosecond CPU costs (``parse_duration_ns_float``); suffixes ``ns``, ``us`` (also ``µs``),
  ``ms``, ``s``, ``m`` (minutes). A bare number is refused because it is ambiguous, except ``0``.
* bandwidth -> integer bits per second (``parse_bandwidth_bps``); ``bps``, ``Kbps``, ``Mbps``,
  ``Gbps``, ``Tbps``; decimal prefixes (1Kbps = 1000 bit/s). A bare number is refused.
* rates -> float events per second (``parse_rate_per_s``); ``200/s``, ``200``, ``12000/min``.
* sizes -> integer bytes (``parse_size_bytes``); ``64``, ``64B``, ``1KB`` (1000), ``1KiB`` (1024).

Arithmetic is done in ``decimal.Decimal`` so that ``1.1us`` is exactly 1100 ns; results that must be
integers are rounded to nearest, halves away from zero. Every parse error is a ``ValueError`` whose
message says what is allowed and gives an example, so callers can show it to users verbatim.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = [
    "BANDWIDTH_UNITS_BPS",
    "DURATION_UNITS_NS",
    "RATE_UNITS_PER_S",
    "SIZE_UNITS_BYTES",
    "format_bandwidth_bps",
    "format_duration_ns",
    "parse_bandwidth_bps",
    "parse_duration_ns",
    "parse_duration_ns_float",
    "parse_rate_per_s",
    "parse_size_bytes",
]

#: Duration suffix -> nanoseconds. ``µ`` (micro sign) and ``μ`` (Greek mu) both mean micro.
DURATION_UNITS_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
}

#: Bandwidth suffix (matched case-insensitively) -> bits per second. Decimal prefixes.
BANDWIDTH_UNITS_BPS: dict[str, int] = {
    "bps": 1,
    "kbps": 1_000,
    "mbps": 1_000_000,
    "gbps": 1_000_000_000,
    "tbps": 1_000_000_000_000,
}

#: Rate denominator -> seconds it spans.
RATE_UNITS_PER_S: dict[str, Decimal] = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "min": Decimal(60),
    "h": Decimal(3600),
}

#: Size suffix (case-sensitive except ``kB``) -> bytes. ``KB`` is decimal, ``KiB`` binary.
SIZE_UNITS_BYTES: dict[str, int] = {
    "B": 1,
    "KB": 1_000,
    "kB": 1_000,
    "MB": 1_000_000,
    "GB": 1_000_000_000,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
}

_NUMBER = r"(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
_QUANTITY_RE = re.compile(rf"\s*{_NUMBER}\s*(?P<unit>[^\s0-9.+-][^\s]*)?\s*")

_DURATION_HINT = "a duration such as 10ms or 1.5s (units: ns, us, ms, s, m)"
_BANDWIDTH_HINT = "a bandwidth such as 100Mbps or 1Gbps (units: bps, Kbps, Mbps, Gbps, Tbps)"
_RATE_HINT = "a rate such as 200/s, 12000/min or a plain number meaning per second"
_SIZE_HINT = "a size such as 64, 64B, 1KB (1000 bytes) or 1KiB (1024 bytes)"


def _show(value: object) -> str:
    """Render a user value for an error message, shortened if huge."""
    if isinstance(value, bool) or value is None:  # show YAML spellings
        return {True: "true", False: "false", None: "null"}[value]
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _split(value: object, hint: str) -> tuple[Decimal, str]:
    """Split ``'1.5 ms'`` into ``(Decimal('1.5'), 'ms')``; numbers give an empty unit."""
    if isinstance(value, bool):
        raise ValueError(f"expected {hint}; got {_show(value)}")
    if isinstance(value, int):
        return Decimal(value), ""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected {hint}; got {_show(value)}")
        return Decimal(repr(value)), ""
    if not isinstance(value, str):
        raise ValueError(f"expected {hint}; got {_show(value)}")
    match = _QUANTITY_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"expected {hint}; got {_show(value)}")
    try:
        number = Decimal(match["num"])
    except InvalidOperation:  # pragma: no cover - the regex only admits valid decimals
        raise ValueError(f"expected {hint}; got {_show(value)}") from None
    return number, match["unit"] or ""


def _non_negative(number: Decimal, value: object, hint: str, what: str) -> None:
    if number < 0:
        raise ValueError(f"{what} cannot be negative; expected {hint}; got {_show(value)}")


def _round(number: Decimal) -> int:
    return int(number.to_integral_value(rounding=ROUND_HALF_UP))


def _duration_decimal(value: object) -> Decimal:
    number, unit = _split(value, _DURATION_HINT)
    _non_negative(number, value, _DURATION_HINT, "a duration")
    if unit == "":
        if number == 0:
            return Decimal(0)
        raise ValueError(
            f"a bare number is ambiguous as a duration; add a unit, e.g. '{value}ms' or "
            f"'{value}s' (units: ns, us, ms, s, m); got {_show(value)}"
        )
    scale = DURATION_UNITS_NS.get(unit)
    if scale is None:
        raise ValueError(f"unknown duration unit {unit!r}; expected {_DURATION_HINT}; "
                         f"got {_show(value)}")
    return number * scale


def parse_duration_ns(value: str | int | float) -> int:
    """Parse a duration like ``'10ms'`` or ``'1.3us'`` into integer nanoseconds (rounded).

    >>> parse_duration_ns('1.3us')
    1300
    """
    return _round(_duration_decimal(value))


def parse_duration_ns_float(value: str | int | float) -> float:
    """Parse a duration into float nanoseconds, keeping fractions (``'0.5ns'`` -> 0.5)."""
    return float(_duration_decimal(value))


def parse_bandwidth_bps(value: str | int | float) -> int:
    """Parse a bandwidth like ``'1Gbps'`` into integer bits per second (must be > 0)."""
    number, unit = _split(value, _BANDWIDTH_HINT)
    if unit == "":
        raise ValueError(
            "a bare number is ambiguous as a bandwidth (bits or bytes?); add a unit, "
            f"e.g. '{value}Mbps' (units: bps, Kbps, Mbps, Gbps, Tbps); got {_show(value)}"
        )
    scale = BANDWIDTH_UNITS_BPS.get(unit.lower())
    if scale is None:
        raise ValueError(f"unknown bandwidth unit {unit!r}; expected {_BANDWIDTH_HINT}; "
                         f"got {_show(value)}")
    bps = _round(number * scale)
    if bps <= 0:
        raise ValueError(f"a bandwidth must be positive (omit it for unlimited); expected "
                         f"{_BANDWIDTH_HINT}; got {_show(value)}")
    return bps


def parse_rate_per_s(value: str | int | float) -> float:
    """Parse a rate like ``'200/s'``, ``'12000/min'`` or ``200`` into events per second (>= 0)."""
    if isinstance(value, str) and "/" in value:
        head, _, denominator = value.rpartition("/")
        match = _QUANTITY_RE.fullmatch(head)
        if match is None or match["unit"]:
            raise ValueError(f"expected {_RATE_HINT}; got {_show(value)}")
        number = Decimal(match["num"])
        span = RATE_UNITS_PER_S.get(denominator.strip())
        if span is None:
            raise ValueError(f"unknown rate unit '/{denominator.strip()}' (allowed: /ms, /s, "
                             f"/min, /h); expected {_RATE_HINT}; got {_show(value)}")
        number = number / span
    else:
        number, unit = _split(value, _RATE_HINT)
        if unit:
            raise ValueError(f"expected {_RATE_HINT}; got {_show(value)}")
    _non_negative(number, value, _RATE_HINT, "a rate")
    return float(number)


def parse_size_bytes(value: str | int | float) -> int:
    """Parse a size like ``64``, ``'64B'``, ``'1KB'`` (1000) or ``'1KiB'`` (1024) into bytes."""
    number, unit = _split(value, _SIZE_HINT)
    _non_negative(number, value, _SIZE_HINT, "a size")
    scale = SIZE_UNITS_BYTES.get(unit or "B")
    if scale is None:
        raise ValueError(f"unknown size unit {unit!r}; expected {_SIZE_HINT}; "
                         f"got {_show(value)}")
    total = number * scale
    if total != total.to_integral_value():
        raise ValueError(f"not a whole number of bytes; expected {_SIZE_HINT}; "
                         f"got {_show(value)}")
    return int(total)


def format_duration_ns(ns: int | float) -> str:
    """Format nanoseconds with the largest unit that represents them exactly.

    ``10_000_000`` -> ``'10ms'``, ``1300`` -> ``'1300ns'``, ``0`` -> ``'0s'``, ``0.5`` ->
    ``'0.5ns'``. The result parses back to the same value with ``parse_duration_ns[_float]``.
    """
    if isinstance(ns, float):
        if not math.isfinite(ns):
            raise ValueError(f"cannot format non-finite duration {ns!r}")
        if not ns.is_integer():
            return f"{ns!r}ns"
        ns = int(ns)
    if ns == 0:
        return "0s"
    for unit in ("m", "s", "ms", "us"):
        scale = DURATION_UNITS_NS[unit]
        if ns % scale == 0:
            return f"{ns // scale}{unit}"
    return f"{ns}ns"


def format_bandwidth_bps(bps: int) -> str:
    """Format bits per second with the largest exact decimal unit (``10**9`` -> ``'1Gbps'``)."""
    for unit, scale in (("Tbps", 10**12), ("Gbps", 10**9), ("Mbps", 10**6), ("Kbps", 10**3)):
        if bps % scale == 0 and bps != 0:
            return f"{bps // scale}{unit}"
    return f"{bps}bps"
