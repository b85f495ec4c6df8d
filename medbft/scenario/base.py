"""The base of every mapping in a scenario file: frozen, closed, and kind about keys.

Every section of a scenario (the top level, ``network``, each link, each fault ...) is a mapping
a person typed, so each shares the same rules: shorthands such as ``latency: 10ms`` become
mappings, an unknown key is reported with the allowed ones and a "did you mean" guess, ``null``
may mean "use the default", and the validated model is immutable. ``_Spec`` holds those rules
once; it knows no particular field (those are in ``specs``, ``faults`` and ``model``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

from medbft.scenario.errors import _fail, _show


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
