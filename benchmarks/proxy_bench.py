"""Proxy-task benchmarks: loop efficiency, proxy cost, proxy signal and fidelity.

    .venv/bin/python benchmarks/proxy_bench.py loop    [--arch deeplabv3-resnet50] [--steps 100] [--workers N]
    .venv/bin/python benchmarks/proxy_bench.py cost    [--archs deeplabv3-resnet50 spinenet-49]
    .venv/bin/python benchmarks/proxy_bench.py signal  [--seeds 3] [--samples 5] [--reference full]

loop:   the trial's training throughput against a bare PyTorch loop on the same model, batch and
        optimizer over batches already in memory, in one run; ratio (goal >= 0.95) and the share
        of the trial's training time spent waiting for data.
cost:   wall seconds per `proxy` trial (goal <= 60 s on a 2-core CPU).
signal: proxy mIoU mean +- std over seeds for a fixed set of architectures (DeepLabv3/v3+,
        SpineNet-49, seeded random samples); the spread between architectures against the seed
        noise; with --reference FIDELITY also Kendall tau / Spearman rho between proxy and
        reference mIoU (one reference run per architecture).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from proxy_tasks.loader import train_loader
from proxy_tasks.task import build_datasets, load_task, scale_spec
from proxy_tasks.trial import make_optimizer, poly_schedule, run_trial
from search_spaces import SearchSpace, get_spec, sample
from search_spaces.spec import ArchSpec


def bench_loop(args: argparse.Namespace) -> None:
    from dataclasses import replace

    task = load_task(args.task)
    fid = replace(task.fidelity(args.fidelity), steps=args.steps, eval_every=0)
    task = replace(task, fidelities={args.fidelity: fid}, workers=args.workers)
    spec = get_spec(args.arch)
    device = torch.device(args.device)

    # Bare loop: same model, optimizer, schedule and batch size; batches prepared beforehand.
    train, _ = build_datasets(task, fid)
    loader = iter(train_loader(train, replace(task, workers=0), fid, 0, 0, device))
    batches = [next(loader) for _ in range(8)]
    from nas.builder import build_model

    def bare_loop() -> float:
        torch.manual_seed(0)
        model = build_model(scale_spec(spec, fid), train.num_classes).to(device).train()
        optimizer = make_optimizer(model, task, fid)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_schedule(fid.steps, 0.9, 0))
        start = time.perf_counter()
        for step in range(fid.steps):
            x, y = batches[step % len(batches)]
            loss = F.cross_entropy(model(x.to(device)), y.to(device), ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            float(loss.detach())
        return fid.steps * fid.batch_size / (time.perf_counter() - start)

    # Both loops count from their first step (cold start included); the bare loop runs before and
    # after the trial so that drift in machine speed hits both alike.
    bare_before = bare_loop()
    result = run_trial(spec, task, args.fidelity, seed=0, device=device)
    bare = (bare_before + bare_loop()) / 2
    print(f"{spec.name} at {args.fidelity} fidelity, batch {fid.batch_size}, {fid.steps} steps, device {device}, "
          f"threads {torch.get_num_threads()}, loader workers {task.workers}")  # fmt: skip
    print(f"  bare loop          {bare:8.1f} images/s")
    print(f"  trial              {result.images_per_second:8.1f} images/s "
          f"(data wait {100 * result.data_wait_fraction:.1f} % of training time)")  # fmt: skip
    print(f"  ratio trial / bare {result.images_per_second / bare:8.3f} (goal >= 0.95)")


def bench_cost(args: argparse.Namespace) -> None:
    task = load_task(args.task)
    for name in args.archs:
        start = time.perf_counter()
        result = run_trial(get_spec(name), task, args.fidelity, seed=0, device=args.device)
        wall = time.perf_counter() - start
        print(f"{name:<24} {wall:6.1f} s wall ({result.train_seconds:.1f} s training, "
              f"{result.eval_seconds:.1f} s evaluation), {result.images_per_second:.1f} images/s, "
              f"{result.params:,} params, mIoU {result.miou:.3f}")  # fmt: skip


def _architectures(samples: int) -> list[ArchSpec]:
    archs = [get_spec(n) for n in ("deeplabv3-resnet50", "deeplabv3plus-resnet50", "spinenet-49")]
    return archs + [sample(SearchSpace(), seed) for seed in range(1, samples + 1)]


def bench_signal(args: argparse.Namespace) -> None:
    from scipy.stats import kendalltau, spearmanr

    task = load_task(args.task)
    rows = []
    for spec in _architectures(args.samples):
        mious = [run_trial(spec, task, args.fidelity, seed=s, device=args.device).miou for s in range(args.seeds)]
        reference = run_trial(spec, task, args.reference, seed=0, device=args.device).miou if args.reference else None
        rows.append((spec.name or spec.hash, statistics.mean(mious), statistics.stdev(mious), reference))
        ref = f"   {args.reference} {reference:.4f}" if reference is not None else ""
        print(f"{rows[-1][0]:<24} proxy mIoU {rows[-1][1]:.4f} +- {rows[-1][2]:.4f}{ref}", flush=True)
    means = [r[1] for r in rows]
    noise = statistics.mean(r[2] for r in rows)
    spread = statistics.stdev(means)
    print(f"spread between architectures (std of means) {spread:.4f}; seed noise (mean std) {noise:.4f}; "
          f"ratio {spread / noise if noise else float('inf'):.2f}")  # fmt: skip
    if args.reference:
        refs = [r[3] for r in rows]
        tau, rho = kendalltau(means, refs).statistic, spearmanr(means, refs).statistic
        print(f"Kendall tau {tau:.3f}, Spearman rho {rho:.3f} "
              f"(proxy mean vs {args.reference}, {len(rows)} architectures; goal tau >= 0.6)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["loop", "cost", "signal"])
    parser.add_argument("--task", default="synthetic")
    parser.add_argument("--fidelity", default="proxy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="deeplabv3-resnet50")
    parser.add_argument("--archs", nargs="+", default=["deeplabv3-resnet50", "spinenet-49"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--workers", type=int, help="data-loader processes (default: the task's)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--reference", help="fidelity to rank against (e.g. full)")
    args = parser.parse_args()
    {"loop": bench_loop, "cost": bench_cost, "signal": bench_signal}[args.which](args)


if __name__ == "__main__":
    main()
