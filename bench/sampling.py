"""Sampling profiles of running processes (py-spy): where a real node's CPU goes, undistorted.

Why this exists: `bench/real.py --profile` runs each node under cProfile, which charges every
Python call and so inflates pure-Python code against what runs in C (OpenSSL's signature
checks and TLS, SQLite, the event loop): its shares mislead, and the profiled nodes are several
times slower. py-spy instead reads a running process's stacks from outside, 250 times a
second, without slowing it, so the shares are those of the real run. `bench/real.py --sample
DIR` attaches it to every node process and to the load generator (the benchmark's own
process) once the load has warmed up, and prints what this module sums.

py-spy is a measuring tool, not a dependency of medbft: `pip install py-spy` (into the
project's venv or anywhere on PATH). It needs permission to read other processes' memory
(ptrace): as root, or with /proc/sys/kernel/yama/ptrace_scope at 0. Time spent in C is
charged to the Python line that called it (py-spy runs without `--native`), and samples of a
process waiting for the network are left out (py-spy's default), so the shares are of busy time.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Profile", "py_spy", "read_raw", "record", "report"]

ROOT = Path(__file__).resolve().parent.parent
RATE_HZ = 250

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """The py-spy executable: beside this Python (its venv) first, then on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


async def record(spy: str, pids: dict[str, int], seconds: float, out_dir: Path,
                 rate_hz: int = RATE_HZ) -> dict[str, str]:
    """Sample every process of `pids` (name -> pid) for `seconds` at once, each into
    `out_dir/<name>.txt` (py-spy's raw format: one collapsed stack and its count a line).
    Returns what py-spy said for each process it could not sample."""
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name, pid in pids.items():
        procs[name] = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", str(rate_hz), "--format", "raw", "--nonblocking",
            "--output", str(out_dir / f"{name}.txt"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    problems = {}
    for name, proc in procs.items():
        _, err = await proc.communicate()
        if proc.returncode != 0:
            problems[name] = err.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
    return {name: lines[0] for name, lines in problems.items()}


def _where(path: str) -> str:
    """A frame's file, short: the project's path, an installed package's name, or the
    standard library's last two path parts."""
    p = Path(path)
    if "site-packages" in p.parts:
        return p.parts[p.parts.index("site-packages") + 1]
    try:
        return str(p.resolve().relative_to(ROOT))
    except (ValueError, OSError):
        return "/".join(p.parts[-2:])


def _frame(text: str) -> tuple[str, str]:
    """(function, file) of one py-spy frame, "func (path:line)"."""
    match = _FRAME.match(text)
    if match is None:
        return text, "?"
    return match["func"], _where(match["file"])


@dataclass
class Profile:
    """Samples summed over some processes: by the file of the innermost frame (own time), by
    innermost function, and by every function on the stack (inclusive time)."""

    samples: int = 0
    by_file: Counter[str] = field(default_factory=Counter)
    by_function: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    def add(self, stack: list[str], count: int) -> None:
        if not stack:
            return
        self.samples += count
        frames = [_frame(f) for f in stack]
        func, where = frames[-1]
        self.by_file[where] += count
        self.by_function[f"{func} ({where})"] += count
        for name in {f"{f} ({w})" for f, w in frames}:
            self.inclusive[name] += count

    def share(self, count: int) -> float:
        return count / self.samples if self.samples else 0.0


def read_raw(lines: Iterable[str], into: Profile | None = None) -> Profile:
    """Add py-spy raw output (`frame;frame;...;innermost COUNT` a line) to a Profile."""
    profile = into if into is not None else Profile()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            profile.add(stack.split(";"), int(count))
    return profile


def report(title: str, files: Iterable[Path], top: int = 20) -> Profile:
    """Print where the sampled processes' busy time went; return the summed profile."""
    profile = Profile()
    names = []
    for path in files:
        names.append(path.stem)
        with path.open() as fh:
            read_raw(fh, profile)
    print(f"\n{title}: {profile.samples:,} busy samples at {RATE_HZ}/s "
          f"({', '.join(names) or 'nothing sampled'})")
    if not profile.samples:
        return profile
    # Inclusive time leaves out what nearly every sample passes through (the process's main
    # function, its event loop): those say nothing about where the time goes.
    below = Counter({name: count for name, count in profile.inclusive.items()
                     if count < 0.9 * profile.samples})
    for heading, table in (("own time by file or package", profile.by_file),
                           ("own time by function (C calls charged to their caller)",
                            profile.by_function),
                           ("inclusive time (the function and what it called), below the "
                            "event loop", below)):
        print(f"  {heading}:")
        for name, count in table.most_common(top):
            print(f"    {100 * profile.share(count):5.1f}%  {name}")
    return profile
