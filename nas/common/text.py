"""Reading a user's text file with errors of one line."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError


def read_text(path: str | Path, error: type[UserError] = UserError) -> str:
    """The UTF-8 text of ``path``; ``error`` (one line naming the file) when it cannot be read or is binary."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
