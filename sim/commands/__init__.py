"""Subcommands of `medbft` beyond `run` and `validate`, one module each.

Each module defines `register(subparsers) -> None`, which adds its parser and sets
`handler=<function(args, console, err) -> int>` with `set_defaults`. `sim.cli` imports every
module of this package (in name order), so adding a command means adding a file here.
Handlers raise `ScenarioError` or `UsageError` for bad input (exit code 2, no traceback).
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input on the command line or in a file: printed as one line, exit code 2."""
