"""Model checkpoints: the network's spec JSON next to its weights, loadable with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nas.common.atomic import atomic_path
from nas.common.errors import UserError, first_line
from search_spaces import ArchSpec, SpecError
from search_spaces.spec import MAX_CLASSES

from .builder import SegmentationModel, build_model


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message names the file."""


def save_model(path: str | Path, model: SegmentationModel, **metadata: Any) -> None:
    """Write ``{"spec", "num_classes", "state_dict", **metadata}`` atomically."""
    payload = {
        "spec": model.spec.to_json(indent=None),
        "num_classes": model.num_classes,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **metadata,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[SegmentationModel, dict[str, Any]]:
    """The model stored at ``path`` (in eval mode) and the checkpoint's other entries."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or not {"spec", "num_classes", "state_dict"} <= set(payload):
        raise CheckpointError(f"{path}: not a model checkpoint (needs spec, num_classes, state_dict)")
    try:
        spec = ArchSpec.from_json(payload["spec"])
    except SpecError as exc:
        raise CheckpointError(f"{path}: bad spec: {exc}") from None
    num_classes = payload["num_classes"]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        raise CheckpointError(
            f"{path}: num_classes must be a positive integer of at most {MAX_CLASSES}, got {num_classes!r}"
        )
    model = build_model(spec, num_classes)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the spec ({first_line(exc)})") from None
    meta = {k: v for k, v in payload.items() if k not in ("spec", "num_classes", "state_dict")}
    return model.to(device).eval(), meta
