"""The one error type for bad input.

Every error a user can fix (a malformed spec or config, a damaged run directory, an unreachable
cluster) derives from `UserError`, raised with a one-line message that names the file or key. The
command line prints it as ``nas: error: <message>`` and exits with status 2; anything else is a
programming error and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, reported in one line."""


def one_line(text: str) -> str:
    """``text`` on one line (a path or value may hold a line break), its runs of white space made one space."""
    return " ".join(text.split())


def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message, or its type's name when the message is empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
