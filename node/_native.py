"""Use the optional compiled (mypyc) build of the hot modules when one matches the sources.

Why this exists: the replica's per-message path, the runtime and the simulator's transport
are plain Python, and CPython's cost per call and per attribute is most of what a message
costs. `medbft native build` compiles those modules, unchanged, with mypyc into a directory
of their own (`.native/<python tag>/` next to the packages, or `$MEDBFT_NATIVE_DIR`). This
module puts that directory first on the search path of the packages it covers (`node`,
`node.pbft`, `node.ledger`, `sim`), so the compiled module is imported where one exists and
the source otherwise. Results are the same either way: the compiled modules are the same
code, and tests compare the two (tests/test_native.py).

It is all or nothing, decided once per process: the build is used only when every module it
holds, and every project module those import (mypyc read them to compile), is byte for byte
the source on disk (a manifest of SHA-256s), for this Python. A stale build is never used
(compiled modules call each other directly, so mixing a compiled module with an edited
source one is not safe); a warning says so once. `MEDBFT_NATIVE=0` turns the build off.

Nothing here may import the rest of the project: every package's `__init__` calls it first.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

__all__ = ["MANIFEST", "activate", "active", "module_file", "native_dir", "state"]

#: The manifest `medbft native build` writes beside the compiled modules.
MANIFEST = "manifest.json"
#: Where the packages live: the directory holding `node/`, `sim/` and `medbft/`.
SOURCE_ROOT = Path(__file__).resolve().parent.parent

_state: str | None = None  # "on", "off", "absent", "stale: <why>", decided once


def native_dir() -> Path:
    """Where the compiled modules for this Python are (or would be) kept."""
    given = os.environ.get("MEDBFT_NATIVE_DIR")
    base = Path(given) if given else SOURCE_ROOT / ".native"
    return base / sys.implementation.cache_tag


def _source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _decide() -> str:
    if os.environ.get("MEDBFT_NATIVE", "1") == "0":
        return "off"
    where = native_dir()
    try:
        manifest = json.loads((where / MANIFEST).read_text())
    except FileNotFoundError:
        return "absent"
    except (OSError, ValueError) as exc:
        return f"stale: its manifest is unreadable ({exc})"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("modules"), dict):
        return "stale: its manifest is not one `medbft native build` writes"
    if manifest.get("python") != sys.implementation.cache_tag:
        return f"stale: built for {manifest.get('python')}"
    sources = {**manifest.get("depends", {}), **manifest["modules"]}
    for module, digest in sorted(sources.items()):
        source = module_file(module)
        try:
            if _source_digest(source) != digest:
                return f"stale: {source.relative_to(SOURCE_ROOT)} changed since the build"
        except OSError:
            return f"stale: {module}'s source is missing"
    for module in sorted(manifest["modules"]):
        parts = module.split(".")
        if not _extension(where.joinpath(*parts[:-1]), parts[-1]):
            return f"stale: the compiled {module} is missing"
    for shared in manifest.get("shared", ()):
        if not _extension(where, shared):
            return f"stale: its shared library {shared} is missing"
    return "on"


def module_file(module: str, root: Path = SOURCE_ROOT) -> Path:
    """The source of `module` under `root` (a package's is its `__init__.py`)."""
    plain = root.joinpath(*module.split(".")).with_suffix(".py")
    return plain if plain.is_file() else root.joinpath(*module.split("."), "__init__.py")


def _extension(directory: Path, name: str) -> bool:
    """Whether `directory` holds an extension module `name` this Python can import."""
    return any((directory / f"{name}{suffix}").is_file() for suffix in EXTENSION_SUFFIXES)


def state() -> str:
    """'on' (the compiled modules are in use), 'off' (MEDBFT_NATIVE=0), 'absent' (no build)
    or 'stale: <why>'; decided at the first call and fixed for the process."""
    global _state
    if _state is None:
        _state = _decide()
        if _state == "on":
            where = str(native_dir())
            if where not in sys.path:
                sys.path.append(where)  # mypyc's shared library is a top-level module
        elif _state.startswith("stale"):
            warnings.warn(f"medbft: not using the compiled modules in {native_dir()}: "
                          f"{_state[7:]}; run `medbft native build` again (or `medbft native "
                          f"clean`)", RuntimeWarning, stacklevel=3)
    return _state


def active() -> bool:
    """True when the compiled modules are in use in this process."""
    return state() == "on"


def activate(package: str, path: list[str]) -> None:
    """Called by a package's `__init__` with its `__name__` and `__path__`: search the
    compiled build's directory for that package first, when the build is in use."""
    if state() != "on":
        return
    where = str(native_dir().joinpath(*package.split(".")))
    if where not in path:
        path.insert(0, where)
