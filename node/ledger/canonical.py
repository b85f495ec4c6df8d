"""Canonical JSON (sorted keys, no whitespace, ASCII only), built for speed.

Why this exists: the ledger hashes canonical JSON of every row it writes, every audit and event
chain entry and every block header: about seven encodings per transaction on every replica.
`json.JSONEncoder.encode` builds a new C encoder object on each call, which costs as much as the
encoding itself for the small tuples the ledger encodes. `CanonicalJson` builds it once. Its
output is exactly that of `json.JSONEncoder(sort_keys=True, separators=(",", ":"),
ensure_ascii=True, allow_nan=...)`: at import it checks that on a probe and falls back to
the standard encoder if this Python's C encoder differs (or is missing).

The one difference: no circular-reference check (the ledger encodes tuples, strings and
numbers it built itself, or JSON it parsed, which cannot be circular).
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

# The C accelerator's encoder factory (None without it); typeshed does not declare it.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_encode_str = json.encoder.encode_basestring_ascii

__all__ = ["CanonicalJson"]

_PROBE = {"b": [1, -2.5, None, True, False], "a": ("é\n\"", {"z": 0, "y": "x"}), "c": ""}


class CanonicalJson:
    """`encode(obj) -> str`, as json.JSONEncoder with sort_keys, compact separators and
    ensure_ascii; `allow_nan=False` refuses NaN and infinities with ValueError."""

    __slots__ = ("encode",)

    encode: Callable[[Any], str]
    """The encoder itself, stored on the instance: `enc.encode(obj)` calls the C-backed closure
    directly, without a method frame in between (the ledger encodes ~6 values per
    transaction on every replica)."""

    def __init__(self, *, allow_nan: bool = True) -> None:
        reference = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                                     allow_nan=allow_nan)
        self.encode = reference.encode
        if _c_make_encoder is None:  # pragma: no cover
            return
        try:
            iterencode = _c_make_encoder(None, reference.default, _encode_str, None, ":", ",",
                                         True, False, allow_nan)

            def fast(obj: Any) -> str:
                return "".join(iterencode(obj, 0))

            if fast(_PROBE) == reference.encode(_PROBE) and fast("x") == reference.encode("x"):
                self.encode = fast
        except (TypeError, ValueError):  # pragma: no cover - another C signature
            pass
