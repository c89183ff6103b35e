"""Data-parallel training on Ray Train against the one-process loop, on this machine's cores.

    .venv/bin/python benchmarks/ddp_bench.py [--arch deeplabv3-resnet50] [--task synthetic]
        [--fidelity proxy] [--steps 40] [--cores N]

Runs one training three ways in one run, each a `nas train` command on the same CORES cores: the
fidelity with ``--steps`` steps, evaluated once at the end.

* ``one process``: ``nas train --threads CORES`` (what ``--workers 1`` does);
* ``Ray Train x1``: ``--workers 1 --cpus-per-worker CORES --address ...``: the same loop inside a Ray Train
  worker, wrapped in DistributedDataParallel (a one-process gloo group);
* ``Ray Train x2``: ``--workers 2 --cpus-per-worker CORES/2``: two workers, each half of every batch.

Prints images/s of each (the trial's own figure, training steps only), the ratio of two workers to one
and to the one process (the scaling the cores allow), Ray Train's overhead per step (x1 against the
one process) and the wall-clock seconds of each command (the rest of which is start-up: Ray Train's
controller and workers, the process group, building the model and data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch
import yaml

from nas.cli import main as nas
from proxy_tasks.task import load_task


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="deeplabv3-resnet50")
    p.add_argument("--task", default="synthetic")
    p.add_argument("--fidelity", default="proxy")
    p.add_argument("--steps", type=int, default=40)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    p.add_argument("--cores", type=int, default=cores, help="cores to use (default: all, %(default)s here)")
    return p.parse_args()


def _task_file(folder: Path, task_name: str, fidelity: str, steps: int) -> Path:
    """The task with ``fidelity`` cut to ``steps`` steps and one evaluation, loader processes off (the
    cores go to compute in all three runs, as Ray Train's workers have them on a CPU)."""
    task = load_task(task_name).to_dict()
    task["fidelities"] = {fidelity: {**task["fidelities"][fidelity], "steps": steps, "eval_every": 0}}
    task["workers"] = 0
    path = folder / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def _train(name: str, common: list[str], folder: Path, *options: str) -> dict:
    out = folder / name
    start = time.perf_counter()
    code = nas(["train", *common, "--out", str(out), "--quiet", *options])
    wall = time.perf_counter() - start
    if code != 0:
        sys.exit(f"{name}: nas train exited with {code}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"name": name, "wall": wall, **{k: metrics[k] for k in ("images_per_second", "train_seconds", "steps")}}


def main() -> None:
    args = _parse()
    if args.cores < 2:
        sys.exit("needs at least 2 cores (one per worker)")
    with tempfile.TemporaryDirectory(prefix="ddp-bench-") as work:
        folder = Path(work)
        os.environ.setdefault("NAS_CACHE_DIR", str(folder / "cache"))
        task = _task_file(folder, args.task, args.fidelity, args.steps)
        common = ["--arch", args.arch, "--task", str(task), "--fidelity", args.fidelity]
        runs = [_train("one process", common, folder, "--threads", str(args.cores))]
        ray.init(address="local", num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
        address = ray.get_runtime_context().gcs_address
        try:
            ray_options = ["--address", address, "--workers"]
            runs.append(_train("Ray Train x1", common, folder, *ray_options, "1", "--cpus-per-worker", str(args.cores)))
            half = str(args.cores // 2)
            runs.append(_train("Ray Train x2", common, folder, *ray_options, "2", "--cpus-per-worker", half))
        finally:
            ray.shutdown()
    fid = load_task(args.task).fidelity(args.fidelity)
    print(
        f"{args.arch} on {args.task} at {args.fidelity} (crop {fid.crop}, width {fid.width:g}, global batch "
        f"{fid.batch_size}), {args.steps} steps; CPU {platform.processor() or platform.machine()}, "
        f"{args.cores} cores, torch {torch.__version__}, ray {ray.__version__}"
    )
    print(f"{'run':<14} {'images/s':>9} {'ms/step':>9} {'training s':>11} {'wall s':>8}")
    for r in runs:
        ms = 1000 * r["train_seconds"] / r["steps"]
        print(
            f"{r['name']:<14} {r['images_per_second']:>9.2f} {ms:>9.1f} {r['train_seconds']:>11.1f} {r['wall']:>8.1f}"
        )
    one, x1, x2 = runs
    step = {r["name"]: 1000 * r["train_seconds"] / r["steps"] for r in runs}
    print(
        f"scaling: 2 workers / 1 worker {x2['images_per_second'] / x1['images_per_second']:.3f}, "
        f"2 workers / one process {x2['images_per_second'] / one['images_per_second']:.3f}"
    )
    print(
        f"Ray Train overhead: {step['Ray Train x1'] - step['one process']:+.1f} ms per step "
        f"({step['Ray Train x1'] / step['one process']:.3f} x the one process's step); outside the training "
        f"steps (start-up, evaluation, cost): {x1['wall'] - x1['train_seconds']:.1f} s (x1), "
        f"{x2['wall'] - x2['train_seconds']:.1f} s (x2), {one['wall'] - one['train_seconds']:.1f} s (one process)"
    )


if __name__ == "__main__":
    main()
