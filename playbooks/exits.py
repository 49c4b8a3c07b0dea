"""Exit codes and the errors that map to them: the one place they are defined.

README's "Command line" section documents these numbers; every verb returns
one of them, and an error always reaches the terminal as one line.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # the program finished (or the command did what was asked)
    FAILED = 1  # the program failed, or stopped before its end (still resumable)
    USAGE = 2  # bad input or usage
    REFUSED = 3  # refused: in use, the program changed, storage damaged


class CommandError(Exception):
    """A one-line error for the terminal; ``code`` is the exit code."""

    code: ExitCode = ExitCode.USAGE


class BadInput(CommandError):
    """Bad input or usage: exit 2."""

    code = ExitCode.USAGE


class Refused(CommandError):
    """Refused: the execution is in use, the program changed, or storage is damaged: exit 3."""

    code = ExitCode.REFUSED
