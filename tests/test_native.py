"""The optional compiled build (`medbft native build`) runs the same code to the same results.

It builds the modules medbft.native lists with mypyc into a scratch directory, then checks
that the build is used only when it matches the sources, that compiled and pure-Python runs
of shipped scenarios and fuzz seeds give byte-identical summaries, traces and events, and
that every quick test (not slow, no node processes) passes against the compiled modules,
except those marked `pure_python` (they patch or subclass a compiled module). Without a
C compiler the build cannot be made: outside CI that skips the tests that need one; in CI
(CI set) it fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from medbft.native import MODULES

ROOT = Path(__file__).resolve().parent.parent

#: Left out of the compiled test run: this file, and the browser tests (their pages run the
#: same simulations the other tests do, in a browser that takes longer to start).
NOT_COMPILED_RUN = ("test_native.py", "test_report_browser.py", "test_studio_browser.py")

#: Shipped scenarios compared run for run (faults of every family, both apps).
SCENARIOS = ("baseline", "primary-crash", "byzantine-primary-equivocates", "partition-and-heal",
             "restart-under-load", "lossy-wan-regulator", "f-plus-one-crashed",
             "counterfeit-injection")

DIGESTS = """
import dataclasses, hashlib, json, sys
from node import _native
from medbft.fuzz import draw_scenario
from medbft.scenario import load_scenario, parse_scenario
from sim.run import digest_summary, run_scenario
print(_native.state())
for name in sys.argv[1].split(","):
    result = run_scenario(load_scenario(f"scenarios/{name}.yaml"), trace=True)
    records = [dataclasses.astuple(r) for r in result.requests]
    rest = json.dumps([result.trace, list(result.events), records], sort_keys=True, default=repr)
    print(name, digest_summary(result.summary), hashlib.sha256(rest.encode()).hexdigest(),
          len(result.trace))
for seed in range(int(sys.argv[2])):
    raw = draw_scenario(seed, app="ledger" if seed % 2 else None)
    print(seed, digest_summary(run_scenario(parse_scenario(raw, raw["name"])).summary))
"""


def _env(native_dir: Path | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MEDBFT_NATIVE", "MEDBFT_NATIVE_DIR", "MEDBFT_TEST_NATIVE")}
    if native_dir is not None:
        env["MEDBFT_NATIVE_DIR"] = str(native_dir)
    env.update(extra)
    return env


def _python(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


WHERE = ("from node import _native; import node.pbft.replica as r, sim.run as s, "
         "node.client as c; print(_native.state()); print(r.__file__); print(s.__file__); "
         "print(c.__file__)")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("native")
    done = subprocess.run([sys.executable, "-m", "medbft", "native", "build"], cwd=ROOT,
                          env=_env(base), capture_output=True, text=True, timeout=900,
                          check=False)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"the native build failed:\n{done.stderr[-3000:]}")
        pytest.skip(f"the native build cannot be made here: {done.stderr.strip()[-300:]}")
    yield base


def test_a_build_is_used_and_holds_every_listed_module(built: Path) -> None:
    out = _python(WHERE, _env(built))
    assert out.returncode == 0, out.stderr
    state, replica, run, client = out.stdout.split()
    assert state == "on"
    assert replica.endswith(".so") and replica.startswith(str(built))
    assert run.endswith(".so") and run.startswith(str(built))
    assert client.endswith("node/client.py")  # not compiled: stays the source
    manifest = json.loads((built / sys.implementation.cache_tag / "manifest.json").read_text())
    assert sorted(manifest["modules"]) == sorted(MODULES)
    # every listed module is imported from the build (its package's __init__ activates it)
    files = _python("import importlib, sys\nfor m in sys.argv[1:]: "
                    "print(importlib.import_module(m).__file__)", _env(built), *MODULES)
    assert files.returncode == 0, files.stderr
    loaded = files.stdout.split()
    assert len(loaded) == len(MODULES)
    assert all(f.endswith(".so") and f.startswith(str(built)) for f in loaded), loaded
    status = subprocess.run([sys.executable, "-m", "medbft", "native", "status"], cwd=ROOT,
                            env=_env(built), capture_output=True, text=True, check=True)
    assert "compiled modules in use" in status.stdout


def test_a_stale_build_is_never_used(built: Path, tmp_path: Path) -> None:
    """A build whose manifest disagrees with one source is ignored as a whole, with a warning
    that says which file; so is a build for another Python, or one missing a file."""
    stale = tmp_path / "stale"
    shutil.copytree(built, stale)
    manifest_path = stale / sys.implementation.cache_tag / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["modules"]["node.pbft.log"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    out = _python(WHERE, _env(stale))
    assert out.returncode == 0, out.stderr
    state, replica, run, _ = out.stdout.splitlines()
    assert state.startswith("stale: node/pbft/log.py changed")
    assert replica.endswith("node/pbft/replica.py") and run.endswith("sim/run.py")
    assert "not using the compiled modules" in out.stderr and "native build" in out.stderr
    manifest["modules"]["node.pbft.log"] = json.loads(
        (built / sys.implementation.cache_tag / "manifest.json").read_text())["modules"][
        "node.pbft.log"]
    manifest["python"] = "cpython-299"
    manifest_path.write_text(json.dumps(manifest))
    out = _python(WHERE, _env(stale))
    assert out.stdout.splitlines()[0] == "stale: built for cpython-299"
    manifest["python"] = sys.implementation.cache_tag  # back to a matching manifest ...
    manifest_path.write_text(json.dumps(manifest))
    assert _python(WHERE, _env(stale)).stdout.split()[0] == "on"
    # a module the compiled ones import (mypyc read it) counts too: the replica's modules
    # read node.events' effect classes
    assert "node.events" in manifest["depends"]
    kept = manifest["depends"]["node.events"]
    manifest["depends"]["node.events"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    assert _python(WHERE, _env(stale)).stdout.split()[0] == "stale:"
    manifest["depends"]["node.events"] = kept
    manifest_path.write_text(json.dumps(manifest))
    for shared in manifest["shared"]:  # ... without mypyc's shared library
        for path in (stale / sys.implementation.cache_tag).glob(f"{shared}.*"):
            path.unlink()
    out = _python(WHERE, _env(stale))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("stale: its shared library")


def test_the_build_is_off_with_medbft_native_0_and_absent_without_one(
        built: Path, tmp_path: Path) -> None:
    off = _python(WHERE, _env(built, MEDBFT_NATIVE="0"))
    assert off.stdout.split()[0] == "off" and off.stdout.split()[1].endswith(".py")
    absent = _python(WHERE, _env(tmp_path / "none"))
    assert absent.stdout.split()[0] == "absent" and absent.stdout.split()[1].endswith(".py")
    assert absent.stderr == ""


def test_compiled_and_pure_python_runs_are_byte_identical(built: Path) -> None:
    args = (",".join(SCENARIOS), "12")
    compiled = _python(DIGESTS, _env(built), *args)
    pure = _python(DIGESTS, _env(built, MEDBFT_NATIVE="0"), *args)
    assert compiled.returncode == 0, compiled.stderr
    assert pure.returncode == 0, pure.stderr
    compiled_lines, pure_lines = compiled.stdout.splitlines(), pure.stdout.splitlines()
    assert compiled_lines[0] == "on" and pure_lines[0] == "off"
    assert len(compiled_lines) == 1 + len(SCENARIOS) + 12
    assert compiled_lines[1:] == pure_lines[1:]


def test_the_quick_test_layers_pass_against_the_compiled_modules(built: Path) -> None:
    """Every test that is neither slow nor real (no node processes) and patches nothing
    compiled, run again with the compiled modules in use."""
    ignored = [f"--ignore={ROOT / 'tests' / name}" for name in NOT_COMPILED_RUN]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-m", "not pure_python and not real and not slow", *ignored, str(ROOT / "tests")],
        cwd=ROOT, env=_env(built, MEDBFT_TEST_NATIVE="1"), capture_output=True, text=True,
        timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
