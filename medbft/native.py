"""`medbft native build`: compile the hot modules with mypyc, as an optional build.

Why this exists: a simulated run spends most of its time in the replica's message handlers,
the runtime and the simulator's transport, where CPython's cost per call and per attribute
dominates. mypyc compiles those modules, unchanged, to C extensions; they run the same code
with fewer instructions (docs/benchmarks.md gives the measured gain). The build is optional:
everything works without it, it needs a C compiler and Python's headers, and it is never
used unless it matches the sources (node/_native.py decides, once per process).

How: the packages are copied to a scratch directory, mypyc compiles `MODULES` there (one
shared library plus one small module per compiled module), and the results go to
`node._native.native_dir()` with a manifest of the sources' SHA-256s. The copy keeps the
work tree free of build products, and the manifest is written from the copy that was
compiled, so an edit made during the build makes the build stale rather than wrong.

Which modules: those on the per-message path that compile unchanged and that nothing
subclasses or patches at run time. The messages (`node.messages`) are compiled to native
classes: every handler reads their fields and every step builds, encodes or decodes some
(their classes and codecs are written out for that; an int field stores a `bool` as the int
it equals, as below, which no decoded message can carry). `sim.loop` subclasses asyncio's
loop. The ledger's rules stay Python: tests subclass `Ledger` and patch its rules, and
compiled code turns a `bool` that reaches an `int` annotation into an int (`True` becomes
1), which changed the hash of an ill-typed transaction leaf (tests/test_ledger_speedups.py);
in the rules, whose values come from JSON, that is a risk not worth the 2-4% it saved. Its
store, `node.ledger.state`, is compiled: every replica writes every block through it (once
executing, or replaying another replica's writes in a simulation); its keys and row values
are typed `Any` (rows are tuples, as the rules build them), so it stores whatever the rules
hand it as Python does (tests/test_ledger_speedups.py, under both builds). That saved about
2% of a run at n = 4 and at n = 16 (callgrind). `node.events` and `node.client` compile but
measured no gain (n = 16: the same instructions per simulated second within 0.1%;
`node.client` again with the messages compiled: 0.9% fewer at n = 4), so they stay Python
too. `sim.events` compiled stores a new int object per value of its compact rows, which
costs the memory those rows were made to save. Tests that patch or subclass a compiled
module are marked `pure_python` and left out of the compiled test run
(tests/test_native.py).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medbft.errors import UsageError
from node import _native

__all__ = ["MODULES", "build", "clean", "describe"]

#: The compiled modules, by import name.
MODULES = (
    "node.crypto", "node.envelope", "node.membership", "node.quorum", "node.runtime",
    "node.pbft.checkpoint", "node.pbft.durable", "node.pbft.log", "node.pbft.normal_case",
    "node.pbft.outbox", "node.pbft.replica", "node.pbft.transfer", "node.pbft.view_change",
    "sim.cpu", "sim.network", "sim.run", "node.ledger.state", "node.messages",
)
#: What is copied to the scratch directory for mypy to read (it follows imports).
_COPIED = ("node", "sim", "medbft")


def _project_imports(root: Path, module: str) -> set[str]:
    """The project modules `module`'s source imports (what mypyc read to compile it: a
    constant or a class it relied on may live there)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(_native.module_file(module, root).read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        if isinstance(node, ast.ImportFrom) and node.module:
            names += [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] not in _COPIED:
                continue
            if _native.module_file(name, root).is_file():
                found.add(name)
    return found - set(MODULES)


def build(log: Path | None = None) -> tuple[Path, float]:
    """Compile `MODULES` into `node._native.native_dir()`; returns (that directory, seconds).
    Raises UsageError (with the compiler's last lines) when the build fails."""
    start = time.monotonic()
    dest = _native.native_dir()
    root = _native.SOURCE_ROOT
    with tempfile.TemporaryDirectory(prefix="medbft-native-") as scratch:
        work = Path(scratch)
        ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc")
        for package in _COPIED:
            shutil.copytree(root / package, work / package, ignore=ignore)
        config = root / "pyproject.toml"
        if config.exists():  # mypy's settings only: setuptools reads the rest as a package's
            text = config.read_text()
            first = text.find("[tool.mypy]")
            if first >= 0:
                after = text.find("\n[", first + 1)
                block = text[first:] if after < 0 else text[first:after + 1]
                (work / "pyproject.toml").write_text(block)
        sources = [str(_native.module_file(m, work).relative_to(work)) for m in MODULES]
        env = {**os.environ, "PYTHONPATH": str(work), "MEDBFT_NATIVE": "0"}
        try:
            done = subprocess.run([sys.executable, "-m", "mypyc", *sources], cwd=work, env=env,
                                  capture_output=True, text=True, check=False)
        except OSError as exc:
            raise UsageError(f"cannot run mypyc: {exc}") from exc
        output = done.stdout + done.stderr
        if log is not None:
            log.write_text(output)
        if done.returncode != 0:
            tail = "\n".join(output.strip().splitlines()[-12:])
            hint = ("install the build tools with pip install -e '.[native]'"
                    if "No module named mypyc" in output else
                    "it needs a C compiler and Python's headers")
            raise UsageError(f"the native build failed ({hint}):\n{tail}")
        staging = dest.with_name(dest.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shared_names = []
        for shared in sorted(work.glob("*__mypyc.*")):
            shutil.copy2(shared, staging / shared.name)
            shared_names.append(shared.name.split(".")[0])
        digests = {}
        for module in MODULES:
            parts = module.split(".")
            built = [p for p in sorted(work.joinpath(*parts[:-1]).glob(f"{parts[-1]}.*"))
                     if p.suffix in (".so", ".pyd")]
            if not built:
                raise UsageError(f"the native build produced no module for {module}")
            target = staging.joinpath(*parts[:-1])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(built[0], target / built[0].name)
            digests[module] = _native._source_digest(_native.module_file(module, work))
        depends = sorted(set().union(*(_project_imports(work, m) for m in MODULES)))
        manifest = {"python": sys.implementation.cache_tag, "modules": digests,
                    "depends": {m: _native._source_digest(_native.module_file(m, work))
                                for m in depends},
                    "shared": shared_names, "built_with": "mypyc"}
        (staging / _native.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    return dest, time.monotonic() - start


def clean() -> bool:
    """Remove the compiled modules for this Python; True if there were any."""
    dest = _native.native_dir()
    if not dest.exists():
        return False
    shutil.rmtree(dest)
    return True


def describe() -> str:
    """One line: whether this process runs the compiled modules, and why not."""
    state = _native.state()
    where = _native.native_dir()
    if state == "on":
        return f"compiled modules in use ({len(MODULES)} modules, {where})"
    if state == "off":
        return "pure Python (MEDBFT_NATIVE=0)"
    if state == "absent":
        return "pure Python (no native build; `medbft native build` makes one)"
    return f"pure Python (the native build in {where} is {state})"
