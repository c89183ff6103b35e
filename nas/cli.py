"""The ``nas`` command line.

Bad input (malformed JSON, an invalid spec, an unknown name, a missing file, a bad option) prints
one line, ``nas: error: ...``, and exits with status 2, before anything is written. ``main(argv)``
returns that status instead of exiting, so it can run in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.common.config import MAX_SEED
from nas.common.errors import UserError, first_line, one_line
from nas.common.jsonutil import write_json
from search_spaces import SearchSpace, SpaceOptions, SpecError, get_spec, mutate, published_names, resolve_spec, sample
from search_spaces.spec import MAX_CLASSES, ArchSpec


class CliError(UserError):
    """A user error: reported as one line, exit status 2."""


class TrainingFailed(RuntimeError):
    """A data-parallel training whose workers failed more often than Ray Train retries them."""


class NasArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``nas: error: ...``, like every other user error.

    argparse's own prints the usage block first; ``nas <command> --help`` still shows it.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("nas").strip()
        self.exit(2, f"nas: error: {command + ': ' if command else ''}{message}\n")


# Bounds of numeric options: generous for any real use, small enough that nothing runs out of memory.
MAX_WORKERS = 4096  # data-parallel workers of one training
MAX_GPUS_PER_WORKER = 64
MAX_IMAGE_SIDE = 4096  # twice a Cityscapes frame's 2048
MAX_DPI = 1200
MAX_MUTATION_STEPS = 10_000
MAX_PROMOTE_SEEDS = 100  # trainings per model at the promoted fidelity: already far more than a comparison needs


def int_in(low: int, high: int | None = None):
    """An argparse ``type``: an integer in ``[low, high]`` (no upper bound if ``high`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low:,}" if high is None else f"in {low:,}..{high:,}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value:,}")
        return value

    return parse


positive_int = int_in(1)
image_side = int_in(1, MAX_IMAGE_SIDE)
seed_int = int_in(0, MAX_SEED)
promote_seeds = int_in(1, MAX_PROMOTE_SEEDS)
worker_count = int_in(1, MAX_WORKERS)
gpus_per_worker = int_in(0, MAX_GPUS_PER_WORKER)
RAY_TRAIN_DIR = "ray-train"  # in `nas train --out`: Ray Train's storage while a data-parallel training runs


def strategy_name(text: str) -> str:
    """An argparse ``type``: a search strategy's name (imported here, not at start: the search package is large)."""
    from nas.search.config import STRATEGY_NAMES

    if text not in STRATEGY_NAMES:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(STRATEGY_NAMES)})")
    return text


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (what a container or `taskset` allows),
    not the machine's count, which torch's default may take and then oversubscribe."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_device(name: str) -> str:
    """``name`` if this machine has that torch device, else a `CliError`; every ``--device`` passes here."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CliError(f"--device {name!r}: not a device (use cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return name
    if device.type != "cuda":
        raise CliError(f"--device {name}: {device.type} devices are not supported (use cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise CliError(f"--device {name}: CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise CliError(f"--device {name}: no such CUDA device (this machine has {count}: 0..{count - 1})")
    return name


def check_output_dir(path: str | Path, option: str) -> Path:
    """``path`` if it is a folder or can be created as one; checked before anything is written."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise CliError(f"{option} {path}: exists and is not a folder")
        ancestor = path.absolute()
        while not ancestor.exists():
            ancestor = ancestor.parent
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        raise CliError(f"{option} {path}: not a usable path ({exc})") from None
    if not ancestor.is_dir():
        raise CliError(f"{option} {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CliError(f"{option} {path}: {ancestor} is not writable")
    return path


def _space(args: argparse.Namespace) -> SearchSpace:
    # Without --output-levels the endpoints follow the level range: every level from 3 up to the coarsest.
    output_levels = args.output_levels or range(max(3, args.min_level), args.max_level + 1)
    return SpaceOptions(
        num_blocks=args.blocks,
        min_level=args.min_level,
        max_level=args.max_level,
        dilations=tuple(args.dilations),
        output_levels=tuple(output_levels),
        head=args.head,
        head_level=args.head_level,
    ).build()


def cmd_list(args: argparse.Namespace) -> None:
    rows = []
    for name in published_names():
        spec = get_spec(name)
        rows.append({"name": name, "hash": spec.hash, "blocks": len(spec.blocks), "head": spec.head.kind})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['name']:<28} {r['hash']}  {r['blocks']:>3} blocks  {r['head']}")


def arch_info(spec: ArchSpec, size: tuple[int, int], classes: int, latency: bool, device: str) -> dict[str, Any]:
    from .model.builder import build_model
    from .model.cost import count_flops, count_params, measure_latency

    model = build_model(spec, classes)
    info: dict[str, Any] = {
        "name": spec.name,
        "hash": spec.hash,
        "num_blocks": len(spec.blocks),
        "live_blocks": len(spec.live),
        "endpoint_levels": sorted(spec.endpoints),
        "head": spec.head.kind,
        "head_level": spec.head.level,
        "num_classes": classes,
        "input_size": list(size),
        "params_backbone": count_params(model.backbone),
        "params_total": count_params(model),
        "flops": count_flops(model, size),
    }
    if latency:
        info["latency_ms"] = round(measure_latency(model, size, device=device), 3)
        info["device"] = device
    return info


def cmd_info(args: argparse.Namespace) -> None:
    spec = resolve_spec(args.spec, stdin=True)
    info = arch_info(spec, tuple(args.size), args.classes, args.latency, args.device)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{info['name'] or '(unnamed)'}  hash {info['hash']}")
    print(f"  blocks         {info['live_blocks']} built / {info['num_blocks']} in spec")
    print(f"  endpoints      levels {info['endpoint_levels']} -> {info['head']} head at level {info['head_level']}")
    print(f"  params         {info['params_backbone']:,} backbone, {info['params_total']:,} total")
    print(f"  FLOPs          {info['flops'] / 1e9:.2f} G at {args.size[0]}x{args.size[1]}, {args.classes} classes")
    if "latency_ms" in info:
        print(f"  latency        {info['latency_ms']:.1f} ms ({info['device']}, batch 1)")


def cmd_sample(args: argparse.Namespace) -> None:
    spec = sample(_space(args), args.seed)
    print(spec.to_json())


def cmd_mutate(args: argparse.Namespace) -> None:
    spec = resolve_spec(args.spec, stdin=True)
    space = _space(args)
    import random

    rng = random.Random(args.seed)
    applied = []
    for _ in range(args.steps):
        spec, mutation = mutate(spec, space, rng)
        applied.append(mutation.describe())
    print(spec.to_json())
    for line in applied:
        print(f"mutation: {line}", file=sys.stderr)


def cmd_draw(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from analysis.topology import draw_topology

    spec = resolve_spec(args.spec, stdin=True)
    fig = draw_topology(spec)
    try:
        fig.savefig(args.output, dpi=args.dpi)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot write {args.output}: {exc}") from None
    print(args.output)


# ------------------------------------------------------------------------------------ training
def _device(name: str):
    import torch

    return torch.device(name)  # `main` has checked it


def cmd_train(args: argparse.Namespace) -> None:
    import logging
    import math
    import shutil

    from proxy_tasks.task import build_datasets, load_task, scale_spec
    from proxy_tasks.trial import CHECKPOINT_NAME

    spec = resolve_spec(args.arch, stdin=True)
    task = load_task(args.task, args.data_root)
    fidelity = task.fidelity(args.fidelity)  # fail now on an unknown fidelity
    scaled = scale_spec(spec, fidelity)  # and on a spec the fidelity's width makes invalid
    if task.dataset.kind != "synthetic":
        build_datasets(task, fidelity)  # and on missing files: indexing a dataset folder reads no image
    init = _initial_weights(args, task, scaled)  # and on an --init file that does not fit
    workers = _train_workers(args, task)  # None: in this process
    device = _device(args.device)
    import torch

    torch.set_num_threads(args.threads)
    out = check_output_dir(args.out or f"runs/train-{spec.name or spec.hash}-{task.name}-{args.fidelity}", "--out")
    if (out / "metrics.json").exists():
        raise CliError(f"{out} holds a finished run; choose another --out")
    if (out / CHECKPOINT_NAME).exists() and not args.resume:
        raise CliError(f"{out} holds an unfinished run; pass --resume to continue it or choose another --out")
    connected = False
    if workers is not None:
        from nas.search.distributed import connect_for_workers
        from proxy_tasks.trial import check_resumable

        if args.resume and (out / CHECKPOINT_NAME).is_file():
            check_resumable(out / CHECKPOINT_NAME, spec.hash, args.fidelity, args.seed)  # the workers resume from it
        from nas.search.runner import stderr_log

        connected = connect_for_workers(workers, args.address, stderr_log)  # refuses workers that cannot fit
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "spec.json").write_text(spec.to_json())
        log = logging.getLogger(f"nas.train.{out}")
        log.setLevel(logging.INFO)
        handler = logging.FileHandler(out / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        where = f"device {device}, {args.threads} threads" if workers is None else f"{workers.describe()} on Ray Train"
        log.info(
            "train %s (%s) on %s at %s fidelity (crop %s, resolution %.4g), %d steps, seed %d, %s",
            spec.name,
            spec.hash,
            task.name,
            args.fidelity,
            fidelity.crop if isinstance(fidelity.crop, int) else "x".join(map(str, fidelity.crop)),
            fidelity.resolution,
            fidelity.steps,
            args.seed,
            where,
        )
        if init is not None:
            for line in init.report.problems:  # what a partial initialisation leaves as initialised
                log.info("init: skipped %s", line)
                print(f"init: skipped {line}", file=sys.stderr)
            log.info("init: %s", init.report.summary())
        if workers is None:
            result = _train_here(args, spec, task, device, out, log, init)
        else:  # Ray Train's controller appends the evaluations to train.log (both append whole lines)
            result = _train_on_ray(args, spec, task, workers, out, init)
    finally:
        if connected:
            import ray

            ray.shutdown()
    metrics = result.to_dict()
    if init is not None:
        metrics["init"] = init.report.to_dict()
    write_json(out / "metrics.json", metrics)
    # Finished: the resume state is no longer needed, nor Ray Train's checkpoints (also those of a
    # data-parallel run that this one resumed)
    (out / CHECKPOINT_NAME).unlink(missing_ok=True)
    shutil.rmtree(out / RAY_TRAIN_DIR, ignore_errors=True)
    log.info("done: status %s, mIoU %.4f, %.1f s training", result.status, result.miou, result.train_seconds)
    handler.close()
    log.removeHandler(handler)
    miou = "nan" if math.isnan(result.miou) else f"{result.miou:.4f}"
    augmented = "" if math.isnan(result.miou_ms) else f", multi-scale mIoU {result.miou_ms:.4f} (miou_ms)"
    print(
        f"{result.status}: mIoU {miou}{augmented}, pixel accuracy {result.pixel_accuracy:.4f}, "
        f"{result.train_seconds:.1f} s training, {result.images_per_second:.1f} images/s -> {out}"
    )


def _train_workers(args: argparse.Namespace, task):
    """The data-parallel workers `nas train` asks for (checked against the fidelity's batch), or None to
    train in this process: ``--workers 1`` without ``--address``."""
    if args.workers == 1 and args.address is None:
        return None
    from nas.search.distributed import Workers, check_batch_split

    device = _device(args.device)
    if device.type == "cuda" and device.index is not None:
        raise CliError(f"--device {args.device}: with --workers, Ray Train gives each worker its GPUs")
    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else int(device.type == "cuda")
    workers = Workers(args.workers, args.cpus_per_worker, gpus)
    check_batch_split(args.fidelity, task, workers)
    return workers


def _train_here(args: argparse.Namespace, spec: ArchSpec, task, device, out: Path, log, init: _Init | None):
    """`nas train` in this process, with a progress bar; writes ``checkpoint.pt``; returns the `TrialResult`."""
    from tqdm import tqdm

    from proxy_tasks.trial import run_trial

    from .model.checkpoint import save_model

    bar = tqdm(
        total=task.fidelity(args.fidelity).steps,
        desc=f"{spec.name or spec.hash}",
        unit="step",
        disable=args.quiet,
        dynamic_ncols=True,
    )

    def progress(step: int, total: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.refresh()

    def report(metrics: dict) -> None:
        log.info("step %d: mIoU %.4f, loss %.4f", metrics["step"], metrics["miou"], metrics["loss"])
        bar.write(f"step {metrics['step']}: mIoU {metrics['miou']:.4f}")

    trained: dict = {}
    result = run_trial(
        spec,
        task,
        args.fidelity,
        args.seed,
        device,
        report=report,
        checkpoint_dir=out,
        progress=progress,
        on_trained=lambda m: trained.update(model=m),
        init=init.apply if init is not None else None,
    )
    bar.close()
    save_model(
        out / "checkpoint.pt",
        trained["model"],
        class_names=result.class_names,
        task=task.name,
        fidelity=args.fidelity,
        source_spec=spec.to_json(indent=None),
        miou=result.miou,
    )
    return result


def _train_on_ray(args: argparse.Namespace, spec: ArchSpec, task, workers, out: Path, init: _Init | None):
    """`nas train --workers N` on Ray Train (see `nas.search.distributed`); writes ``checkpoint.pt`` and
    returns the chief worker's `TrialResult`."""
    import shutil

    from nas.common.atomic import atomic_path
    from nas.search.distributed import train_data_parallel
    from nas.search.trainable import MODEL_NAME
    from proxy_tasks.trial import CHECKPOINT_NAME, TrialResult

    storage = out.resolve() / RAY_TRAIN_DIR
    metadata = {"task": task.name, "fidelity": args.fidelity, "source_spec": spec.to_json(indent=None)}
    training = train_data_parallel(
        spec,
        task,
        args.fidelity,
        args.seed,
        workers,
        str(storage),
        state_file=out.resolve() / CHECKPOINT_NAME,
        log_file=out.resolve() / "train.log",
        weights_metadata=metadata,
        init=None if init is None else {"file": str(Path(init.source).resolve()), "partial": not init.strict},
    )
    with training as trained:
        if isinstance(trained.cause, UserError):  # bad input that only a worker could find
            raise CliError(first_line(trained.cause))
        if trained.error is not None:
            raise TrainingFailed(f"training failed on Ray Train: {trained.error}")
        with atomic_path(out / "checkpoint.pt") as tmp:
            shutil.copy(trained.folder / MODEL_NAME, tmp)
        return TrialResult(**trained.result)  # as the chief returned it, through Ray


class _Init:
    """The weights of ``--init`` checked against the network (``report``) and ``apply``, which loads
    them into the freshly built one."""

    def __init__(self, weights: dict, source: str, strict: bool, report) -> None:
        self.weights, self.source, self.strict, self.report = weights, source, strict, report

    def apply(self, model) -> None:
        from .model.pretrained import load_into

        load_into(model, self.weights, self.source, self.strict)


def _initial_weights(args: argparse.Namespace, task, spec: ArchSpec) -> _Init | None:
    """``--init``'s weights, refused in one line (before anything is written) when they do not fit ``spec``."""
    if args.init is None:
        if args.init_partial:
            raise CliError("--init-partial: give the weights with --init FILE")
        return None
    from proxy_tasks.task import class_count

    from .model.pretrained import check_fits, read_weights

    weights = read_weights(args.init)
    report = check_fits(spec, class_count(task), weights, args.init, strict=not args.init_partial)
    return _Init(weights, args.init, not args.init_partial, report)


def cmd_eval(args: argparse.Namespace) -> None:
    from proxy_tasks.task import build_datasets, load_task
    from proxy_tasks.trial import evaluate

    from .model.checkpoint import load_model

    task = load_task(args.task, args.data_root)  # the cheap checks first
    device = _device(args.device)
    model, meta = load_model(args.checkpoint, device)
    fidelity = task.fidelity(args.fidelity or meta.get("fidelity", "full"))
    _, val = build_datasets(task, fidelity)
    if val.num_classes != model.num_classes:
        raise CliError(
            f"{args.checkpoint}: model has {model.num_classes} classes, task {task.name} has {val.num_classes}"
        )
    summary = evaluate(model, val, task, fidelity, device)
    if fidelity.augmented_evaluation:  # the papers' multi-scale figure, beside the single-scale one
        augmented = evaluate(model, val, task, fidelity, device, augmented=True)
        summary.update({f"{key}_ms": value for key, value in augmented.items()})
    print(json.dumps(summary, indent=2))


def cmd_task_list(args: argparse.Namespace) -> None:
    from proxy_tasks.task import builtin_tasks, load_task

    for name, path in builtin_tasks().items():
        task = load_task(path)
        print(f"{name:<12} {task.dataset.kind:<11} fidelities: {', '.join(task.fidelities)}")


def cmd_task_show(args: argparse.Namespace) -> None:
    import yaml

    from proxy_tasks.task import load_task

    print(yaml.safe_dump(load_task(args.task).applicable_dict(), sort_keys=False), end="")


def cmd_search(args: argparse.Namespace) -> None:
    from nas.search.config import load_search_config
    from nas.search.run_dir import saved_config
    from nas.search.runner import run_search, stderr_log

    if args.out:
        check_output_dir(args.out, "--out")
    if isinstance(args.resume, str):
        check_output_dir(args.resume, "--resume")
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise CliError(f"--resume {args.resume} and --out {args.out} name different run directories")
        args.out = args.resume
    if not args.out:
        raise CliError("--out RUN_DIR is needed (or --resume RUN_DIR)")
    if args.config:
        config = load_search_config(args.config)
    elif args.resume:
        config = saved_config(Path(args.out))
    else:
        raise CliError("a new search needs --config")
    search = run_search(
        _override_search(config, args), args.out, address=args.address, resume=bool(args.resume), log=stderr_log
    )
    _print_summary(Path(args.out))
    if search.exhausted:
        print("stopped early: the strategy kept proposing architectures already evaluated")


def cmd_fidelity(args: argparse.Namespace) -> None:
    from nas.search.fidelity import format_summary, load_fidelity_config, measure, read_summary, summarise_file
    from nas.search.runner import stderr_log

    if args.results:
        if args.config or args.out or args.resume:
            raise CliError("--results scores stored results; it takes no --config, --out or --resume")
        path = Path(args.results)
        summary = read_summary(path) if path.is_dir() else summarise_file(path)
        print(format_summary(summary))
        return
    if args.resume:
        check_output_dir(args.resume, "--resume")
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise CliError(f"--resume {args.resume} and --out {args.out} name different directories")
        args.out = args.resume
    if not args.out:
        raise CliError("--out DIR is needed (or --resume DIR, or --results FILE)")
    check_output_dir(args.out, "--out")
    if not args.config and not args.resume:
        raise CliError("a new measurement needs --config")
    config = load_fidelity_config(args.config) if args.config else None
    summary = measure(config, args.out, address=args.address, log=stderr_log)
    print(format_summary(summary))


def _override_search(config, args: argparse.Namespace):
    from dataclasses import replace

    if args.strategy:
        config = replace(config, strategy=replace(config.strategy, name=args.strategy))
    if args.trials is not None:
        config = replace(config, budget=replace(config.budget, trials=args.trials))
    return config


def _print_summary(run_dir: Path, top: int = 10) -> None:
    print("\n".join(_summary(run_dir, top)))


def _summary(run_dir: Path, top: int = 10) -> list[str]:
    """The lines of a run's summary: counts, leaderboard, best and baselines.

    Everything is read and checked before the caller prints a line, so a damaged file is one error.
    """
    from nas.search.ladder import format_ladder
    from nas.search.leaderboard import format_leaderboard, leaderboard, status_counts, trials_frame

    trials = trials_frame(run_dir)
    baselines = _baselines(run_dir)
    counts = status_counts(trials)
    lines = [f"{run_dir}: {len(trials)} trials (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"]
    if trials.empty:
        return lines
    lines.append(format_leaderboard(trials, top))
    lines += format_ladder(_ladder(run_dir, trials))
    best = leaderboard(trials).iloc[0]
    if best["objective"] != best["objective"]:  # NaN: nothing succeeded
        return lines
    lines.append(
        f"best: {best['name']} ({best['spec_hash'][:10]}) objective {best['objective']:.4f}, "
        f"{best['fidelity']} mIoU {best['miou']:.4f}, {best['flops'] / 1e9:.3f} GFLOPs"
    )
    for ref in baselines:
        try:
            spec_hash = resolve_spec(ref).hash
        except SpecError:
            continue
        rows = leaderboard(trials[(trials["spec_hash"] == spec_hash) & (trials["status"] == "ok")])
        if not rows.empty:
            row = rows.iloc[0]  # at the top rung it reached
            lines.append(
                f"baseline: {ref} ({spec_hash[:10]}) objective {row['objective']:.4f}, "
                f"{row['fidelity']} mIoU {row['miou']:.4f}, {row['flops'] / 1e9:.3f} GFLOPs"
            )
    return lines


def _ladder(run_dir: Path, trials) -> list[dict]:
    """Each rung's agreement with the next, from the table (the ground truth), for a run with a ladder."""
    from nas.search.ladder import ladder_agreement
    from nas.search.run_dir import saved_config

    if not (run_dir / "config.yaml").is_file():
        return []
    config = saved_config(run_dir)
    if not config.ladder:
        return []
    return ladder_agreement(trials.to_dict("records"), config.ladder, config.fidelity)


def _baselines(run_dir: Path) -> list[str]:
    """The baselines the run's config names (none without a config); a damaged config is an error."""
    from nas.search.run_dir import CONFIG_NAME, read_config

    path = run_dir / CONFIG_NAME
    baselines = (read_config(run_dir) or {}).get("baselines") or []
    if not isinstance(baselines, list) or not all(isinstance(b, str) for b in baselines):
        raise CliError(f"{path}: baselines: expected a list of architecture names or spec files")
    return baselines


def cmd_show(args: argparse.Namespace) -> None:
    from nas.search.leaderboard import leaderboard, trials_frame

    run_dir = Path(args.run_dir)
    trials = trials_frame(run_dir)
    if args.json:
        print(trials.to_json(orient="records", date_format="iso"))
        return
    lines = _summary(run_dir, args.top)
    board = leaderboard(trials)
    if not board.empty and board.iloc[0]["objective"] == board.iloc[0]["objective"]:
        try:
            best = ArchSpec.from_json(board.iloc[0]["spec_json"])
        except SpecError as exc:
            raise CliError(f"{run_dir}: trial {board.iloc[0]['trial_id']}: damaged spec ({exc})") from None
        lines += ["best spec:", best.to_json()]
    print("\n".join([*lines, *_promotion_lines(run_dir)]))


def _promotion_lines(run_dir: Path) -> list[str]:
    """The comparison of the last `nas promote` with the baselines, if there was one."""
    from nas.search.promote import format_comparison
    from nas.search.run_dir import SUMMARY_NAME, promoted_dir, read_json

    path = promoted_dir(run_dir) / SUMMARY_NAME
    try:
        return format_comparison(read_json(path).get("comparison") or {})
    except UserError:
        raise  # the reader's own message names the damage
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError):
        raise CliError(f"{path}: damaged promotion summary (an unreadable comparison)") from None


def cmd_promote(args: argparse.Namespace) -> None:
    from nas.search.promote import promote
    from nas.search.runner import stderr_log

    summary = promote(
        args.run_dir,
        top=args.top,
        fidelity=args.fidelity,
        pareto=args.pareto,
        address=args.address,
        seed=args.seed,
        seeds=args.seeds,
        init=args.init,
        init_partial=args.init_partial,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        log=stderr_log,
    )
    print(summary.to_text())


def cmd_export(args: argparse.Namespace) -> None:
    from .model.export import export

    if args.output is not None:  # a folder to write into, or a file whose folder must be one
        output = Path(args.output)
        check_output_dir(output if output.is_dir() else output.parent, "--output")
    size = tuple(args.size) if args.size else None
    print(export(args.path, args.format, args.output, size, args.opset).to_text())


def cmd_report(args: argparse.Namespace) -> None:
    from analysis.report import write_report

    if args.out is not None:
        check_output_dir(args.out, "--out")
    print(write_report(args.run_dir, args.out, top=args.top))


def _add_space_options(p: argparse.ArgumentParser) -> None:
    # The defaults are the search config's; the search space checks the values and their limits (a `SpecError`).
    default = SpaceOptions()
    p.add_argument(
        "--blocks", type=int, default=default.num_blocks, help="scale-permuted blocks after the 2 stem blocks"
    )
    p.add_argument("--min-level", type=int, default=default.min_level)
    p.add_argument("--max-level", type=int, default=default.max_level)
    p.add_argument("--dilations", type=int, nargs="+", default=list(default.dilations))
    p.add_argument("--head", choices=["deeplabv3", "deeplabv3plus"], default=default.head)
    p.add_argument("--output-levels", type=int, nargs="+", help="endpoint levels (default: 3..max level)")
    p.add_argument("--head-level", type=int, default=default.head_level, help="ASPP level: 4 = output stride 16, 3 = 8")


def _add_init_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--init",
        metavar="FILE",
        help="initial weights: a torchvision ImageNet ResNet-50/101 (the backbone of a DeepLab spec), a torchvision "
        "deeplabv3_resnet50/101, or a nas checkpoint; matched by name, every tensor must fit",
    )
    p.add_argument(
        "--init-partial",
        action="store_true",
        help="load the --init tensors that fit and report the others, one line each",
    )


def _add_worker_options(p: argparse.ArgumentParser, cpus_default: Any, gpus_default: str) -> None:
    p.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        help="data-parallel workers of each training, on Ray Train (default 1: one process; the fidelity's "
        "batch_size is global: workers x per-worker batch x accumulate)",
    )
    p.add_argument(
        "--cpus-per-worker",
        type=positive_int,
        default=cpus_default if isinstance(cpus_default, int) else None,
        help=f"CPUs (compute threads) of each worker (default: {cpus_default})",
    )
    p.add_argument("--gpus-per-worker", type=gpus_per_worker, help=f"GPUs of each worker (default: {gpus_default})")


def _add_export_parser(sub: Any) -> None:
    from .model.export import DEFAULT_OPSET, FORMATS, ONNX_OPSETS, OUTPUT_NAMES

    p = sub.add_parser("export", help="export a promoted model (or a checkpoint) to TorchScript or ONNX")
    p.add_argument("path", help="RUN_DIR/promoted/<hash>, a `nas train` output folder, or a .pt checkpoint")
    p.add_argument("--format", choices=FORMATS, default="torchscript")
    p.add_argument("--output", help=f"file to write (default: {' or '.join(OUTPUT_NAMES.values())} beside the weights)")
    size_help = "input size to trace at (default: the input_size in metrics.json, else 512 512)"
    p.add_argument("--size", type=image_side, nargs=2, metavar=("H", "W"), help=size_help)
    first, last = ONNX_OPSETS[0], ONNX_OPSETS[-1]
    p.add_argument("--opset", type=int_in(first, last), default=DEFAULT_OPSET, help=f"ONNX opset ({first}..{last})")
    p.set_defaults(func=cmd_export)


def _add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a run (tables and PNG figures)")
    p.add_argument("run_dir", help="a run directory of `nas search` (also while it runs)")
    p.add_argument("--out", help="report folder (default: RUN_DIR/report)")
    p.add_argument("--top", type=positive_int, default=3, help="models in the topology and per-class IoU figures")
    p.set_defaults(func=cmd_report)


def make_parser() -> argparse.ArgumentParser:
    parser = NasArgumentParser(prog="nas", description="Architecture search for semantic segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)
    arch = sub.add_parser("arch", help="inspect, sample, mutate and draw architectures").add_subparsers(
        dest="arch_command", required=True
    )

    p = arch.add_parser("list", help="published architectures")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = arch.add_parser("info", help="parameters, FLOPs, hash (and latency) of an architecture")
    p.add_argument("spec", help="published name, JSON file, or - for standard input")
    p.add_argument("--size", type=image_side, nargs=2, default=[512, 512], metavar=("H", "W"))
    p.add_argument("--classes", type=int_in(1, MAX_CLASSES), default=21)
    p.add_argument("--json", action="store_true")
    p.add_argument("--latency", action="store_true", help="also measure the median forward time")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_info)

    p = arch.add_parser("sample", help="print a random spec of the search space as JSON")
    p.add_argument("--seed", type=seed_int, required=True)
    _add_space_options(p)
    p.set_defaults(func=cmd_sample)

    p = arch.add_parser("mutate", help="print a mutated spec as JSON (the mutations go to stderr)")
    p.add_argument("spec", help="published name, JSON file, or - for standard input")
    p.add_argument("--seed", type=seed_int, required=True)
    p.add_argument("--steps", type=int_in(1, MAX_MUTATION_STEPS), default=1)
    _add_space_options(p)
    p.set_defaults(func=cmd_mutate)

    p = arch.add_parser("draw", help="draw the topology to an image file")
    p.add_argument("spec", help="published name, JSON file, or - for standard input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--dpi", type=int_in(1, MAX_DPI), default=130)
    p.set_defaults(func=cmd_draw)

    p = sub.add_parser("train", help="train one architecture on a task")
    p.add_argument("--arch", required=True, help="published name or spec JSON file")
    p.add_argument("--task", default="synthetic", help="built-in task name or task YAML/JSON file")
    p.add_argument("--fidelity", default="proxy", help="smoke, proxy or full (or a preset of the task)")
    p.add_argument("--out", help="output folder (default: runs/train-<arch>-<task>-<fidelity>)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--data-root", help="dataset folder for file-based tasks")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    _add_init_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=available_cores(),
        help="torch compute threads (default: the cores this process may run on, %(default)s here; "
        "give fewer when other work shares the machine)",
    )
    _add_worker_options(p, cpus_default=1, gpus_default="1 with a CUDA --device, else 0")
    p.add_argument(
        "--address",
        help="train on this Ray cluster (default: $RAY_ADDRESS, else a private local Ray; implies Ray Train)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a task's validation set")
    p.add_argument("checkpoint")
    p.add_argument("--task", default="synthetic")
    p.add_argument("--fidelity", help="resolution preset (default: the one it was trained at)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("search", help="run (or resume) an architecture search on Ray Tune")
    p.add_argument("--config", help="search config YAML (see launch/configs/)")
    p.add_argument("--out", help="run directory (results table, state; shared storage on a cluster)")
    p.add_argument("--strategy", type=strategy_name, help="override the config's strategy")
    p.add_argument("--trials", type=positive_int, help="override the budget (number of candidates trained)")
    p.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else a private local Ray)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_DIR",
        help="continue the search in --out (or RUN_DIR) after a crash or a stop",
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "fidelity", help="train architectures at several fidelities and measure how far each ranks like the reference"
    )
    p.add_argument("--config", help="fidelity measurement YAML (see launch/configs/ground-truth-cpu.yaml)")
    p.add_argument("--out", help="its directory (config, trials.parquet, summary.json)")
    p.add_argument("--resume", metavar="DIR", help="train what is missing in DIR and summarise")
    p.add_argument("--results", metavar="FILE_OR_DIR", help="only summarise: a measurement's DIR or a results JSON")
    p.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else a private local Ray)")
    p.set_defaults(func=cmd_fidelity)

    p = sub.add_parser("show", help="print a run's leaderboard and best spec (also while it runs)")
    p.add_argument("run_dir")
    p.add_argument("--top", type=positive_int, default=10)
    p.add_argument("--json", action="store_true", help="every trial as JSON records")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("promote", help="retrain a run's best candidates and its baselines over seeds, and compare")
    p.add_argument("run_dir")
    p.add_argument("--top", type=positive_int, default=3, help="how many candidates (by objective)")
    p.add_argument("--pareto", action="store_true", help="take the Pareto front (mIoU vs cost) instead")
    p.add_argument("--fidelity", default="full")
    p.add_argument("--seed", type=seed_int, default=0, help="the first seed")
    p.add_argument("--seeds", type=promote_seeds, default=2, help="how many seeds (--seed, --seed + 1, ...)")
    _add_init_options(p)
    p.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else a private local Ray)")
    _add_worker_options(
        p, cpus_default="the run's resources.cpus_per_trial", gpus_default="1 if resources.gpus_per_trial > 0, else 0"
    )
    p.set_defaults(func=cmd_promote)

    _add_export_parser(sub)
    _add_report_parser(sub)

    task = sub.add_parser("task", help="built-in tasks").add_subparsers(dest="task_command", required=True)
    p = task.add_parser("list", help="list the built-in tasks")
    p.set_defaults(func=cmd_task_list)
    p = task.add_parser("show", help="print a task's config as YAML (the settings its dataset uses)")
    p.add_argument("task")
    p.set_defaults(func=cmd_task_show)
    return parser


def _own_message(exc: BaseException) -> str:
    """The error's own message, also when a DataLoader worker wrapped it in a traceback."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nas`` command ``argv``; returns the exit status (2 for bad input) instead of exiting."""
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as exc:  # an argparse error (already printed as one line) or --help
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if getattr(args, "device", None) is not None:
            args.device = check_device(args.device)
        args.func(args)
    except UserError as exc:
        return _fail(_own_message(exc))
    except BrokenPipeError:
        return 0
    except (OSError, UnicodeDecodeError, MemoryError) as exc:
        # The environment, not the program: a path the user gave that cannot be read or written, a
        # text file that is binary, a model too large for this machine's memory.
        return _fail(_environment_error(exc))
    return 0


def _fail(message: str) -> int:
    print(f"nas: error: {one_line(message)}", file=sys.stderr)  # a path or value may hold a line break
    return 2


def _environment_error(exc: OSError | UnicodeDecodeError | MemoryError) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory (the model or its input is too large for this machine)"
    if isinstance(exc, UnicodeDecodeError):
        return f"not a text file ({exc})"
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


if __name__ == "__main__":
    sys.exit(main())
