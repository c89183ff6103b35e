"""The one error type for bad input.

Every error a user can fix (a malformed spec or config, a damaged run directory, an unreachable
cluster) derives from `UserError`, raised with a one-line message that names the file or key. The
command line prints it as ``nas: error: <message>`` and exits with status 2; anything else is a
programming error and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, reported in one line."""
