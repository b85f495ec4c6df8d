"""The `medbft` command: one parser, one subcommand module each, one way to fail.

Why this exists: researchers and teachers drive everything from here. Each subcommand lives in
a module of this package (`run`, `cluster`, `sweep` ...) that defines `register(subparsers)`
and a handler `(args, console, err) -> int`. This module only builds the parser from the
modules listed in `COMMANDS` and turns bad input into a one-line message and exit code 2,
never a traceback. Exit codes: 0 the run completed and its `expect:` holds; 1 an expectation
failed or safety was violated; 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rich.console import Console

from medbft.errors import EXIT_BAD_INPUT, UsageError
from medbft.scenario import ScenarioError

__all__ = ["COMMANDS", "main"]

#: The subcommand modules, in the order `medbft --help` lists them.
COMMANDS = ("run", "cluster", "compare", "fuzz", "keys", "ledger", "load", "node", "tx",
            "query", "verify_receipt", "plot", "sequence", "replay", "studio", "sweep",
            "native")
#: Subcommands registered by a module of another name (the rest: their module's name).
_MODULE_OF = {"validate": "run", "verify-receipt": "verify_receipt"}


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser. When `argv` names a subcommand, only that subcommand's module is
    imported and registered: each module imports what its command needs (aiohttp, the
    simulator, matplotlib ...) at its top, and a command should not pay for the others'
    imports (`medbft validate` took 0.9 s, most of it for commands it never runs). With no
    subcommand, or one that does not exist, every module registers, so `--help` lists them
    all and argparse names the valid choices."""
    parser = argparse.ArgumentParser(
        prog="medbft",
        description="PBFT for a healthcare permissioned blockchain: simulate and measure.",
    )
    from medbft.results import package_version

    parser.add_argument("--version", action="version",
                        version=f"medbft {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    first = next((a for a in argv if not a.startswith("-")), None)
    module = _MODULE_OF.get(first or "", first)
    chosen = (module,) if module in COMMANDS else COMMANDS
    for name in chosen:
        importlib.import_module(f"medbft.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser(argv).parse_args(argv)
    args.argv = argv  # run.json's `command` (real runs)
    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return int(args.handler(args, console, err))
    except (ScenarioError, UsageError) as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
        return EXIT_BAD_INPUT
    except OSError as exc:
        err.print(f"error: {exc}", markup=False)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
