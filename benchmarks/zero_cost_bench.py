"""Zero-cost proxies against stored ground truth: how well does each training-free score rank architectures?

    .venv/bin/python benchmarks/zero_cost_bench.py [--task synthetic] [--fidelity proxy] [--seeds 2]
        [--reference full-1k] [--reference-from benchmarks/results/synthetic-full-1k.json]
        [--scores synflow naswot ...] [--threads 1] [--out FILE]

Scores the architectures of `proxy_bench.py signal` (DeepLabv3/v3+, SpineNet-49, seeded samples) with
every score of `proxy_tasks.zero_cost` at the fidelity's width and crop, averages each score over
the seeds, and prints Kendall tau and Spearman rho of those means against the reference mIoU (mean of
the stored trials per architecture) with the seconds one score of one architecture took.
--out FILE keeps every finished (architecture, score, seed) and resumes: those already in FILE are
not scored again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from proxy_bench import _architectures, _stored_reference

from nas.common.atomic import atomic_path
from proxy_tasks.task import load_task
from proxy_tasks.zero_cost import SCORES, check_name, score


def main() -> None:
    args = _parse()
    torch.set_num_threads(args.threads)
    task = load_task(args.task)
    archs = _architectures(args.samples)
    names = [spec.name or spec.hash[:10] for spec in archs]
    reference = _stored_reference(args.reference_from, task, args.reference, names, archs)
    truth = {n: statistics.mean(r["miou"] for r in rows) for n, rows in reference.items()}
    saved = _load(args.out, args, names, archs) if args.out and os.path.exists(args.out) else {}
    results: dict[str, dict] = {n: saved.get(n, {"spec_hash": spec.hash}) for n, spec in zip(names, archs)}
    header = {
        "task": task.name,
        "fidelity": args.fidelity,
        "reference": args.reference,
        "reference_from": args.reference_from,
        "command": " ".join(["python", *sys.argv]),
        "measured_on": f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    for name, spec in zip(names, archs):
        for score_name in args.scores:
            for seed in range(args.seeds):
                done = results[name].setdefault(score_name, {})
                if str(seed) in done:
                    continue
                start = time.perf_counter()
                value = score(spec, task, args.fidelity, score_name, seed)
                done[str(seed)] = {"value": value, "seconds": round(time.perf_counter() - start, 3)}
                print(f"  {name:<24} {score_name:<10} seed {seed}  {value:.6g}  {done[str(seed)]['seconds']:.2f} s")
                if args.out:  # every finished score is kept, whatever happens to the rest
                    _write(args.out, header | {"results": results})
    summary = _summarise(results, truth, names, args.scores, args.seeds)
    if args.out:
        _write(args.out, header | {"results": results, "reference_miou": truth, "summary": summary})


def _summarise(results: dict, truth: dict[str, float], names: list[str], scores: list[str], seeds: int) -> dict:
    """Print and return, per score, tau and rho of its seed mean against the reference mIoU."""
    from scipy.stats import kendalltau, spearmanr

    ref = [truth[n] for n in names]
    means = {s: [statistics.mean(results[n][s][str(k)]["value"] for k in range(seeds)) for n in names] for s in scores}
    print(f"\n{'architecture':<24} {'mIoU':>7} " + " ".join(f"{s:>11}" for s in scores))
    for i, n in enumerate(names):
        print(f"{n:<24} {truth[n]:7.4f} " + " ".join(f"{means[s][i]:11.4g}" for s in scores))
    summary = {}
    print(f"\n{'score':<10} {'tau':>7} {'rho':>7} {'s/arch':>7}  (mean of {seeds} seeds, {len(names)} architectures)")
    for s in scores:
        seconds = statistics.mean(results[n][s][str(k)]["seconds"] for n in names for k in range(seeds))
        tau, rho = kendalltau(means[s], ref).statistic, spearmanr(means[s], ref).statistic
        summary[s] = {"kendall_tau": round(float(tau), 4), "spearman_rho": round(float(rho), 4), "seconds": seconds}
        print(f"{s:<10} {tau:7.3f} {rho:7.3f} {seconds:7.2f}")
    return summary


def _load(path: str, args: argparse.Namespace, names: list[str], archs) -> dict:
    """A previous run's results, refused in one line if they were scored on something else."""
    try:
        with open(path) as f:
            saved = json.load(f)
        results = saved["results"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path}: not a zero-cost results file ({type(exc).__name__}: {exc})") from None
    if (saved.get("task"), saved.get("fidelity")) != (args.task, args.fidelity):
        raise SystemExit(f"{path}: scored task {saved.get('task')!r} at {saved.get('fidelity')!r}; use another file")
    for name, spec in zip(names, archs):
        if name in results and results[name].get("spec_hash") != spec.hash:
            raise SystemExit(f"{path}: its {name} is another spec than this run's ({spec.hash[:10]}); use another file")
    return results


def _write(path: str, data: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=1)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="synthetic")
    parser.add_argument("--fidelity", default="proxy", help="the width, crop and batch the scores are taken at")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=5, help="seeded random architectures besides the published")
    parser.add_argument("--reference", default="full-1k")
    parser.add_argument("--reference-from", default="benchmarks/results/synthetic-full-1k.json")
    parser.add_argument("--scores", nargs="+", default=list(SCORES))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", help="keep every finished score in this JSON file and resume from it")
    args = parser.parse_args()
    for name in args.scores:
        try:
            check_name(name)
        except ValueError as exc:
            parser.error(str(exc))
    if args.seeds < 1:
        parser.error("--seeds: at least 1")
    return args


if __name__ == "__main__":
    main()
