"""Loading scenarios: YAML files and ``--set`` overrides in, a ``Scenario`` or one error out.

This is the door every scenario comes through (``medbft run``, sweeps, the fuzzer, tests). It
reads the file (refusing duplicate YAML keys, which PyYAML would silently keep the last of),
applies ``dotted.path=value`` overrides, validates, and turns pydantic's errors into the
package's ``Problem`` lines -- blaming an override when it set the field at fault. What a valid
scenario is belongs to ``model`` and below; this module only reads, overrides and reports.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from medbft.scenario.base import _UnknownKey
from medbft.scenario.errors import _ERROR_TYPE, Problem, ScenarioError, _dotted, _names, _show
from medbft.scenario.faults import _FAULT_TAG
from medbft.scenario.fields import ROLES
from medbft.scenario.model import Scenario

__all__ = ["apply_overrides", "load_scenario", "parse_scenario"]


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
