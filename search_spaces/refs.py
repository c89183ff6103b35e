"""Spec references: the one way a name, a file, a folder or standard input becomes a spec.

Every error is a `SpecError` of one line; one about a file starts with ``<path>: ``. A caller adds
its own context (a config key, an export source) in front.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nas.common.text import read_text

from .published import PUBLISHED, get_spec, published_names
from .spec import ArchSpec, SpecError

STDIN = "-"
SPEC_FILE = "spec.json"  # the spec inside a promoted model's or a training run's folder
MAX_SPEC_BYTES = 2**20  # a 16-block spec is about 3 KB of JSON


def resolve_spec(ref: str | Path | ArchSpec, stdin: bool = False) -> ArchSpec:
    """The spec ``ref`` names: a spec, a published name, a spec JSON file, a folder holding
    ``spec.json``, or, with ``stdin``, ``-`` for standard input. A `Path` is always a file or folder.

    Reading standard input is the command line's choice: a name in a config or a baseline list
    that read it would wait on a terminal.
    """
    if isinstance(ref, ArchSpec):
        return ref
    if isinstance(ref, str):
        if ref == STDIN and stdin:
            return _from_stdin()
        if ref in PUBLISHED:
            return get_spec(ref)
    return _from_file(_spec_path(ref))


def _from_stdin() -> ArchSpec:
    try:
        text = sys.stdin.read()
    except UnicodeDecodeError as exc:
        raise SpecError(f"standard input: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    if not text.strip():
        raise SpecError("no spec on standard input")
    return ArchSpec.from_json(text)


def _spec_path(ref: str | Path) -> Path:
    """The spec file of ``ref``, checked to be a regular file: reading a FIFO or a device would block or never end."""
    path = Path(ref)
    try:
        if path.is_dir():
            path = path / SPEC_FILE
        exists, is_file = path.exists(), path.is_file()
        size = path.stat().st_size if is_file else 0
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte, a folder without permission
        raise SpecError(f"{path}: not a usable path ({exc})") from None
    if not exists:
        if path.name == SPEC_FILE and path.parent.is_dir():
            raise SpecError(f"{path.parent}: a folder without a {SPEC_FILE}")
        known = ", ".join(published_names())
        raise SpecError(f"{str(ref)!r} is neither a published architecture ({known}) nor a file")
    if not is_file:
        raise SpecError(f"{path}: not a spec file")
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: {size:,} bytes, more than a spec file holds (at most {MAX_SPEC_BYTES:,})")
    return path


def _from_file(path: Path) -> ArchSpec:
    text = read_text(path, SpecError)
    try:
        return ArchSpec.from_json(text)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


__all__ = ["MAX_SPEC_BYTES", "resolve_spec"]
