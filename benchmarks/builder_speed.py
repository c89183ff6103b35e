"""Train-step time of the built DeepLabv3-ResNet-50 against a plainly hand-written one, same run.

Both models get identical weights; steps alternate between them (so that drift in machine load
hits both), and the medians are compared. Goal: built / hand-written <= 1.05.

    .venv/bin/python benchmarks/builder_speed.py [--size 256 256] [--batch 2] [--steps 6] [--channels-last]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from handwritten_deeplab import DeepLabV3ResNet50

from nas import create_model


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y, ignore_index=255).backward()
    optimizer.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=[256, 256])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    built = create_model("deeplabv3-resnet50", args.classes)
    reference = DeepLabV3ResNet50(args.classes)
    reference.load_state_dict(dict(zip(reference.state_dict(), built.state_dict().values())))
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    models = {
        "hand-written": reference.to(device, memory_format=memory_format).train(),
        "built": built.to(device, memory_format=memory_format).train(),
    }
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}
    x = torch.randn(args.batch, 3, *args.size, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, args.classes, (args.batch, *args.size), device=device)

    for name, model in models.items():
        for _ in range(args.warmup):
            train_step(model, optimizers[name], x, y)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.steps):
        for name, model in models.items():
            sync(device)
            start = time.perf_counter()
            train_step(model, optimizers[name], x, y)
            sync(device)
            times[name].append(time.perf_counter() - start)

    print(
        f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, input {args.size[0]}x{args.size[1]}, "
        f"{'channels_last' if args.channels_last else 'contiguous'}, {args.steps} timed steps each"
    )
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(
            f"  {name:<13} median {medians[name] * 1e3:8.1f} ms/step"
            f"   min {min(t) * 1e3:8.1f}   max {max(t) * 1e3:8.1f}"
        )
    print(f"ratio built / hand-written: {medians['built'] / medians['hand-written']:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
