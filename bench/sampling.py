"""Sampling profiles of running processes (py-spy, perf): where a real node's CPU goes.

Why this exists: `bench/real.py --profile` runs each node under cProfile, which charges every
Python call and so inflates pure-Python code against what runs in C (OpenSSL's signature
checks and TLS, SQLite, the event loop): its shares mislead, and the profiled nodes are several
times slower. py-spy instead reads a running process's stacks from outside, `RATE_HZ` times a
second, without running inside it. `bench/real.py --sample DIR` attaches it to every node
process and to the load generator (the benchmark's own process) once the load has warmed up,
and prints what this module sums. The samplers are processes too: on a 2-core machine they
take some of the CPU the nodes would have had, so read shares, not the run's throughput.

py-spy is a measuring tool, not a dependency of medbft: `pip install py-spy` (into the
project's venv or anywhere on PATH). It needs permission to read other processes' memory
(ptrace): as root, or with /proc/sys/kernel/yama/ptrace_scope at 0. Time spent in C is
charged to the Python line that called it (py-spy runs without `--native`), and samples of a
process waiting for the network are left out (py-spy's default), so the shares are of busy time.

py-spy's clock is the wall's: a process that is ready to run but waiting for a core is sampled
where it stands, and on a machine with more processes than cores that charges extra to the
lines just after a call that wakes another process (a socket write) and the like. So when
Linux `perf` is installed, the same window is also sampled on the CPU clock, system-wide
(`perf record -e cpu-clock -a`): how the machine's CPU divides between the nodes, the load
generator and idle, and within each process between the Python interpreter, the kernel,
OpenSSL (signatures, TLS), SQLite and the rest. Python 3.11 does not show its functions to
perf; the two together say where the CPU goes and, within Python, where.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Profile", "cpu_split", "perf", "py_spy", "read_raw", "record", "record_cpu", "report",
           "report_cpu"]

ROOT = Path(__file__).resolve().parent.parent
RATE_HZ = 100  # each py-spy costs CPU too (sampling five processes at 250/s took a third
#               of a 2-core machine): slow enough to leave the nodes their cores

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
            problems[name] = _last_line(err)
    return problems


def _last_line(err: bytes) -> str:
    """What a failed tool said last on stderr (its error, usually)."""
    return (err.decode(errors="replace").strip().splitlines() or ["?"])[-1]


def perf() -> str | None:
    """Linux perf, if installed (`apt-get install linux-perf`)."""
    return shutil.which("perf")


async def record_cpu(perf_bin: str, seconds: float, out: Path) -> str | None:
    """Sample every CPU on the CPU clock for `seconds` into `out`; None, or why it failed."""
    proc = await asyncio.create_subprocess_exec(
        perf_bin, "record", "-e", "cpu-clock", "-F", "499", "-a", "-o", str(out), "--",
        "sleep", str(max(1, round(seconds))),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    return _last_line(err) if proc.returncode != 0 else None


#: What a shared library is, for the CPU split (first match of a substring).
LIBRARIES = (("libpython", "Python"), ("kernel", "kernel"), ("_rust", "cryptography"),
             ("libcrypto", "OpenSSL"), ("libssl", "OpenSSL"), ("libsqlite", "SQLite"),
             ("loop.cpython", "uvloop"), ("libc.so", "libc"))


def cpu_split(report_lines: Iterable[str], names: dict[int, str]) -> dict[str, Counter[str]]:
    """Shares of all samples (percent) by process and library, from `perf report --sort
    pid,dso --field-separator='|' -F overhead,pid,dso` lines. A pid of `names` is named by
    it; the idle task is "idle"; the samplers (py-spy, perf) are "samplers"; every other
    process is "other"."""
    split: dict[str, Counter[str]] = {}
    for line in report_lines:
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3 or not parts[0].endswith("%"):
            continue
        share, dso = float(parts[0][:-1]), parts[2]
        first, _, comm = parts[1].partition(":")
        pid = int(first) if first.isdigit() else -1
        who = ("idle" if pid == 0 else names.get(pid) or
               ("samplers" if comm.startswith(("py-spy", "perf")) else "other"))
        lib = next((name for key, name in LIBRARIES if key in dso), "other")
        split.setdefault(who, Counter())[lib] += share
    return split


def report_cpu(title: str, perf_bin: str, data: Path, names: dict[int, str]) -> None:
    """Print how the machine's CPU divided during the sampled window (see `cpu_split`)."""
    done = subprocess.run(
        [perf_bin, "report", "-i", str(data), "--sort", "pid,dso", "--stdio",
         "--field-separator=|", "-F", "overhead,pid,dso"],
        capture_output=True, text=True, check=False)
    split = cpu_split(done.stdout.splitlines(), names)
    if not split:
        print(f"\n{title}: perf recorded nothing ({done.stderr.strip()[-200:]})")
        return
    libs = [*dict.fromkeys(name for _, name in LIBRARIES), "other"]
    print(f"\n{title}: share of the machine's CPU samples (all cores, perf cpu-clock)")
    print(f"  {'process':<10}{'all':>7}" + "".join(f"{lib:>14}" for lib in libs))
    order = sorted(split, key=lambda who: (who in ("idle", "other", "samplers"), who))
    for who in order:
        row = split[who]
        print(f"  {who:<10}{sum(row.values()):>6.1f}%"
              + "".join(f"{row.get(lib, 0.0):>13.1f}%" for lib in libs))


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
