"""Exporting a discovered model: TorchScript and ONNX match the eager model; loading in three lines; errors."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

import nas.model.export as export_module
from nas.cli import make_parser
from nas.common.errors import UserError
from nas.model import build_model
from nas.model.builder import SegmentationModel
from nas.model.checkpoint import save_model
from nas.model.export import (
    ExportError,
    default_input_size,
    export,
    export_model,
    find_source,
    load_promoted,
)
from search_spaces import get_spec
from tests.helpers import slim

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["background", "disk", "ring"]
TRAINED_SIZE = [48, 80]  # the input_size a promoted model's metrics.json records


def _trained_like(model: SegmentationModel, seed: int) -> SegmentationModel:
    """Non-trivial BN statistics and affine terms, so that any weight lost on the way changes the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def _promote(folder: Path, name: str, weights: str = "model.pt") -> tuple[Path, SegmentationModel]:
    """A promoted model directory as the search writes it: spec.json, model.pt, metrics.json."""
    spec = slim(get_spec(name))
    model = _trained_like(build_model(spec, len(CLASSES)), seed=len(name))
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(spec.to_json())
    save_model(folder / weights, model, class_names=CLASSES, task="synthetic", miou=0.5)
    (folder / "metrics.json").write_text(json.dumps(_promotion_metrics("ok", TRAINED_SIZE)))
    return folder, model


def _promotion_metrics(status: str, input_size: list[int] | None) -> dict:
    """metrics.json as `nas.search.promote` writes it: the full-fidelity trial's metrics under "full"."""
    full = {"miou": 0.5, "input_size": input_size} if input_size else {}
    error = "RuntimeError: CUDA out of memory\nTried to allocate 2 GiB" if status != "ok" else None
    return {"fidelity": "full", "status": status, "error": error, "full": full, "proxy": {"miou": 0.3}}


@pytest.fixture(scope="module")
def promoted(tmp_path_factory) -> dict[str, tuple[Path, SegmentationModel]]:
    root = tmp_path_factory.mktemp("run") / "promoted"
    names = ["deeplabv3-resnet50", "deeplabv3plus-resnet50", "spinenet-49"]
    return {name: _promote(root / get_spec(name).hash, name) for name in names}


def _eager(model: SegmentationModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


# ------------------------------------------------------------------------------------------- TorchScript
def _check_torchscript(path: Path, model: SegmentationModel, input_size: list[int]) -> None:
    """Loaded by plain torch, the file gives the eager logits at a size it was not traced at, with its metadata."""
    extra = {"spec.json": "", "meta.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)
    x = torch.randn(2, 3, 45, 77)  # no stride divides 45 x 77, so every ceil in the network matters
    with torch.no_grad():
        got = scripted(x)
    assert got.shape == (2, len(CLASSES), 45, 77)
    assert (got - _eager(model, x)).abs().max().item() < 1e-4
    assert json.loads(extra["spec.json"]) == json.loads(model.spec.to_json())
    meta = json.loads(extra["meta.json"])
    assert meta["spec_hash"] == model.spec.hash and meta["num_classes"] == "3"
    assert json.loads(meta["class_names"]) == CLASSES and json.loads(meta["input_size"]) == input_size


def test_torchscript_export_of_a_promoted_spinenet_matches_the_eager_model(promoted) -> None:
    folder, model = promoted["spinenet-49"]
    report = export(folder, "torchscript")
    assert report.path == folder / "model.torchscript.pt" and report.path.is_file()
    assert report.input_size == (48, 80)  # from metrics.json
    assert report.runtime == "torch.jit.load"
    assert [c.shape for c in report.checks] == [(1, 3, 48, 80), (2, 3, 25, 43)]
    assert all(c.max_abs_diff < 1e-4 and c.max_abs_logit > 1 for c in report.checks)
    _check_torchscript(report.path, model, TRAINED_SIZE)


def test_cli_exports_a_deeplab_train_checkpoint_to_torchscript_beside_it(tmp_path, capsys) -> None:
    folder, model = _promote(tmp_path / "train", "deeplabv3-resnet50", weights="checkpoint.pt")  # `nas train --out`
    args = make_parser().parse_args(
        ["export", str(folder / "checkpoint.pt"), "--format", "torchscript", "--size", "40", "56"]
    )
    args.func(args)
    out = capsys.readouterr().out
    written = folder / "model.torchscript.pt"
    assert out.startswith(f"{written}  (torchscript, spec {model.spec.hash}, traced at 40x56, takes any size)\n")
    assert "matches the eager model (torch.jit.load): max |diff| 0 at 1x3x40x56, 0 at 2x3x21x31" in out
    _check_torchscript(written, model, [40, 56])


def test_an_export_that_does_not_match_is_not_kept(promoted, monkeypatch) -> None:
    def wrong_export(model, tmp, x, metadata, shapes):
        tmp.write_bytes(b"a traced model")
        return "torch.jit.load", (export_module.Check((1, 3, 32, 32), max_abs_diff=0.5, max_abs_logit=10.0),)

    monkeypatch.setattr(export_module, "_export_torchscript", wrong_export)
    folder, _ = promoted["deeplabv3-resnet50"]
    out = folder.parent / "rejected.pt"
    with pytest.raises(ExportError) as info:
        export_model(folder, "torchscript", output=out, input_size=(32, 32))
    assert str(info.value) == f"{out}: differs from the eager model by 0.5 (limit 0.0001) on a 1x3x32x32 input"
    assert not out.exists() and not list(folder.parent.glob(".rejected.pt*"))


# ------------------------------------------------------------------------------------------------- ONNX
def test_onnx_export_of_a_spinenet_matches_the_eager_model_in_onnxruntime(promoted, tmp_path) -> None:
    onnx = pytest.importorskip("onnx", reason="the export extra (onnx) is not installed")
    onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
    folder, model = promoted["spinenet-49"]
    path = export_model(folder, "onnx", output=tmp_path / "seg.onnx", input_size=(64, 64))
    assert path == tmp_path / "seg.onnx"

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    for shape in [(1, 3, 64, 64), (2, 3, 45, 77)]:  # a size it was not traced at, divisible by no stride
        x = torch.randn(shape)
        (got,) = session.run(None, {"image": x.numpy()})
        expected = _eager(model, x)
        assert got.shape == (shape[0], len(CLASSES), *shape[2:])
        scale = expected.abs().max().item()
        assert scale > 1
        assert (torch.from_numpy(got) - expected).abs().max().item() / scale < 1e-5
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["spec_hash"] == model.spec.hash and props["num_classes"] == "3"
    assert json.loads(props["class_names"]) == CLASSES and json.loads(props["input_size"]) == [64, 64]


def test_onnx_without_onnxruntime_checks_the_graph_only(promoted, tmp_path, monkeypatch) -> None:
    pytest.importorskip("onnx", reason="the export extra (onnx) is not installed")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    report = export(promoted["deeplabv3plus-resnet50"][0], "onnx", output=tmp_path, input_size=(32, 32))
    assert report.path == tmp_path / "model.onnx" and report.path.stat().st_size > 10_000
    assert report.runtime is None and report.checks == ()
    assert "onnxruntime is not installed" in report.note


def test_onnx_without_onnx_says_how_to_install_it(promoted, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    folder, _ = promoted["spinenet-49"]
    with pytest.raises(ExportError) as info:
        export_model(folder, "onnx")
    assert str(info.value) == "ONNX export needs the onnx package: pip install 'spinenet-seg-nas[export]'"
    assert not (folder / "model.onnx").exists()


# ------------------------------------------------------------------------------------------------ loading
def _recipe(text: str) -> str:
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return block


def test_the_three_line_recipe_works_as_documented(promoted) -> None:
    folder, model = promoted["spinenet-49"]
    recipe = _recipe(export_module.__doc__)
    code = [line for line in recipe.splitlines() if line and not line.startswith(("import ", "from "))]
    assert len(code) == 3
    namespace: dict = {}
    exec(recipe.replace("runs/search/promoted/<hash>", str(folder)), namespace)
    loaded = namespace["model"]
    assert isinstance(loaded, SegmentationModel) and not loaded.training
    x = torch.randn(2, 3, 45, 77)
    assert torch.equal(_eager(loaded, x), _eager(model, x))
    assert torch.equal(_eager(load_promoted(folder), x), _eager(model, x))


def test_the_readme_shows_the_same_recipe() -> None:
    readme = (ROOT / "README.md").read_text()
    title = "## Exporting and loading a discovered model"
    assert title in readme
    section = readme.split(title, 1)[1].split("\n## ", 1)[0]
    assert _recipe(section) == _recipe(export_module.__doc__)


def test_sources_and_default_input_size(promoted, tmp_path) -> None:
    folder, _ = promoted["spinenet-49"]
    source = find_source(folder)
    assert (source.weights, source.spec, source.metrics) == (
        folder / "model.pt",
        folder / "spec.json",
        folder / "metrics.json",
    )
    assert default_input_size(source) == (48, 80)
    assert find_source(folder / "model.pt").spec is None  # a weights file carries its own spec

    bare = tmp_path / "bare.pt"
    bare.write_bytes((folder / "model.pt").read_bytes())
    assert default_input_size(find_source(bare)) == (512, 512)  # no metrics.json beside it
    (tmp_path / "metrics.json").write_text('{"miou": 0.4, "input_size": [96, 128]}')  # as `nas train` writes it
    assert default_input_size(find_source(bare)) == (96, 128)
    (tmp_path / "metrics.json").write_text('{"input_size": [0, 0]}')  # a trial that never ran
    assert default_input_size(find_source(bare)) == (512, 512)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(ExportError, match=rf"^{re.escape(str(tmp_path / 'metrics.json'))}: not readable JSON"):
        default_input_size(find_source(bare))


# ------------------------------------------------------------------------------------------------- errors
def _broken(kind: str, tmp_path: Path, promoted) -> tuple[Path, Path, str]:
    """A broken source, the file the error must name, and what it must say."""
    good, _ = promoted["deeplabv3-resnet50"]
    folder = tmp_path / "promoted" / "abc"
    if kind == "missing dir":
        return folder, folder, "no such file or directory"
    folder.mkdir(parents=True)
    for name in ("spec.json", "model.pt", "metrics.json"):
        (folder / name).write_bytes((good / name).read_bytes())
    if kind == "no model.pt":
        (folder / "model.pt").unlink()
        return folder, folder, "no model.pt or checkpoint.pt in this directory"
    if kind == "failed promotion":
        (folder / "model.pt").unlink()
        (folder / "metrics.json").write_text(json.dumps(_promotion_metrics("failed", None)))
        return folder, folder, "(its training ended failed: RuntimeError: CUDA out of memory Tried to allocate 2 GiB)"
    if kind == "no spec.json":
        (folder / "spec.json").unlink()
        return folder, folder / "spec.json", "missing"
    if kind == "corrupt model.pt":
        (folder / "model.pt").write_bytes(b"\x80\x02 not a checkpoint")
        return folder, folder / "model.pt", "not a readable checkpoint"
    if kind == "weights of another network":
        payload = torch.load(folder / "model.pt", weights_only=True)
        other = build_model(slim(get_spec("deeplabv3-resnet50")), len(CLASSES) + 2)  # its classifier is wider
        torch.save({**payload, "state_dict": other.state_dict()}, folder / "model.pt")
        return folder, folder / "model.pt", "weights do not fit the spec"
    if kind == "spec.json of another network":
        (folder / "spec.json").write_text(slim(get_spec("deeplabv3-resnet50-os8")).to_json())
        return folder, folder / "spec.json", "is not the one model.pt was trained with"
    assert kind == "bad spec.json"
    (folder / "spec.json").write_text('{"blocks": "many"}')
    return folder, folder / "spec.json", "bad spec"


@pytest.mark.parametrize(
    "kind",
    [
        "missing dir",
        "no model.pt",
        "failed promotion",
        "no spec.json",
        "corrupt model.pt",
        "weights of another network",
        "spec.json of another network",
        "bad spec.json",
    ],
)
def test_bad_sources_give_one_line_errors_naming_the_file(tmp_path, promoted, kind: str) -> None:
    source, named, says = _broken(kind, tmp_path, promoted)
    for attempt in (lambda: export_model(source, "torchscript"), lambda: load_promoted(source)):
        with pytest.raises(UserError) as info:  # `nas` prints it as one line
            attempt()
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"{named}: ")
        assert says in message
    assert not list(tmp_path.rglob("model.torchscript.pt"))


@pytest.mark.parametrize(
    ("fmt", "size", "says"),
    [("tflite", None, "unknown export format 'tflite'"), ("torchscript", (0, 64), "two positive integers")],
)
def test_bad_arguments_are_refused(promoted, fmt: str, size, says: str) -> None:
    with pytest.raises(ExportError, match=re.escape(says)):
        export_model(promoted["spinenet-49"][0], fmt, input_size=size)


def test_an_unsupported_onnx_opset_is_refused_before_exporting(promoted) -> None:
    pytest.importorskip("onnx", reason="the export extra (onnx) is not installed")
    folder, _ = promoted["spinenet-49"]
    with pytest.raises(ExportError, match=r"^ONNX opset 99 is not supported \(choose 11 to 20\)$"):
        export_model(folder, "onnx", opset=99)
    assert not (folder / "model.onnx").exists()


def test_nas_export_reports_errors_in_one_line(tmp_path, capsys) -> None:
    from nas.cli import main

    assert main(["export", str(tmp_path / "nowhere"), "--format", "torchscript"]) == 2
    assert capsys.readouterr().err == f"nas: error: {tmp_path / 'nowhere'}: no such file or directory\n"
