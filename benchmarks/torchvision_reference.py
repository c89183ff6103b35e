"""torchvision as the reference for `--init`: record its state_dict names and shapes, and compare
our DeepLabv3-ResNet-50 (OS 8) with its ``deeplabv3_resnet50(aux_loss=False)`` side by side.

torchvision is not a dependency: run this in a scratch environment that has it beside the same torch,

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install /opt/wheels/torch-2.13.0+cpu-*.whl
    /tmp/tv/bin/pip install --no-deps torchvision==0.28.0 && /tmp/tv/bin/pip install numpy pillow
    /tmp/tv/bin/python benchmarks/torchvision_reference.py record tests/fixtures/torchvision_state_dicts.json
    PYTHONPATH=$PWD:/work/main/.venv/lib/python3.11/site-packages \\
        /tmp/tv/bin/python benchmarks/torchvision_reference.py compare [--size 256] [--steps 4]

(``compare`` needs this project's packages too: the second command puts them behind the scratch
environment's torch). The PyPI wheel of torchvision 0.28.0, the one made for torch 2.13.0, is built
against CUDA torch: with a CPU torch its C++ operators (nms, roi_align) cannot load, so their
registration is skipped here; the classification and segmentation models are plain Python and
need none of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

RECORDED = {
    "resnet50": lambda models: models.resnet50(weights=None),
    "resnet101": lambda models: models.resnet101(weights=None),
    "deeplabv3_resnet50": lambda models: models.segmentation.deeplabv3_resnet50(
        aux_loss=False, weights=None, weights_backbone=None
    ),
    "deeplabv3_resnet101": lambda models: models.segmentation.deeplabv3_resnet101(
        aux_loss=False, weights=None, weights_backbone=None
    ),
}


def import_torchvision():
    """torchvision's models without its C++ operators (see the module docstring)."""
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision
    import torchvision.models.segmentation  # the submodule RECORDED reaches through

    return torchvision


def record(path: Path) -> None:
    torchvision = import_torchvision()
    models = {
        name: {key: list(tensor.shape) for key, tensor in make(torchvision.models).state_dict().items()}
        for name, make in RECORDED.items()
    }
    # One tensor a line, in state_dict order: readable, and a diff shows what a new version changed.
    lines = [
        "{",
        f' "torch": {json.dumps(torch.__version__)},',
        f' "torchvision": {json.dumps(torchvision.__version__)},',
        ' "models": {',
    ]
    for m, (name, shapes) in enumerate(models.items()):
        lines.append(f"  {json.dumps(name)}: {{")
        entries = [f"   {json.dumps(key)}: {json.dumps(shape)}" for key, shape in shapes.items()]
        lines.append(",\n".join(entries))
        lines.append("  }" + ("," if m < len(models) - 1 else ""))
    lines += [" }", "}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    assert json.loads(path.read_text())["models"] == models
    print(f"{path}: " + ", ".join(f"{name} {len(keys)} tensors" for name, keys in models.items()))


def compare(size: int, steps: int) -> None:
    from nas.model import create_model
    from nas.model.pretrained import load_into

    torchvision = import_torchvision()
    torch.manual_seed(0)
    theirs = RECORDED["deeplabv3_resnet50"](torchvision.models).eval()
    ours = create_model("deeplabv3-resnet50-os8", 21).eval()
    count = {name: sum(p.numel() for p in m.parameters()) for name, m in (("torchvision", theirs), ("ours", ours))}
    shapes = {
        name: sorted(tuple(p.shape) for p in m.parameters()) for name, m in (("torchvision", theirs), ("ours", ours))
    }
    report = load_into(ours, theirs.state_dict(), source="torchvision deeplabv3_resnet50")
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        a, b = theirs(x)["out"], ours(x)
    print(f"parameters: torchvision {count['torchvision']:,}, ours {count['ours']:,}")
    print(f"same parameter shapes (as multisets): {shapes['torchvision'] == shapes['ours']}")
    print(f"copied: {report.summary()}")
    print(f"logits {tuple(a.shape)}: bit-identical {torch.equal(a, b)}, max |difference| {(a - b).abs().max():.3g}")
    ratio = _step_ratio(theirs, ours, size, steps)
    print(f"train step ours / torchvision: {ratio:.3f} (median of {steps} alternating steps, CPU, {size} px, batch 2)")


def _step_ratio(theirs: torch.nn.Module, ours: torch.nn.Module, size: int, steps: int) -> float:
    def forward_theirs(x: torch.Tensor) -> torch.Tensor:
        return theirs(x)["out"]

    runs = {"theirs": (forward_theirs, theirs), "ours": (ours, ours)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    x, y = torch.randn(2, 3, size, size), torch.randint(0, 21, (2, size, size))
    for step in range(steps + 1):  # the first step of each warms up and is not counted
        for name, (forward, module) in runs.items():
            module.train()
            optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(forward(x), y).backward()
            optimizer.step()
            if step:
                times[name].append(time.perf_counter() - start)
    return statistics.median(times["ours"]) / statistics.median(times["theirs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("record", help="write the names and shapes of torchvision's state_dicts")
    p.add_argument("path", type=Path)
    p = sub.add_parser("compare", help="our deeplabv3-resnet50-os8 against torchvision's, side by side")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    if args.command == "record":
        record(args.path)
    else:
        compare(args.size, args.steps)


if __name__ == "__main__":
    main()
