"""Scenario errors: the one exception a bad scenario raises, and the helpers that word it.

Researchers write scenario files by hand, so every mistake must become a one-line message naming
the file, the dotted field path and what is allowed -- never a traceback. This module holds the
error type (``ScenarioError``, one ``Problem`` per line), the way validators inside the pydantic
models report problems (``_fail``) and the small text helpers every message uses. It knows
nothing about which fields a scenario has; it is the bottom of the package and imports none of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, NoReturn

from pydantic_core import PydanticCustomError

__all__ = ["Loc", "Problem", "ScenarioError"]

#: pydantic error type of the problems raised by ``_fail`` (unwrapped by ``loading._problems``).
_ERROR_TYPE = "medbft"
Loc = tuple[str | int, ...]


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
