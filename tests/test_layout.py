"""How node/ is put together: the PBFT package's public names and module shape, and no import
cycles (counting imports inside functions and under TYPE_CHECKING)."""

from __future__ import annotations

import ast
from pathlib import Path

import node.pbft

ROOT = Path(__file__).parent.parent
PBFT = ROOT / "node" / "pbft"


def test_pbft_exports_a_short_list() -> None:
    assert node.pbft.__all__ == ["BENIGN_DROPS", "NULL_DIGEST", "Replica", "decide_new_view"]


def test_pbft_modules_say_why_they_exist_and_what_they_must_not_know() -> None:
    for path in sorted(PBFT.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "Why this exists" in doc, path.name
        assert "must not know" in doc, path.name
        assert len(path.read_text().splitlines()) <= 600, f"{path.name}: read it in one sitting"


def _imports(root: Path) -> dict[str, set[str]]:
    """module -> the modules under `root` it imports (anywhere in its body)."""
    modules: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for stmt in ast.walk(ast.parse(path.read_text())):
            if isinstance(stmt, ast.Import):
                deps.update(a.name for a in stmt.names)
            elif isinstance(stmt, ast.ImportFrom):
                base = stmt.module or ""
                if stmt.level:
                    up = package.split(".")[:len(package.split(".")) - stmt.level + 1]
                    base = ".".join([*up, base] if base else up)
                subs = {f"{base}.{a.name}" for a in stmt.names} & modules.keys()
                deps.update(subs or {base})
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return [*path[path.index(w):], w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_node_has_no_import_cycles() -> None:
    graph = _imports(ROOT / "node")
    assert "node.pbft.replica" in graph["node.pbft"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
