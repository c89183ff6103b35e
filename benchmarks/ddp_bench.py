"""Data-parallel training on Ray Train against the one-process loop, on this machine's cores.

    .venv/bin/python benchmarks/ddp_bench.py [--arch deeplabv3-resnet50] [--task synthetic]
        [--fidelity proxy] [--steps 40] [--workers 2]

Runs one training four ways in one run, each a `nas train` command: the fidelity cut to ``--steps``
steps with one evaluation at the end, and no loader processes (every core computes).

* ``1 process, 1 thread``: ``nas train --threads 1``;
* ``1 process, N threads``: ``nas train --threads N`` (N = ``--workers``; ``nas train`` takes all cores by default);
* ``Ray Train, 1 worker``: ``--workers 1 --cpus-per-worker 1 --address ...``: the loop of the first run inside
  a Ray Train worker, wrapped in DistributedDataParallel (a one-process gloo group);
* ``Ray Train, N workers``: ``--workers N --cpus-per-worker 1``: N workers of one thread, each 1/N of every batch.

Prints images/s of each (the trial's own figure, training steps only) and milliseconds per step; the
scaling of N workers over 1 worker and over one process of N threads (the same cores); Ray Train's
overhead per step (1 worker against 1 process, one thread each); and the wall-clock seconds of each
command, most of which, outside the training steps, is start-up (Ray Train's controller and workers, the
process group, the model and data) and the evaluation.
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
    p.add_argument("--workers", type=int, default=2, help="workers (and threads) of the parallel runs")
    return p.parse_args()


def _task_file(folder: Path, task_name: str, fidelity: str, steps: int) -> Path:
    """The task with ``fidelity`` cut to ``steps`` steps and one evaluation, loader processes off (a Ray
    Train worker on a CPU has none either)."""
    task = load_task(task_name).to_dict()
    task["fidelities"] = {fidelity: {**task["fidelities"][fidelity], "steps": steps, "eval_every": 0}}
    task["workers"] = 0
    path = folder / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def _train(name: str, common: list[str], folder: Path, *options: str) -> dict:
    out = folder / name.replace(" ", "-").replace(",", "")
    start = time.perf_counter()
    code = nas(["train", *common, "--out", str(out), "--quiet", *options])
    wall = time.perf_counter() - start
    if code != 0:
        sys.exit(f"{name}: nas train exited with {code}")
    metrics = json.loads((out / "metrics.json").read_text())
    step_ms = 1000 * metrics["train_seconds"] / metrics["steps"]
    return {
        "name": name,
        "wall": wall,
        "step_ms": step_ms,
        **{k: metrics[k] for k in ("images_per_second", "train_seconds")},
    }


def main() -> None:
    args = _parse()
    n = args.workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not 2 <= n <= cores:
        sys.exit(f"--workers must be in 2..{cores} (the cores here), got {n}")
    fid = load_task(args.task).fidelity(args.fidelity)
    if fid.batch_size % n:
        sys.exit(f"the batch of {args.fidelity} ({fid.batch_size}) does not split into {n} workers")
    with tempfile.TemporaryDirectory(prefix="ddp-bench-") as work:
        folder = Path(work)
        os.environ.setdefault("NAS_CACHE_DIR", str(folder / "cache"))
        task = _task_file(folder, args.task, args.fidelity, args.steps)
        common = ["--arch", args.arch, "--task", str(task), "--fidelity", args.fidelity]
        runs = [
            _train("1 process, 1 thread", common, folder, "--threads", "1"),
            _train(f"1 process, {n} threads", common, folder, "--threads", str(n)),
        ]
        ray.init(address="local", num_cpus=n, include_dashboard=False, log_to_driver=False)
        address = ray.get_runtime_context().gcs_address
        try:
            on_ray = ["--address", address, "--cpus-per-worker", "1", "--workers"]
            runs.append(_train("Ray Train, 1 worker", common, folder, *on_ray, "1"))
            runs.append(_train(f"Ray Train, {n} workers", common, folder, *on_ray, str(n)))
        finally:
            ray.shutdown()
    print(
        f"{args.arch} on {args.task} at {args.fidelity} (crop {fid.crop}, width {fid.width:g}, global batch "
        f"{fid.batch_size}), {args.steps} steps; CPU {platform.processor() or platform.machine()}, {cores} cores, "
        f"torch {torch.__version__}, ray {ray.__version__}"
    )
    print(f"{'run':<22} {'images/s':>9} {'ms/step':>9} {'training s':>11} {'wall s':>8}")
    for r in runs:
        print(
            f"{r['name']:<22} {r['images_per_second']:>9.2f} {r['step_ms']:>9.1f} {r['train_seconds']:>11.1f} "
            f"{r['wall']:>8.1f}"
        )
    one, threads, x1, xn = runs
    print(
        f"scaling: {n} workers / 1 worker {xn['images_per_second'] / x1['images_per_second']:.3f} (ideal {n}); "
        f"{n} workers / 1 process of {n} threads {xn['images_per_second'] / threads['images_per_second']:.3f}"
    )
    outside = {r["name"]: r["wall"] - r["train_seconds"] for r in runs}
    print(
        f"Ray Train overhead: {x1['step_ms'] - one['step_ms']:+.1f} ms per step "
        f"({x1['step_ms'] / one['step_ms']:.3f} x the one process's step, one thread each); outside the training "
        f"steps: {outside[x1['name']]:.1f} s (1 worker), {outside[xn['name']]:.1f} s ({n} workers), "
        f"{outside[one['name']]:.1f} s (1 process)"
    )


if __name__ == "__main__":
    main()
