"""Errors and exit codes that every layer above the node shares.

Why this exists: bad input anywhere (a command line, a sweep file, a run folder) must reach the
user as one line and exit code 2, never a traceback. Commands and library modules raise
`UsageError`; `medbft.cli.main` prints it. Scenario files have their own `ScenarioError`
(medbft.scenario), which names the file and the field.
"""

from __future__ import annotations

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "UsageError"]

#: 0 the run completed and `expect:` holds; 1 an expectation failed or safety was violated;
#: 2 bad input.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Bad input on the command line or in a file: printed as one line, exit code 2."""
