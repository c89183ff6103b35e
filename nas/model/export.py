"""Exporting a discovered model (TorchScript, ONNX) and loading one in your own PyTorch code.

A promoted model directory, ``RUN_DIR/promoted/<hash>/``, holds ``spec.json`` (the architecture),
``model.pt`` (the weights, written by `nas.model.checkpoint.save_model`) and ``metrics.json``; ``nas train
--out DIR`` writes the same with ``checkpoint.pt`` for ``model.pt``. The spec JSON and the weights
give the module in three lines:

```python
import torch
from nas import create_model

weights = torch.load("runs/search/promoted/<hash>/model.pt", weights_only=True)
model = create_model("runs/search/promoted/<hash>/spec.json", weights["num_classes"]).eval()
model.load_state_dict(weights["state_dict"])
```

`load_promoted` does the same in one call and checks that ``spec.json`` is the spec the weights were
trained with; `nas.model.checkpoint.load_model` reads a weights file alone (it carries its spec).

`export_model` writes ``model.torchscript.pt`` (``torch.jit.load`` runs it without this package)
or ``model.onnx`` (needs the ``export`` extra: ``pip install 'spinenet-seg-nas[export]'``). Both take
any batch size and any input size (N x 3 x H x W -> N x classes x H x W); the input size given is
the one traced. Every export is checked before it is kept: the exported file is loaded again
(TorchScript by ``torch.jit.load``, ONNX by onnxruntime when installed) and its logits are compared
with the eager model's at the traced size and at an odd size with batch 2.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.common.atomic import atomic_path
from nas.common.config import read_mapping
from nas.common.errors import UserError, first_line
from search_spaces import ArchSpec, SpecError, resolve_spec

from .builder import SegmentationModel
from .checkpoint import load_model

FORMATS = ("torchscript", "onnx")
OUTPUT_NAMES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
WEIGHT_NAMES = ("model.pt", "checkpoint.pt")  # a promoted model's, then `nas train --out`'s
DEFAULT_INPUT_SIZE = (512, 512)
DEFAULT_OPSET = 17
# 11 brings Resize with output sizes (any input size); 20 is the last of torch's TorchScript-based exporter.
ONNX_OPSETS = range(11, 21)
# The largest |exported - eager| accepted, relative to the largest |logit| (at least 1).
TOLERANCE = {"torchscript": 1e-5, "onnx": 1e-4}
INSTALL_HINT = "pip install 'spinenet-seg-nas[export]'"


class ExportError(UserError):
    """An export that cannot be done; one line naming the file (`nas` prints it and exits with 2)."""


@dataclass(frozen=True)
class Source:
    """Where a model's files are: the weights, and the spec and metrics beside them when present."""

    weights: Path
    spec: Path | None
    metrics: Path | None

    @property
    def folder(self) -> Path:
        return self.weights.parent


@dataclass(frozen=True)
class Check:
    """One comparison of the exported model with the eager one."""

    shape: tuple[int, ...]
    max_abs_diff: float
    max_abs_logit: float


@dataclass(frozen=True)
class ExportReport:
    """What `export` wrote and how the written file compared with the eager model."""

    path: Path
    format: str
    input_size: tuple[int, int]
    spec_hash: str
    runtime: str | None  # what ran the exported file for the checks (None: not run, see ``note``)
    checks: tuple[Check, ...]
    note: str = ""

    def to_text(self) -> str:
        height, width = self.input_size
        lines = [f"{self.path}  ({self.format}, spec {self.spec_hash}, traced at {height}x{width}, takes any size)"]
        if self.checks:
            worst = max(c.max_abs_diff / max(1.0, c.max_abs_logit) for c in self.checks)
            diffs = ", ".join(f"{c.max_abs_diff:.2g} at {'x'.join(map(str, c.shape))}" for c in self.checks)
            lines.append(f"  matches the eager model ({self.runtime}): max |diff| {diffs} (relative {worst:.1e})")
        if self.note:
            lines.append(f"  {self.note}")
        return "\n".join(lines)


def find_source(path: str | Path) -> Source:
    """The files of a promoted model directory (or a ``nas train`` output folder) or of a weights file."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path}: no such file or directory")
    if path.is_dir():
        weights = next((path / name for name in WEIGHT_NAMES if (path / name).is_file()), None)
        if weights is None:
            raise ExportError(f"{path}: no {' or '.join(WEIGHT_NAMES)} in this directory{_why_no_weights(path)}")
        spec = path / "spec.json"
        if not spec.is_file():
            raise ExportError(f"{spec}: missing (a promoted model directory holds spec.json and {weights.name})")
    else:
        weights, spec = path, None
    metrics = weights.parent / "metrics.json"
    return Source(weights, spec, metrics if metrics.is_file() else None)


def _read_metrics(path: Path) -> dict[str, Any]:
    return read_mapping(path, ExportError, "not readable JSON")


def _why_no_weights(folder: Path) -> str:
    """Why a folder has no weights, when its metrics say: a failed training's seed folder
    (``promoted/<hash>/seeds/<fidelity>-seed<s>/``) keeps spec.json and metrics.json with its status,
    and a promoted model's folder is filled only from a seed that trained, so with none its
    ``seeds/*/metrics.json`` say how each ended."""
    if (folder / "metrics.json").is_file():
        ended = [_how_it_ended(folder / "metrics.json", "its training")]
    else:
        seeds = sorted(folder.glob("seeds/*/metrics.json"))
        ended = [_how_it_ended(m, str(m.parent.relative_to(folder))) for m in seeds]
    ended = [e for e in ended if e]
    return f" ({'; '.join(ended)})" if ended else ""


def _how_it_ended(path: Path, what: str) -> str:
    """``<what> ended <status>: <error>`` from a metrics.json that says it did not end ok; else ""."""
    try:
        metrics = _read_metrics(path)
    except ExportError:
        return ""
    status, error = metrics.get("status"), metrics.get("error")
    if not status or status == "ok":
        return ""
    return f"{what} ended {status}{': ' + ' '.join(str(error).split()) if error else ''}"


def _read_spec(path: Path) -> ArchSpec:
    try:
        return resolve_spec(path)
    except SpecError as exc:  # it starts with the path: say what the file was meant to be instead
        raise ExportError(f"{path}: bad spec: {str(exc).removeprefix(f'{path}: ')}") from None


def _load(source: Source, device: str | torch.device = "cpu") -> tuple[SegmentationModel, dict[str, Any]]:
    model, meta = load_model(source.weights, device)
    if source.spec is not None:
        spec = _read_spec(source.spec)
        if spec.hash != model.spec.hash:
            raise ExportError(
                f"{source.spec}: spec {spec.hash} is not the one {source.weights.name} was trained with "
                f"({model.spec.hash})"
            )
    return model, meta


def load_promoted(path: str | Path, device: str | torch.device = "cpu") -> SegmentationModel:
    """The model of a promoted directory (``spec.json`` + ``model.pt``) or a weights file, in eval mode."""
    model, _ = _load(find_source(path), device)
    return model


def default_input_size(source: Source) -> tuple[int, int]:
    """The model's training resolution from its ``metrics.json``, else 512 x 512.

    ``nas train`` writes ``input_size`` at the top; a promotion writes it under ``full``.
    """
    if source.metrics is None:
        return DEFAULT_INPUT_SIZE
    try:
        metrics = _read_metrics(source.metrics)
    except ExportError as exc:
        raise ExportError(f"{exc}; give the input size explicitly") from None
    full = metrics.get("full")
    for size in (metrics.get("input_size"), full.get("input_size") if isinstance(full, dict) else None):
        if isinstance(size, list) and len(size) == 2 and all(type(v) is int and v > 0 for v in size):
            return size[0], size[1]
    return DEFAULT_INPUT_SIZE


def _onnx_modules() -> tuple[Any, Any]:
    """The ``onnx`` module (required) and ``onnxruntime`` (None when it is not installed)."""
    try:
        import onnx
    except ImportError:
        raise ExportError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from None
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    return onnx, onnxruntime


def _check_shapes(input_size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    height, width = input_size
    odd = (height // 2 + 1) | 1, (width // 2 + 3) | 1  # not divisible by any stride: exercises every ceil
    return [(1, 3, height, width), (2, 3, *odd)]


def _compare(eager: SegmentationModel, run, shapes: list[tuple[int, ...]]) -> tuple[Check, ...]:
    generator = torch.Generator().manual_seed(0)
    checks = []
    for shape in shapes:
        x = torch.randn(shape, generator=generator)
        with torch.no_grad():
            expected = eager(x)
            got = torch.as_tensor(run(x))
        if got.shape != expected.shape:
            raise ExportError(f"gives logits of shape {tuple(got.shape)} for input {shape}, not {expected.shape}")
        checks.append(Check(shape, float((got - expected).abs().max()), float(expected.abs().max())))
    return tuple(checks)


def _verify(checks: tuple[Check, ...], fmt: str) -> None:
    for check in checks:
        limit = TOLERANCE[fmt] * max(1.0, check.max_abs_logit)
        if not check.max_abs_diff <= limit:  # also catches NaN
            raise ExportError(
                f"differs from the eager model by {check.max_abs_diff:.3g} (limit {limit:.3g}) "
                f"on a {'x'.join(map(str, check.shape))} input"
            )


def _metadata(model: SegmentationModel, meta: dict[str, Any], input_size: tuple[int, int]) -> dict[str, str]:
    return {
        "spec": model.spec.to_json(indent=None),
        "spec_hash": model.spec.hash,
        "num_classes": str(model.num_classes),
        "class_names": json.dumps(list(meta.get("class_names") or [])),
        "input_size": json.dumps(list(input_size)),
    }


def _export_torchscript(model, tmp, x, metadata, shapes) -> tuple[str, tuple[Check, ...]]:
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
    extra = {"spec.json": metadata["spec"], "meta.json": json.dumps({k: v for k, v in metadata.items() if k != "spec"})}
    torch.jit.save(traced, str(tmp), _extra_files=extra)
    loaded = torch.jit.load(str(tmp), map_location="cpu").eval()
    return "torch.jit.load", _compare(model, loaded, shapes)


def _export_onnx(model, tmp, x, metadata, shapes, opset) -> tuple[str | None, tuple[Check, ...]]:
    onnx, onnxruntime = _onnx_modules()
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            dynamo=False,  # the TorchScript-based exporter: seconds, where torch.export takes minutes
            opset_version=opset,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
        )
    proto = onnx.load(str(tmp))
    onnx.checker.check_model(proto)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp))
    if onnxruntime is None:
        return None, ()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors reach the caller as exceptions; keep its own log quiet
    session = onnxruntime.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
    return "onnxruntime", _compare(model, lambda t: session.run(None, {"image": t.numpy()})[0], shapes)


def export(
    source: str | Path,
    fmt: str,
    output: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
) -> ExportReport:
    """Export, check the exported file against the eager model, and keep it only if it matches."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "onnx":
        _onnx_modules()  # fail before loading anything
        if opset not in ONNX_OPSETS:
            raise ExportError(f"ONNX opset {opset} is not supported (choose {ONNX_OPSETS[0]} to {ONNX_OPSETS[-1]})")
    src = find_source(source)
    size = tuple(input_size) if input_size is not None else default_input_size(src)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ExportError(f"input size must be two positive integers (H W), got {input_size}")
    model, meta = _load(src)
    out = Path(output) if output is not None else src.folder / OUTPUT_NAMES[fmt]
    if out.is_dir():
        out = out / OUTPUT_NAMES[fmt]
    metadata = _metadata(model, meta, size)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    shapes = _check_shapes(size)
    note = ""
    try:
        with atomic_path(out) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter; the checks below are what count
            if fmt == "torchscript":
                runtime, checks = _export_torchscript(model, tmp, x, metadata, shapes)
            else:
                runtime, checks = _export_onnx(model, tmp, x, metadata, shapes, opset)
                if runtime is None:
                    note = f"onnxruntime is not installed: the graph was checked, its outputs were not ({INSTALL_HINT})"
            _verify(checks, fmt)
    except ExportError as exc:
        raise ExportError(f"{out}: {exc}") from None
    except OSError as exc:
        raise ExportError(f"{out}: cannot write ({exc.strerror or exc})") from None
    except Exception as exc:  # the tracer, the exporter and onnx's checker raise many types
        raise ExportError(f"{out}: {fmt} export failed ({type(exc).__name__}: {first_line(exc)})") from exc
    return ExportReport(out, fmt, size, model.spec.hash, runtime, checks, note)


def export_model(
    source: str | Path,
    fmt: str,
    output: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export the model at ``source`` (a promoted directory or a weights file); returns the file written.

    ``output`` defaults to ``model.torchscript.pt`` or ``model.onnx`` beside the weights; ``input_size``
    (H, W) to the ``input_size`` of the model's ``metrics.json``, else 512 x 512.
    """
    return export(source, fmt, output, input_size, opset).path
