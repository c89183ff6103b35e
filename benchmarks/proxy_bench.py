"""Proxy-task benchmarks: loop efficiency and proxy cost; the readers of stored signal results.

    .venv/bin/python benchmarks/proxy_bench.py loop    [--arch deeplabv3-resnet50] [--steps 100] [--workers N]
    .venv/bin/python benchmarks/proxy_bench.py cost    [--archs deeplabv3-resnet50 spinenet-49]

loop:   the trial's training throughput against a bare PyTorch loop on the same model, batch and
        optimizer over batches already in memory, in one run; ratio (goal >= 0.95) and the share
        of the trial's training time spent waiting for data.
cost:   wall seconds per `proxy` trial (goal <= 60 s on a 2-core CPU).
How far a fidelity ranks like another is `nas fidelity` (nas/search/fidelity.py), which replaced this
script's former ``signal`` command; it scores the results files that command wrote
(benchmarks/results/synthetic-*.json, measured on a GPU). `_stored_reference` below still reads them
for benchmarks/zero_cost_bench.py, checked against today's presets, scenes and search space.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from nas.common.config import to_dict
from proxy_tasks.datasets.synthetic import GENERATOR_VERSION
from proxy_tasks.loader import train_loader
from proxy_tasks.task import Fidelity, OptimizerConfig, build_datasets, load_task, scale_spec
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
    from nas.model.builder import build_model

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
    print(
        f"{spec.name} at {args.fidelity} fidelity, batch {fid.batch_size}, {fid.steps} steps, device {device}, "
        f"threads {torch.get_num_threads()}, loader workers {task.workers}"
    )
    print(f"  bare loop          {bare:8.1f} images/s")
    print(
        f"  trial              {result.images_per_second:8.1f} images/s "
        f"(data wait {100 * result.data_wait_fraction:.1f} % of training time)"
    )
    print(f"  ratio trial / bare {result.images_per_second / bare:8.3f} (goal >= 0.95)")


def bench_cost(args: argparse.Namespace) -> None:
    task = load_task(args.task)
    for name in args.archs:
        start = time.perf_counter()
        result = run_trial(get_spec(name), task, args.fidelity, seed=0, device=args.device)
        wall = time.perf_counter() - start
        print(
            f"{name:<24} {wall:6.1f} s wall ({result.train_seconds:.1f} s training, "
            f"{result.eval_seconds:.1f} s evaluation), {result.images_per_second:.1f} images/s, "
            f"{result.params:,} params, mIoU {result.miou:.3f}"
        )


def _architectures(samples: int) -> list[ArchSpec]:
    archs = [get_spec(n) for n in ("deeplabv3-resnet50", "deeplabv3plus-resnet50", "spinenet-49")]
    return archs + [sample(SearchSpace(), seed) for seed in range(1, samples + 1)]


def _settings(task, fidelity: str) -> dict:
    """What a row's mIoU depends on besides the network and the seed: the preset and the optimizer."""
    return _as_stored({"fidelity": to_dict(task.fidelity(fidelity)), "optimizer": to_dict(task.optimizer)})


def _same_settings(stored: dict, task, fidelity: str) -> bool:
    """Whether ``stored`` settings are the preset's and optimizer's today. A setting added since the
    file was written counts as unchanged while it holds its default (the behaviour before it existed)."""
    current = _settings(task, fidelity)
    defaults = _as_stored({"fidelity": to_dict(Fidelity()), "optimizer": to_dict(OptimizerConfig())})
    for section, values in current.items():
        saved = stored.get(section, {})
        if set(saved) - set(values):
            return False
        if any(saved.get(key, defaults[section].get(key)) != value for key, value in values.items()):
            return False
    return set(stored) <= set(current)


def _dataset(task) -> dict:
    """What a row's mIoU depends on in the task's data: its settings, but not where the folder is."""
    return _as_stored({k: v for k, v in to_dict(task.dataset).items() if k != "root"})


def _as_stored(value: dict) -> dict:
    """``value`` as it reads back from a results file (tuples become lists), so the two compare equal."""
    return json.loads(json.dumps(value))


def _finished(row: dict) -> bool:
    """A trial that ran to the end (not diverged, out of memory or pruned); rows before statuses were kept are."""
    return row.get("status", "ok") == "ok"


def _stored_reference(path: str, task, fidelity: str, names: list[str], archs: list[ArchSpec]) -> dict:
    """The ``fidelity`` rows of each architecture from a results file, checked against this run's specs."""
    saved = _load_signal(path, task.name)
    if saved.get("generator_version") is None:
        raise SystemExit(f"{path}: does not say which scene generator it was measured on (generator_version)")
    rows = _checked_rows(path, saved, task, names, archs)
    stored = {}
    for name in names:
        found = [r for r in rows.get(name, []) if r.get("fidelity") == fidelity and _finished(r)]
        if not found:
            raise SystemExit(f"{path}: no {fidelity} trials of {name}")
        stored[name] = found
    return stored


def _checked_rows(path: str, saved: dict, task, names: list[str], archs: list[ArchSpec]) -> dict[str, list[dict]]:
    """The file's rows, refused in one line if they were measured on something other than this run."""
    version = saved.get("generator_version")
    if version is not None and version != GENERATOR_VERSION:
        raise SystemExit(f"{path}: measured on synthetic scenes v{version}, not v{GENERATOR_VERSION}; measure again")
    if "dataset" in saved and saved["dataset"] != _dataset(task):
        raise SystemExit(f"{path}: measured on other dataset settings than task {task.name!r} has now; measure again")
    rows = saved["results"]
    for name, spec in zip(names, archs):
        for row in rows.get(name, []):
            if row.get("spec_hash", spec.hash) != spec.hash:  # the search space or a published spec changed
                raise SystemExit(
                    f"{path}: its {name} is spec {row['spec_hash'][:10]}, this run's is {spec.hash[:10]}; measure again"
                )
            fidelity = row.get("fidelity")
            checkable = "settings" in row and fidelity in task.fidelities
            if checkable and not _same_settings(row["settings"], task, fidelity):
                raise SystemExit(
                    f"{path}: its {fidelity} trials were run with other {fidelity} or optimizer "
                    f"settings than task {task.name!r} has now; use another file"
                )
    return rows


def _load_signal(path: str, task_name: str | None = None) -> dict:
    try:
        with open(path) as f:
            saved = json.load(f)
        if not isinstance(saved["results"], dict):
            raise TypeError("results is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path}: not a signal results file ({type(exc).__name__}: {exc})") from None
    if task_name is not None and saved.get("task") != task_name:
        raise SystemExit(f"{path}: holds trials of task {saved.get('task')!r}, not {task_name!r}")
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["loop", "cost"])
    parser.add_argument("--task", default="synthetic")
    parser.add_argument("--fidelity", default="proxy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="deeplabv3-resnet50")
    parser.add_argument("--archs", nargs="+", default=["deeplabv3-resnet50", "spinenet-49"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--workers", type=int, help="data-loader processes (default: the task's)")
    args = parser.parse_args()
    {"loop": bench_loop, "cost": bench_cost}[args.which](args)


if __name__ == "__main__":
    main()
