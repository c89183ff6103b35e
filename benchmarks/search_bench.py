"""Search-engine benchmarks: platform efficiency through Ray, and search efficiency per strategy.

    .venv/bin/python benchmarks/search_bench.py platform   [--trials 6] [--fidelity smoke] [--concurrent 2]
    .venv/bin/python benchmarks/search_bench.py efficiency [--objective likeness|proxy] [--trials 40] [--seeds 3]

platform:   the same candidates trained (1) through `run_search` on a local Ray with ``--concurrent``
            trials of one CPU at a time, (2) back to back by the bare trial function in this process,
            one thread, and (3) by the bare trial function in ``concurrent`` plain processes. Ideal
            is ``concurrent`` x the back-to-back rate; prints the Ray ratio of ideal (goal >= 0.9),
            the ratio the cores themselves allow (3), Ray against (3), Ray's start-up seconds and
            its overhead per trial.
efficiency: best objective against the number of trials for random, evolution and TPE, over seeds,
            in-process; prints the mean best-so-far curve and how many trials each strategy needed to
            reach random search's final best. ``likeness`` is a cheap deterministic objective over specs
            (agreement with a hidden target spec); ``proxy`` trains each candidate on the task's proxy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml


def bench_platform(args: argparse.Namespace) -> None:
    from nas.search.config import load_search_config
    from nas.search.runner import run_search
    from search_spaces import ArchSpec

    work = Path(tempfile.mkdtemp(prefix="search-bench-"))
    config_path = work / "search.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "name": "bench",
                "task": args.task,
                "fidelity": args.fidelity,
                "baselines": [],
                "seed": 0,
                "strategy": {"name": "random"},
                "budget": {"trials": args.trials},
                "resources": {"cpus_per_trial": 1, "max_concurrent": args.concurrent, "ray_cpus": args.concurrent},
            }
        )
    )
    config = load_search_config(config_path)
    start = time.perf_counter()
    import ray

    ray.init(
        address="local", num_cpus=args.concurrent, include_dashboard=False, log_to_driver=False, logging_level="WARNING"
    )
    ray_start = time.perf_counter() - start
    start = time.perf_counter()
    search = run_search(config, work / "run", log=lambda _: None)
    ray_wall = time.perf_counter() - start
    ray.shutdown()
    specs = [ArchSpec.from_json(r["spec_json"]) for r in sorted(search.store.rows, key=lambda r: r["trial_id"])]

    # The bare trial function on the same candidates: back to back in this process, and in
    # ``concurrent`` plain processes (no Ray), one thread each, like the Ray trials.
    start = time.perf_counter()
    for spec in specs:
        _bare_trial(args.task, args.fidelity, spec.to_json(indent=None))
    bare_wall = time.perf_counter() - start
    import multiprocessing

    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.concurrent) as pool:
        pool.starmap(_bare_trial, [(args.task, args.fidelity, s.to_json(indent=None)) for s in specs])
    pool_wall = time.perf_counter() - start

    per_trial = bare_wall / len(specs)
    ideal_per_hour = args.concurrent * 3600 / per_trial
    pool_per_hour = len(specs) * 3600 / pool_wall
    measured_per_hour = len(specs) * 3600 / ray_wall
    overhead = (ray_wall - pool_wall) * args.concurrent / len(specs)
    print(f"{len(specs)} candidates at {args.fidelity} fidelity; bare trial {per_trial:.2f} s each (1 thread)")
    print(f"  bare, back to back            {len(specs) * 3600 / bare_wall:8.1f} trials/hour")
    print(f"  ideal: {args.concurrent} x back to back       {ideal_per_hour:8.1f} trials/hour")
    print(
        f"  bare, {args.concurrent} processes, no Ray     {pool_per_hour:8.1f} trials/hour "
        f"({pool_per_hour / ideal_per_hour:.3f} of ideal: what this machine's cores give)"
    )
    print(
        f"  Ray Tune, {args.concurrent} concurrent         {measured_per_hour:8.1f} trials/hour "
        f"(ratio of ideal {measured_per_hour / ideal_per_hour:.3f}, goal >= 0.9; "
        f"of {args.concurrent} bare processes {measured_per_hour / pool_per_hour:.3f})"
    )
    print(f"  Ray start-up {ray_start:.1f} s; Ray's overhead per trial against bare processes {overhead:.2f} s")


def _bare_trial(task_ref: str, fidelity: str, spec_json: str) -> None:
    from dataclasses import replace

    from proxy_tasks.task import load_task
    from proxy_tasks.trial import run_trial
    from search_spaces import ArchSpec

    torch.set_num_threads(1)
    task = replace(load_task(task_ref), workers=0)
    run_trial(ArchSpec.from_json(spec_json), task, fidelity, seed=0, device="cpu")


def likeness_objective():
    from search_spaces import SearchSpace, sample

    target = sample(SearchSpace(), 12345)

    def score(spec) -> float:
        # Live blocks only, in order: like a trained mIoU, a function of the network.
        live = [spec.blocks[i] for i in sorted(spec.live)]
        same = sum(
            (a.level == b.level) + (a.dilation == b.dilation) + (a.type == b.type) for a, b in zip(live, target.blocks)
        )
        return same / (3 * len(target.blocks))

    return score


def bench_efficiency(args: argparse.Namespace) -> None:
    from nas.search import STRATEGIES, Objective, Outcome, Search, evaluate_in_process
    from proxy_tasks.task import load_task
    from proxy_tasks.trial import run_trial
    from search_spaces import SearchSpace, get_spec

    space = SearchSpace()
    if args.objective == "likeness":
        score = likeness_objective()

        def evaluate(candidate) -> Outcome:
            return Outcome({"miou": score(candidate.spec)})
    else:
        task = load_task(args.task)

        def evaluate(candidate) -> Outcome:
            result = run_trial(candidate.spec, task, args.fidelity, seed=0, device="cpu")
            status = {"ok": "ok", "pruned": "pruned"}.get(result.status, "failed")
            return Outcome(result.to_dict(), status, result.error)

    curves: dict[str, list[list[float]]] = {}
    for name in args.strategies:
        curves[name] = []
        for seed in range(args.seeds):
            kwargs = {}
            if name == "evolution":
                kwargs = {
                    "population": args.population,
                    "sample_size": max(2, args.population // 2),
                    "seeds": (get_spec("deeplabv3-resnet50"),),
                }
            controller = STRATEGIES[name](space, seed, **kwargs)
            with tempfile.TemporaryDirectory() as run_dir:
                search = evaluate_in_process(Search(run_dir, controller, Objective(), args.trials), evaluate)
                rows = sorted((r for r in search.store.rows if r["status"] != "duplicate"), key=lambda r: r["trial_id"])
            best, curve = float("-inf"), []
            for r in rows:
                best = max(best, r["objective"] if r["objective"] is not None else float("-inf"))
                curve.append(best)
            curves[name].append(curve)
            print(f"  {name:<10} seed {seed}: best {curve[-1]:.4f}", flush=True)
    mean = {n: [statistics.mean(c[i] for c in cs) for i in range(args.trials)] for n, cs in curves.items()}
    marks = sorted({min(args.trials, m) for m in (5, 10, 20, 40, 80, 160, args.trials)})
    print(f"mean best-so-far over {args.seeds} seeds ({args.objective} objective):")
    print("  trials     " + "".join(f"{m:>9}" for m in marks))
    for name, curve in mean.items():
        print(f"  {name:<10} " + "".join(f"{curve[m - 1]:9.4f}" for m in marks))
    if "random" in mean:
        target = mean["random"][-1]
        for name, curve in mean.items():
            reached = next((i + 1 for i, v in enumerate(curve) if v >= target), None)
            print(
                f"  {name:<10} reaches random search's final best ({target:.4f}) after "
                f"{reached if reached else f'more than {args.trials}'} trials"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["platform", "efficiency"])
    parser.add_argument("--task", default="synthetic")
    parser.add_argument("--fidelity", default="smoke")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--objective", choices=["likeness", "proxy"], default="likeness")
    parser.add_argument("--strategies", nargs="+", default=["random", "evolution", "tpe"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--population", type=int, default=10)
    args = parser.parse_args()
    {"platform": bench_platform, "efficiency": bench_efficiency}[args.which](args)


if __name__ == "__main__":
    main()
