"""The layers hold: who may import whom, and no import cycles (lazy imports included).

The rules (docs/design.md#layers):
- `node/` (what one replica runs, deployable alone) imports nothing from `sim/` or `medbft/`;
- `sim/` (the virtual-time backend) and `medbft/real/` (the real-network harness) never
  import each other;
- `sim/` reads only the shared definitions of `medbft/` (scenario, summary, targets, traffic,
  apps, metrics, units, errors), never its commands, views, sweeps, fuzzing or run folders;
- no module imports itself back through others, whether at import time or inside a function.
Every import statement counts, wherever it is written.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("node", "sim", "medbft")
SIM_MAY_READ = ("medbft.scenario", "medbft.summary", "medbft.targets", "medbft.traffic",
                "medbft.apps", "medbft.metrics", "medbft.units", "medbft.errors")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(source: str, module: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The project modules `source` imports (a `from a import b` names a.b when that is a
    module, else a), relative imports resolved."""
    known = set(known)
    found: set[str] = set()
    tree = ast.parse(source)
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: never imported at run time
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {name for name in found if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path.read_text(), name, path.name == "__init__.py", modules)
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def breaches(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            if under(src, "node") and (under(dst, "sim") or under(dst, "medbft")):
                out.append(f"{src} -> {dst}: node/ imports nothing from sim/ or medbft/")
            if under(src, "sim") and under(dst, "medbft") and not any(
                    under(dst, ok) for ok in SIM_MAY_READ):
                out.append(f"{src} -> {dst}: sim/ reads only medbft's shared definitions")
            if under(src, "sim") and under(dst, "medbft.real"):
                out.append(f"{src} -> {dst}: sim/ never imports medbft/real/")
            if under(src, "medbft.real") and under(dst, "sim"):
                out.append(f"{src} -> {dst}: medbft/real/ never imports sim/")
    return out


# -- the checker can fail ------------------------------------------------------------------------


def test_the_cycle_finder_finds_a_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_rule_checker_names_each_forbidden_edge() -> None:
    graph = {"node.replica": {"sim.loop"}, "sim.run": {"medbft.real.load", "medbft.scenario"},
             "medbft.real.load": {"sim.run"}, "sim.faults": {"medbft.cli.run"}}
    found = breaches(graph)
    assert len(found) == 5, found
    assert any(f.startswith("node.replica -> sim.loop") for f in found)
    assert not any("medbft.scenario" in f for f in found)


def test_lazy_and_relative_imports_are_seen() -> None:
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    source = "def f():\n    from pkg import b\n    from . import c\n    import pkg.a\n"
    assert imports_of(source, "pkg.x", False, known) == {"pkg.a", "pkg.b", "pkg.c"}


# -- the project -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_covers_every_layer(graph: dict[str, set[str]]) -> None:
    assert {"node.messages", "sim.run", "medbft.cli", "medbft.real.load"} <= set(graph)
    assert "medbft.scenario" in graph["sim.run"]


def test_no_import_breaks_the_layer_rules(graph: dict[str, set[str]]) -> None:
    assert breaches(graph) == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []
