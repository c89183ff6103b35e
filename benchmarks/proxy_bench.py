"""Proxy-task benchmarks: loop efficiency, proxy cost, proxy signal and fidelity.

    .venv/bin/python benchmarks/proxy_bench.py loop    [--arch deeplabv3-resnet50] [--steps 100] [--workers N]
    .venv/bin/python benchmarks/proxy_bench.py cost    [--archs deeplabv3-resnet50 spinenet-49]
    .venv/bin/python benchmarks/proxy_bench.py signal  [--seeds 3] [--samples 5] [--reference full-1k] [--jobs 2]
                                                       [--reference-seeds 2 | --reference-from FILE]
                                                       [--out FILE | --results FILE]

loop:   the trial's training throughput against a bare PyTorch loop on the same model, batch and
        optimizer over batches already in memory, in one run; ratio (goal >= 0.95) and the share
        of the trial's training time spent waiting for data.
cost:   wall seconds per `proxy` trial (goal <= 60 s on a 2-core CPU).
signal: proxy mIoU mean +- std over seeds for a fixed set of architectures (DeepLabv3/v3+,
        SpineNet-49, seeded random samples); the spread between architectures against the seed
        noise; the seed-to-seed Kendall tau (how far one seed's ranking predicts another's); with
        --reference FIDELITY also Kendall tau / Spearman rho between the proxy and the reference
        mIoU (mean over --reference-seeds runs per architecture; with 2+, the reference's own
        seed-to-seed tau, the most any proxy can reach); --reference-from FILE takes the reference
        trials from a stored file instead of training them (benchmarks/results/ holds a GPU's).
        --out FILE keeps every finished trial and resumes: trials already in FILE are not run again.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

from nas.common.atomic import atomic_path
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


def _one_trial(job: tuple[str, str, str, int, str, int]) -> dict:
    """One (architecture, fidelity, seed) run in a worker process with its share of the cores."""
    spec_json, task_ref, fidelity, seed, device, threads = job
    torch.set_num_threads(threads)
    task = load_task(task_ref)
    result = run_trial(ArchSpec.from_json(spec_json), task, fidelity, seed=seed, device=device)
    return {
        "fidelity": fidelity,
        "seed": seed,
        "miou": result.miou,
        "per_class_iou": result.per_class_iou,
        "seconds": result.train_seconds + result.eval_seconds,
        "status": result.status,
        "val_loss": result.val_loss,
        "loss_final": result.loss_final,
        "spec_hash": result.spec_hash,
        "settings": _settings(task, fidelity),
    }


def _settings(task, fidelity: str) -> dict:
    """What a row's mIoU depends on besides the network and the seed: the preset and the optimizer."""
    return _as_stored({"fidelity": to_dict(task.fidelity(fidelity)), "optimizer": to_dict(task.optimizer)})


def _same_settings(stored: dict, task, fidelity: str) -> bool:
    """Whether a row's stored settings are ``fidelity``'s now. A setting added since the row was
    measured counts as the same when it has its default: the row was trained as that default trains."""
    current = _settings(task, fidelity)
    defaults = _as_stored({"fidelity": to_dict(Fidelity()), "optimizer": to_dict(OptimizerConfig())})
    if set(stored) != set(current):
        return False
    for part, values in current.items():
        added = set(values) - set(stored[part])
        if any(values[key] != defaults[part].get(key) for key in added):
            return False
        if {k: v for k, v in values.items() if k not in added} != stored[part]:
            return False
    return True


def _dataset(task) -> dict:
    """What a row's mIoU depends on in the task's data: its settings, but not where the folder is."""
    return _as_stored({k: v for k, v in to_dict(task.dataset).items() if k != "root"})


def _as_stored(value: dict) -> dict:
    """``value`` as it reads back from a results file (tuples become lists), so the two compare equal."""
    return json.loads(json.dumps(value))


def bench_signal(args: argparse.Namespace) -> None:
    if args.results:  # summarise a finished (or interrupted) run's file without training anything
        saved = _load_signal(args.results)
        _summarise_signal(saved["results"], saved.get("fidelity") or args.fidelity, saved.get("reference"), args.metric)
        return
    results = _run_signal(args)
    _summarise_signal(results, args.fidelity, args.reference, args.metric)


def _run_signal(args: argparse.Namespace) -> dict[str, list[dict]]:
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    archs = [a for a in _architectures(args.samples) if not args.only or a.name in args.only]
    if not archs:
        known = ", ".join(a.name for a in _architectures(args.samples))
        raise SystemExit(f"--only: none of {', '.join(args.only)} is among the architectures ({known})")
    names = [spec.name or spec.hash[:10] for spec in archs]
    task = load_task(args.task)
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.device == "cpu" else 1
    runs = [(name, spec, args.fidelity, seed) for name, spec in zip(names, archs) for seed in range(args.seeds)]
    if args.reference and not args.reference_from:
        runs += [
            (name, spec, args.reference, seed)
            for name, spec in zip(names, archs)
            for seed in range(args.reference_seeds)
        ]
    results: dict[str, list[dict]] = {n: [] for n in names}
    header = {}
    if args.out and os.path.exists(args.out):  # resume: the trials already in the file are not run again
        header = _load_signal(args.out, task.name)
        saved = _checked_rows(args.out, header, task, names, archs)
        failed = sum(not _finished(r) for rows in saved.values() for r in rows)
        results |= {n: [r for r in rows if _finished(r)] for n, rows in saved.items()}
        if failed:
            print(f"{args.out}: {failed} trials that did not finish ok will run again")
    if args.reference_from:  # reference trials measured elsewhere (`full` on a GPU) count as done
        for name, rows in _stored_reference(args.reference_from, task, args.reference, names, archs).items():
            have = {(r["fidelity"], r["seed"]) for r in results[name]}
            results[name] += [r for r in rows if (r["fidelity"], r["seed"]) not in have]
    done = {(n, r["fidelity"], r["seed"]) for n in names for r in results[n]}
    if done:
        runs = [run for run in runs if (run[0], run[2], run[3]) not in done]
        print(f"{len(done)} trials of these architectures already done, {len(runs)} to run")
    header = {k: v for k, v in header.items() if k != "results"} | {
        "task": task.name,
        "dataset": _dataset(task),
        "fidelity": args.fidelity,
        "reference": args.reference,
        "generator_version": GENERATOR_VERSION,
    }
    jobs = [(spec.to_json(), args.task, fidelity, seed, args.device, threads) for _, spec, fidelity, seed in runs]
    start = time.perf_counter()
    # Spawned workers: a forked child of a process that has used OpenMP threads can hang.
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        # Kept as each finishes, not in submission order: a slow trial holds none of the others back.
        futures = {pool.submit(_one_trial, job): name for (name, *_), job in zip(runs, jobs)}
        try:
            for future in as_completed(futures):
                name, row = futures[future], future.result()
                results[name].append(row)
                print(
                    f"  {name:<24} {row['fidelity']:<9} seed {row['seed']}  mIoU {row['miou']:.4f}  "
                    f"{row['seconds']:.0f} s  {row['status']}",
                    flush=True,
                )
                if args.out:  # every finished trial is kept, whatever happens to the rest
                    with atomic_path(args.out) as tmp, open(tmp, "w") as f:
                        json.dump(header | {"results": results}, f, indent=1)
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the trials not yet started are not started
            raise
    print(f"{len(jobs)} trials in {time.perf_counter() - start:.0f} s, {args.jobs} at a time x {threads} threads")
    return {n: [r for r in results[n] if _finished(r)] for n in names}


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
            fidelity, stored = row.get("fidelity"), row.get("settings")
            if stored is not None and fidelity in task.fidelities and not _same_settings(stored, task, fidelity):
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


def _summarise_signal(results: dict[str, list[dict]], fidelity: str, reference: str | None, metric: str = "miou"):
    """Rank the architectures by ``metric`` at ``fidelity`` (mIoU, or minus the validation loss) and
    compare with the reference's mIoU."""
    from scipy.stats import kendalltau, spearmanr

    names = list(results)
    proxy = _seed_table(results, fidelity, metric)
    ref = _seed_table(results, reference) if reference else None
    for label, table in ((fidelity, proxy), (reference, ref)):
        if table is None and label:
            print(f"\n{label}: not every architecture has a trial at this fidelity")
    means = _print_seed_stats(proxy, fidelity if metric == "miou" else f"{fidelity} -{metric}") if proxy else None
    ref_means = _print_seed_stats(ref, reference) if ref else None
    if means is None or ref_means is None:
        return
    tau, rho = kendalltau(means, ref_means).statistic, spearmanr(means, ref_means).statistic
    print(f"\n{'architecture':<24} {fidelity} mean   {reference} mean")
    for n, m, r in zip(names, means, ref_means):
        print(f"{n:<24} {m:.4f}        {r:.4f}")
    print(
        f"Kendall tau {tau:.3f}, Spearman rho {rho:.3f} ({fidelity} mean vs {reference} mean of "
        f"{len(ref[names[0]])} seeds, {len(names)} architectures; goal tau >= 0.6)"
    )
    # What a search sees: one seed's ranking, not the mean of three.
    single = [kendalltau([proxy[n][s] for n in names], ref_means).statistic for s in range(len(proxy[names[0]]))]
    print(
        f"one {fidelity} seed against the {reference} mean: Kendall tau {', '.join(f'{t:.3f}' for t in single)} "
        f"(mean {statistics.mean(single):.3f})"
    )


def _seed_table(results: dict[str, list[dict]], fidelity: str, metric: str = "miou") -> dict[str, list[float]] | None:
    """``metric`` per architecture (higher is better: a loss is negated) over the seeds every
    architecture has at ``fidelity`` (None: some have none)."""
    sign = 1 if metric == "miou" else -1
    by_seed = {
        n: {r["seed"]: sign * r[metric] for r in rows if r["fidelity"] == fidelity and metric in r}
        for n, rows in results.items()
    }
    seeds = sorted(set.intersection(*(set(v) for v in by_seed.values()))) if by_seed else []
    if not seeds:
        return None
    return {n: [v[s] for s in seeds] for n, v in by_seed.items()}


def _print_seed_stats(table: dict[str, list[float]], fidelity: str) -> list[float]:
    """Mean +- std per architecture; with 2+ seeds, the spread against the noise and the seed-to-seed tau."""
    import itertools

    from scipy.stats import f_oneway, kendalltau

    names, seeds = list(table), len(next(iter(table.values())))
    means = [statistics.mean(table[n]) for n in names]
    print(f"\n{'architecture':<24} {fidelity} mIoU (mean +- std over {seeds} seeds)")
    for n, m in zip(names, means):
        print(f"{n:<24} {m:.4f} +- {statistics.stdev(table[n]) if seeds > 1 else math.nan:.4f}")
    if len(names) < 2 or seeds < 2:
        return means  # spread and rank agreement need two architectures and two seeds
    noise = statistics.mean(statistics.stdev(table[n]) for n in names)
    spread = statistics.stdev(means)
    print(
        f"spread between architectures (std of means) {spread:.4f}; seed noise (mean std) {noise:.4f}; "
        f"ratio {spread / noise if noise else float('inf'):.2f}"
    )
    # Every architecture sees the same batches at a given seed: a shift common to all of them is the
    # seed's (its data order), not any architecture's.
    per_seed = [statistics.mean(table[n][s] for n in names) for s in range(seeds)]
    print(f"mean over architectures per seed: {', '.join(f'{m:.4f}' for m in per_seed)}")
    # Is the architecture effect real? One-way ANOVA of mIoU on architecture, seeds as replicates.
    anova = f_oneway(*(table[n] for n in names))
    print(f"one-way ANOVA over architectures: F = {anova.statistic:.2f}, p = {anova.pvalue:.2g}")
    # Would one seed rank the architectures as another seed does? Kendall tau over seed pairs. This
    # bounds what any cheaper fidelity can reach against this one.
    taus = [
        kendalltau([table[n][a] for n in names], [table[n][b] for n in names]).statistic
        for a, b in itertools.combinations(range(seeds), 2)
    ]
    print(
        f"{fidelity} seed-to-seed Kendall tau (one seed's ranking against another's): "
        f"{', '.join(f'{t:.3f}' for t in taus)} (mean {statistics.mean(taus):.3f})"
    )
    return means


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
    parser.add_argument("--only", nargs="+", help="signal: just these of the architectures (e.g. spinenet-49)")
    parser.add_argument("--reference", help="fidelity to rank against (e.g. full-1k)")
    parser.add_argument(
        "--reference-seeds",
        type=int,
        default=1,
        help="signal: reference runs per architecture (not with --reference-from)",
    )
    parser.add_argument(
        "--reference-from",
        help="signal: take the reference trials from this results file "
        "(e.g. benchmarks/results/synthetic-full-1k.json, measured on a GPU)",
    )
    parser.add_argument(
        "--metric",
        choices=["miou", "val_loss", "loss_final"],
        default="miou",
        help="signal: what ranks the proxy trials (losses: lower is better)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="trials at a time (signal; CPU threads are shared)")
    parser.add_argument("--out", help="signal: write every finished trial's result to this JSON file")
    parser.add_argument("--results", help="signal: summarise a file written by --out instead of training")
    args = parser.parse_args()
    if args.reference_from and not args.reference:
        parser.error("--reference-from needs --reference (the fidelity to take from the file)")
    if args.reference == args.fidelity:  # their runs would be told apart by fidelity only
        parser.error(f"--reference must differ from --fidelity ({args.fidelity}); seed-to-seed tau covers that")
    {"loop": bench_loop, "cost": bench_cost, "signal": bench_signal}[args.which](args)


if __name__ == "__main__":
    main()
