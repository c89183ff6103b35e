"""Values made ready for JSON, which has no NaN or infinity: the one place that writes them as null, and
the one writer of a JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .atomic import atomic_path


def json_ready(value: Any) -> Any:
    """``value`` with every NaN or infinite float (nested in dicts, lists and tuples) replaced by None,
    tuples as lists and NumPy scalars as plain Python numbers; everything else as it is."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", None) == 0:
        value = value.item()  # a NumPy scalar, as a DataFrame row gives its numbers
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path`` (NaN and infinities as null), replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_ready(data), indent=2))
