"""The sweep file: read, validate and expand it into scenario points.

Why this exists: a bad sweep file should stop before any run starts, with a message naming
the file and the field. `load_sweep` checks every field; `expand` builds and validates the
scenario of every grid combination up front.

Sweep file (YAML; paths relative to the file)::

    name: scale                    # optional, default: the file's stem
    description: ...               # optional
    base: ../baseline.yaml         # required: the base scenario
    set: {duration: 3s}            # optional: overrides for every point (mapping or list of
                                   #   'path=value' strings)
    grid:                          # required: dotted path -> list of values (>= 1 each)
      nodes: [4, 7, 10, 16, 31]
      protocol.batch_size: [1, 10]
    seeds: 3                       # optional, default 3: seeds 1..3; or a list [7, 8, 9]
    plots:                         # optional: default, each grid key against the main metrics,
      - {x: nodes, y: throughput_tps, lines: protocol.batch_size}   # one line per other key

What it must not know: how points are run or stored (execute.py, store.py).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medbft.errors import UsageError
from medbft.scenario import ScenarioError, load_scenario, scenario_hash, to_dict
from medbft.scenario.model import simulation_problems

__all__ = ["DEFAULT_METRICS", "Sweep", "SweepPoint", "default_plots", "expand", "load_sweep",
           "value_text"]

#: Metrics drawn by default against each grid parameter.
DEFAULT_METRICS = ("throughput_tps", "latency_ms.p50", "latency_ms.p99",
                   "messages.per_committed_request")
_SWEEP_KEYS = {"name", "description", "base", "set", "grid", "seeds", "plots"}


@dataclass(frozen=True)
class SweepPoint:
    """One combination of grid values: its overrides and the scenario they give."""

    params: dict[str, Any]
    overrides: tuple[str, ...]
    scenario: dict[str, Any]
    scenario_hash: str


@dataclass
class Sweep:
    """A validated sweep file."""

    name: str
    source: str
    base: Path
    fixed: tuple[str, ...]
    grid: dict[str, list[Any]]
    seeds: list[int]
    plots: list[dict[str, str]] = field(default_factory=list)
    description: str = ""

    def spec(self) -> dict[str, Any]:
        """The JSON-able form saved as sweep.json (what `medbft plot` needs)."""
        return {"name": self.name, "source": self.source, "base": str(self.base),
                "set": list(self.fixed), "grid": self.grid, "seeds": self.seeds,
                "plots": self.plots or default_plots(list(self.grid)),
                "description": self.description}


def value_text(value: Any) -> str:
    """A grid value as override text and as a CSV cell: YAML flow (JSON) for non-strings."""
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))


def _bad(source: str, where: str, message: str) -> UsageError:
    return UsageError(f"{source}: {where}: {message}" if where else f"{source}: {message}")


def _fixed_overrides(raw: Any, source: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, Mapping):
        return tuple(f"{k}={value_text(v)}" for k, v in raw.items())
    if isinstance(raw, list) and all(isinstance(x, str) and "=" in x for x in raw):
        return tuple(raw)
    raise _bad(source, "set", "expected a mapping {path: value} or a list of 'path=value' "
                              f"strings, e.g. set: {{duration: 3s}}; got {raw!r}")


def _grid(raw: Any, source: str) -> dict[str, list[Any]]:
    if not isinstance(raw, Mapping) or not raw:
        raise _bad(source, "grid", "expected a mapping of dotted paths to lists of values, "
                                   "e.g. grid: {nodes: [4, 7], protocol.batch_size: [1, 10]}")
    out: dict[str, list[Any]] = {}
    for key, values in raw.items():
        if not isinstance(key, str) or key in ("seed", "seeds"):
            raise _bad(source, f"grid.{key}", "use `seeds:` for seeds; grid keys are dotted "
                                              "scenario paths such as protocol.batch_size")
        if not isinstance(values, list) or not values:
            raise _bad(source, f"grid.{key}", f"expected a non-empty list of values; got "
                                              f"{values!r}")
        out[key] = values
    return out


def _seeds(raw: Any, source: str) -> list[int]:
    if raw is None:
        return [1, 2, 3]
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return list(range(1, raw + 1))
    if isinstance(raw, list) and raw and all(isinstance(s, int) and s >= 0 for s in raw):
        return list(dict.fromkeys(raw))
    raise _bad(source, "seeds", f"expected a count >= 1 (seeds 1..N) or a list of seeds "
                                f"such as [7, 8, 9]; got {raw!r}")


def _plots(raw: Any, grid: Mapping[str, Any], source: str) -> list[dict[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad(source, "plots", "expected a list of {x, y, lines} mappings")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not {"x", "y"} <= set(item) or not set(item) <= {
                "x", "y", "lines"}:
            raise _bad(source, f"plots[{i}]", "expected {x: <grid key>, y: <metric>, lines: "
                                              "<grid key, optional>}")
        for key in ("x", "lines"):
            if key in item and item[key] not in grid:
                raise _bad(source, f"plots[{i}].{key}", f"{item[key]!r} is not a grid key; "
                                                        f"grid keys: {', '.join(grid)}")
        out.append({k: str(v) for k, v in item.items()})
    return out


def default_plots(keys: Sequence[str]) -> list[dict[str, str]]:
    """Each grid key against each default metric; with two keys, one line per value of the
    other (more keys are pooled: name the figures you want in `plots:`)."""
    out = []
    for x in keys:
        others = [k for k in keys if k != x]
        for y in DEFAULT_METRICS:
            spec = {"x": x, "y": y}
            if len(others) == 1:
                spec["lines"] = others[0]
            out.append(spec)
    return out


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read and validate a sweep file; raise UsageError naming the file and field."""
    source = os.fspath(path)
    try:
        raw = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _bad(source, "", "file not found; expected a sweep YAML file such as "
                               "scenarios/sweeps/scale.yaml") from None
    except (OSError, yaml.YAMLError) as exc:
        raise _bad(source, "", f"cannot read the sweep file: {exc}") from None
    if not isinstance(raw, Mapping):
        raise _bad(source, "", "expected a mapping with base, grid and seeds")
    unknown = sorted(set(map(str, raw)) - _SWEEP_KEYS)
    if unknown:
        raise _bad(source, unknown[0], f"unknown field; allowed: {', '.join(sorted(_SWEEP_KEYS))}")
    if not isinstance(raw.get("base"), str):
        raise _bad(source, "base", "missing or not a path; e.g. base: ../baseline.yaml")
    grid = _grid(raw.get("grid"), source)
    return Sweep(
        name=str(raw.get("name") or Path(source).stem), source=source,
        base=(Path(source).parent / raw["base"]), fixed=_fixed_overrides(raw.get("set"), source),
        grid=grid, seeds=_seeds(raw.get("seeds"), source),
        plots=_plots(raw.get("plots"), grid, source),
        description=str(raw.get("description") or ""))


def expand(sweep: Sweep) -> list[SweepPoint]:
    """Every grid combination, in grid order (first key slowest), validated up front so a bad
    value stops the sweep before any run starts."""
    points = []
    keys = list(sweep.grid)
    for combo in itertools.product(*(sweep.grid[k] for k in keys)):
        params = dict(zip(keys, combo, strict=True))
        overrides = (*sweep.fixed, *(f"{k}={value_text(v)}" for k, v in params.items()))
        try:
            scenario = load_scenario(sweep.base, overrides=overrides)
            if problems := simulation_problems(scenario):
                raise ScenarioError.from_problems(str(sweep.base), problems)
        except ScenarioError as exc:
            raise UsageError(f"{sweep.source}: point {params}: {exc}") from None
        points.append(SweepPoint(params, overrides, to_dict(scenario), scenario_hash(scenario)))
    return points

