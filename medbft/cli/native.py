"""`medbft native build | status | clean`: the optional compiled build of the hot modules.

Why this exists: simulated runs are faster with the per-message path compiled by mypyc
(medbft.native says which modules and why; docs/benchmarks.md what it gains). Building is a
separate, explicit step because it needs a C compiler and takes about a minute.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("native", help="compile the hot modules with mypyc (optional, faster "
                                      "simulation), or show or remove that build")
    p.add_argument("action", choices=("build", "status", "clean"),
                   help="build: compile (needs pip install -e '.[native]' and a C compiler); "
                        "status: say whether this Python uses it; clean: remove it")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    from medbft import native

    if args.action == "build":
        err.print(f"compiling {len(native.MODULES)} modules with mypyc (about a minute) ...",
                  markup=False)
        where, seconds = native.build()
        console.print(f"built {len(native.MODULES)} modules into {where} in {seconds:.0f} s; "
                      f"every later run uses them while the sources are unchanged "
                      f"(MEDBFT_NATIVE=0 turns them off)", markup=False)
    elif args.action == "clean":
        removed = native.clean()
        console.print("removed the native build" if removed else "there was no native build",
                      markup=False)
    else:
        console.print(native.describe(), markup=False)
    return 0
