"""A corpus of bad input, run through the command line in-process: every case is refused with exactly one
line, ``nas: error: ...``, exit status 2, no traceback, nothing written or changed, within a time bound.

Four kinds, generated from valid inputs by breaking them one way at a time: architecture specs, search
configs and task configs (each given to the commands that read it), command-line arguments, and damaged
run directories (a search run of three finished trials, broken file by file, then resumed, shown,
reported and promoted). The case ids name what was broken.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import io
import json
import pickle
import shlex
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from nas.cli import main
from nas.search import Outcome, evaluate_in_process
from nas.search.config import load_search_config
from nas.search.run_dir import write_config
from nas.search.runner import open_search
from proxy_tasks.task import builtin_tasks
from search_spaces import get_spec

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = ROOT / "launch" / "configs" / "smoke.yaml"
TIME_BOUND_S = 30.0
DELETE = object()  # a mutation that removes the key
MARKER = "pwned"  # a file that a crafted pickle would create if anything unpickled it


@dataclass(frozen=True)
class Case:
    kind: str  # spec | search-config | task-config | cli | run-dir
    label: str
    argv: Callable[[Path], list[str]]  # given the case's folder, after `prepare` ran
    prepare: Callable[[Path], None] = lambda folder: None
    stdin: str | None = None  # a file of the case's folder to read standard input from


def mutated(base: Any, path: tuple, value: Any) -> Any:
    data = copy.deepcopy(base)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def writer(name: str, content: str | bytes) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return write


# ------------------------------------------------------------------------------------------------ specs
SPEC = get_spec("spinenet-49").to_dict()
SPEC_TEXT = json.dumps(SPEC, indent=2)
SPEC_VALUES: list[tuple[str, Any]] = [
    *((f"stem_channels={v!r}", (("stem_channels",), v)) for v in (0, -64, 10**7, "64", 64.5, None, True)),
    *((f"filter_size_scale={v!r}", (("scaling", "filter_size_scale"), v)) for v in (0, -1.0, 1e6, "1", None)),
    *((f"block_repeats={v!r}", (("scaling", "block_repeats"), v)) for v in (0, -1, 10**6, 2.5, "2")),
    *((f"resample_alpha={v!r}", (("scaling", "resample_alpha"), v)) for v in (0, -0.5, 1e6, [0.5])),
    *((f"endpoint_channels={v!r}", (("scaling", "endpoint_channels"), v)) for v in (0, -256, 10**8, "256")),
    *((f"head.kind={v!r}", (("head", "kind"), v)) for v in ("bogus", "", 3)),
    *((f"head.level={v!r}", (("head", "level"), v)) for v in (0, 1, 99, -4, "4")),
    *((f"aspp_rates={v!r}", (("head", "aspp_rates"), v)) for v in ([], [0], [-6, 12, 18], [10**9], "6,12")),
    *((f"aspp_channels={v!r}", (("head", "aspp_channels"), v)) for v in (0, -1, 10**8)),
    *((f"aspp_dropout={v!r}", (("head", "aspp_dropout"), v)) for v in (-0.1, 1.5, "x")),
    *((f"decoder_level={v!r}", (("head", "decoder_level"), v)) for v in (0, 99)),
    *((f"block.level={v!r}", (("blocks", 5, "level"), v)) for v in (0, 1, 99, -3, "3", 3.0)),
    *((f"block.type={v!r}", (("blocks", 5, "type"), v)) for v in ("bogus", None, 1)),
    *((f"block.width={v!r}", (("blocks", 5, "width"), v)) for v in (0, -64, 10**8, "64")),
    *((f"block.parents={v!r}", (("blocks", 5, "parents"), v)) for v in ([99], [], ["a"], [-5], [5], None)),
    *((f"block.connection={v!r}", (("blocks", 5, "connection"), v)) for v in ("bogus", 0)),
    *((f"block.dilation={v!r}", (("blocks", 5, "dilation"), v)) for v in (0, -1, 10**9, 2.5, "2")),
    *((f"block.output={v!r}", (("blocks", 5, "output"), v)) for v in ("yes", 2)),
    ("block.unknown-field", (("blocks", 5, "colour"), "red")),
    ("block.no-level", (("blocks", 5, "level"), DELETE)),
    ("blocks=[]", (("blocks",), [])),
    ("blocks=object", (("blocks",), {"0": {}})),
    ("no-blocks", (("blocks",), DELETE)),
    ("format=99", (("format",), 99)),
    ("unknown-field", (("colour",), "red")),
    ("name=int", (("name",), 5)),
    ("name=10MB", (("name",), "n" * 10_000_000)),
    ("endpoint_levels=[3]", (("endpoint_levels",), [3])),
    ("endpoint_levels=[7,3]", (("endpoint_levels",), [7, 3])),
]
SPEC_TEXTS: list[tuple[str, str | bytes]] = [
    ("empty", ""),
    ("whitespace", "   \n"),
    ("not-json", "spinenet-49 but not json"),
    ("truncated-1/3", SPEC_TEXT[: len(SPEC_TEXT) // 3]),
    ("truncated-2/3", SPEC_TEXT[: 2 * len(SPEC_TEXT) // 3]),
    ("list", "[1, 2, 3]"),
    ("number", "42"),
    ("null", "null"),
    ("string", '"spinenet-49"'),
    ("nested-10000-lists", nested(10_000)),
    ("nested-100000-objects", '{"blocks": ' * 100_000 + "1" + "}" * 100_000),
    ("binary", bytes(range(256)) * 8),
    ("utf16", SPEC_TEXT.encode("utf-16")),
    ("nan", SPEC_TEXT.replace('"stem_channels": 64', '"stem_channels": NaN')),
]
SPEC_COMMANDS: list[Callable[[Path], list[str]]] = [
    lambda d: ["arch", "info", str(d / "spec.json")],
    lambda d: ["arch", "draw", str(d / "spec.json"), "-o", str(d / "out.png")],
    lambda d: ["train", "--arch", str(d / "spec.json"), "--fidelity", "smoke", "--out", str(d / "train")],
    lambda d: ["arch", "mutate", str(d / "spec.json"), "--seed", "0"],
    lambda d: ["arch", "info", "-"],  # the spec on standard input
]


def spec_cases() -> list[Case]:
    texts = [(f"spec[{label}]", json.dumps(mutated(SPEC, *change))) for label, change in SPEC_VALUES]
    texts += [(f"spec-text[{label}]", text) for label, text in SPEC_TEXTS]
    cases = []
    for i, (label, text) in enumerate(texts):
        command = SPEC_COMMANDS[i % len(SPEC_COMMANDS)]
        argv = command(Path("D"))
        stdin = "spec.json" if argv[-1] == "-" else None
        cases.append(Case("spec", f"{label}:{' '.join(argv[:2])}", command, writer("spec.json", text), stdin))
    return cases


# ---------------------------------------------------------------------------------------- search configs
SEARCH = yaml.safe_load(SMOKE_CONFIG.read_text())
SEARCH_VALUES: list[tuple[str, Any]] = [
    ("unknown-key", (("colour",), "red")),
    ("name=''", (("name",), "")),
    ("name=1MB", (("name",), "n" * 1_000_000)),
    ("name=list", (("name",), ["a"])),
    ("task=missing-file", (("task",), "no-such-task.yaml")),
    ("task=unknown-name", (("task",), "bogus")),
    ("fidelity=unknown", (("fidelity",), "bogus")),
    ("seed=str", (("seed",), "abc")),
    ("seed=float", (("seed",), 1.5)),
    ("baselines=unknown", (("baselines",), ["bogus-net"])),
    ("baselines=missing-file", (("baselines",), ["no-such-spec.json"])),
    ("baselines=str", (("baselines",), 5)),
    *((f"strategy.name={v!r}", (("strategy", "name"), v)) for v in ("bogus", None, 3)),
    *((f"strategy.population={v!r}", (("strategy", "population"), v)) for v in (1, -4, "4")),
    *((f"strategy.sample_size={v!r}", (("strategy", "sample_size"), v)) for v in (0, 99)),
    ("strategy.unknown", (("strategy", "colour"), "red")),
    ("strategy=list", (("strategy",), ["evolution"])),
    *((f"objective.kind={v!r}", (("objective", "kind"), v)) for v in ("bogus", "constrained")),
    ("objective.weight>0", (("objective",), {"kind": "miou", "weight": 0.5})),
    ("objective.cost=bogus", (("objective",), {"kind": "pareto", "cost": "bogus"})),
    *((f"budget.trials={v!r}", (("budget", "trials"), v)) for v in (0, -1, "6", 2.5, None)),
    *((f"budget.time_limit_s={v!r}", (("budget", "time_limit_s"), v)) for v in (-1, 0)),
    *((f"budget.max_duplicates={v!r}", (("budget", "max_duplicates"), v)) for v in (0, -1)),
    *((f"resources.cpus_per_trial={v!r}", (("resources", "cpus_per_trial"), v)) for v in (0, -1, "one")),
    *((f"resources.gpus_per_trial={v!r}", (("resources", "gpus_per_trial"), v)) for v in (-1, "x")),
    *((f"resources.max_concurrent={v!r}", (("resources", "max_concurrent"), v)) for v in (0, -2)),
    *((f"retries={v!r}", (("retries",), v)) for v in (-1, "2", 1.5)),
    ("scheduler.asha.grace>steps", (("scheduler",), {"asha": True, "grace_steps": 1000})),
    ("scheduler.asha.factor<0", (("scheduler",), {"asha": True, "grace_steps": 1, "reduction_factor": -2})),
    ("scheduler.asha.factor=1", (("scheduler",), {"asha": True, "grace_steps": 1, "reduction_factor": 1})),
    ("scheduler.grace=0", (("scheduler",), {"asha": True, "grace_steps": 0})),
    ("storage.optuna=bogus-scheme", (("storage",), {"optuna": "bogus://host/db"})),
    ("storage.optuna=dialect-missing", (("storage",), {"optuna": "oracle+nosuchdriver://u@h/db"})),
    ("storage.unknown", (("storage",), {"colour": "red"})),
    *((f"space.num_blocks={v!r}", (("space",), {"num_blocks": v})) for v in (0, -1, 10**6)),
    *((f"space.dilations={v!r}", (("space",), {"dilations": v})) for v in ([], [0], [10**9], [-2])),
    ("space.min>max", (("space",), {"min_level": 6, "max_level": 3})),
    ("space.head=bogus", (("space",), {"head": "bogus"})),
    ("space.head_level=99", (("space",), {"head_level": 99})),
    ("space.block_types=bogus", (("space",), {"block_types": ["bogus"]})),
    ("space.output_levels=[]", (("space",), {"output_levels": []})),
]
SEARCH_TEXTS: list[tuple[str, str | bytes]] = [
    ("empty", ""),
    ("list", "- a\n- b\n"),
    ("scalar", "just words\n"),
    ("yaml-syntax", "name: [unclosed\n"),
    ("tabs", "name:\tsmoke\n\tbudget: 3\n"),
    ("binary", bytes(range(256)) * 8),
    ("nested-5000", "a: " + "[" * 5000 + "]" * 5000 + "\n"),
    ("python-object-tag", "name: !!python/object/apply:os.system ['touch pwned']\n"),
    (
        "alias-bomb",
        "a: &a [1, 1, 1, 1]\n" + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefg", "bcdefgh")),
    ),
]


def search_cases() -> list[Case]:
    texts = [(f"search[{label}]", yaml.safe_dump(mutated(SEARCH, *change))) for label, change in SEARCH_VALUES]
    texts += [(f"search-text[{label}]", text) for label, text in SEARCH_TEXTS]

    def search(d: Path) -> list[str]:
        return ["search", "--config", str(d / "c.yaml"), "--out", str(d / "run")]

    return [Case("search-config", label, search, writer("c.yaml", text)) for label, text in texts]


# ----------------------------------------------------------------------------------------- task configs
TASK = yaml.safe_load(builtin_tasks()["synthetic"].read_text())
SMOKE = ("fidelities", "smoke")
TASK_VALUES: list[tuple[str, Any]] = [
    ("unknown-key", (("colour",), "red")),
    ("dataset=list", (("dataset",), ["synthetic"])),
    ("no-fidelities", (("fidelities",), DELETE)),
    ("fidelities=[]", (("fidelities",), [])),
    ("dataset.kind=bogus", (("dataset", "kind"), "bogus")),
    ("folder-without-root", (("dataset",), {"kind": "folder"})),
    ("folder-missing-root", (("dataset",), {"kind": "folder", "root": "/no/such/folder"})),
    *((f"synthetic.image_size={v!r}", (("dataset", "synthetic", "image_size"), v)) for v in (0, -8, "256")),
    *((f"synthetic.num_train={v!r}", (("dataset", "synthetic", "num_train"), v)) for v in (0, -1)),
    ("synthetic.min>max_objects", (("dataset", "synthetic", "min_objects"), 9)),
    *((f"smoke.resolution={v!r}", ((*SMOKE, "resolution"), v)) for v in (0, -0.5, "half")),
    *((f"smoke.crop={v!r}", ((*SMOKE, "crop"), v)) for v in (0, -64)),
    *((f"smoke.width={v!r}", ((*SMOKE, "width"), v)) for v in (0, -1)),
    *((f"smoke.steps={v!r}", ((*SMOKE, "steps"), v)) for v in (0, -4, 2.5)),
    *((f"smoke.batch_size={v!r}", ((*SMOKE, "batch_size"), v)) for v in (0, -4)),
    *((f"smoke.lr={v!r}", ((*SMOKE, "lr"), v)) for v in (0, -0.1)),
    ("smoke.eval_every<0", ((*SMOKE, "eval_every"), -1)),
    ("smoke.unknown", ((*SMOKE, "colour"), "red")),
    ("optimizer.name=bogus", (("optimizer", "name"), "bogus")),
    *((f"optimizer.lr={v!r}", (("optimizer", "lr"), v)) for v in (0, -1, "x")),
    ("optimizer.weight_decay<0", (("optimizer", "weight_decay"), -1)),
    ("optimizer.warmup_steps<0", (("optimizer", "warmup_steps"), -1)),
    ("augment.scale_min>max", (("augment",), {"scale_min": 2.0, "scale_max": 1.0, "hflip": True})),
    ("precision=bogus", (("precision",), "fp8")),
    ("name=list", (("name",), ["a"])),
]
TASK_TEXTS: list[tuple[str, str | bytes]] = [
    ("empty", ""),
    ("list", "- a\n"),
    ("yaml-syntax", "name: {unclosed\n"),
    ("binary", bytes(range(256)) * 8),
    ("latin1", "name: caf\xe9\n".encode("latin-1")),
]


def task_cases() -> list[Case]:
    def train(d: Path) -> list[str]:
        task = str(d / "t.yaml")
        return ["train", "--arch", "deeplabv3-resnet50", "--task", task, "--fidelity", "smoke", "--out", str(d / "t")]

    def show(d: Path) -> list[str]:
        return ["task", "show", str(d / "t.yaml")]

    values = [(f"task[{label}]", yaml.safe_dump(mutated(TASK, *change))) for label, change in TASK_VALUES]
    texts = [(f"task-text[{label}]", text) for label, text in TASK_TEXTS]
    # A bad value may show only when the task is used; a broken file is broken for every command.
    cases = [Case("task-config", f"{label}:train", train, writer("t.yaml", text)) for label, text in values + texts]
    cases += [Case("task-config", f"{label}:show", show, writer("t.yaml", text)) for label, text in texts]
    return cases


# ------------------------------------------------------------------------------------ command-line args
# (label, command line with {d} for the case's folder and {smoke} for the smoke config, what the folder holds)
CLI: list[tuple[str, ...]] = [
    ("no-command", ""),
    ("unknown-command", "bogus"),
    ("unknown-option", "arch list --bogus"),
    ("arch-no-subcommand", "arch"),
    ("info-no-spec", "arch info"),
    ("info-unknown-name", "arch info bogus-net"),
    ("info-missing-file", "arch info {d}/none.json"),
    ("info-directory", "arch info {d}"),
    ("info-size-0", "arch info deeplabv3-resnet50 --size 0 0"),
    ("info-size-negative", "arch info deeplabv3-resnet50 --size -8 64"),
    ("info-size-one-value", "arch info deeplabv3-resnet50 --size 64"),
    ("info-size-huge", "arch info deeplabv3-resnet50 --size 10000000 10000000"),
    ("info-classes-0", "arch info deeplabv3-resnet50 --classes 0"),
    ("info-classes-str", "arch info deeplabv3-resnet50 --classes many"),
    ("info-device-bogus", "arch info deeplabv3-resnet50 --latency --device bogus"),
    ("info-device-cuda7", "arch info deeplabv3-resnet50 --latency --device cuda:7"),
    ("info-device-empty", "arch info deeplabv3-resnet50 --latency --device ''"),
    ("sample-no-seed", "arch sample"),
    ("sample-seed-str", "arch sample --seed abc"),
    ("sample-blocks-0", "arch sample --seed 0 --blocks 0"),
    ("sample-blocks-huge", "arch sample --seed 0 --blocks 1000000"),
    ("sample-levels-swapped", "arch sample --seed 0 --min-level 7 --max-level 2"),
    ("sample-dilation-0", "arch sample --seed 0 --dilations 0"),
    ("sample-dilation-huge", "arch sample --seed 0 --dilations 1000000000"),
    ("sample-head-bogus", "arch sample --seed 0 --head bogus"),
    ("sample-head-level-9", "arch sample --seed 0 --head-level 9"),
    ("mutate-steps-negative", "arch mutate spinenet-49 --seed 0 --steps -1"),
    ("mutate-steps-0", "arch mutate spinenet-49 --seed 0 --steps 0"),
    ("mutate-no-seed", "arch mutate spinenet-49"),
    ("draw-no-output", "arch draw spinenet-49"),
    ("draw-dpi-0", "arch draw spinenet-49 -o {d}/x.png --dpi 0"),
    ("draw-missing-folder", "arch draw spinenet-49 -o {d}/no/such/x.png"),
    ("draw-bad-extension", "arch draw spinenet-49 -o {d}/x.bogus"),
    ("train-no-arch", "train"),
    ("train-unknown-arch", "train --arch bogus-net --out {d}/t"),
    ("train-unknown-task", "train --arch spinenet-49 --task bogus --out {d}/t"),
    ("train-unknown-fidelity", "train --arch spinenet-49 --fidelity bogus --out {d}/t"),
    ("train-seed-str", "train --arch spinenet-49 --seed abc"),
    ("train-device-bogus", "train --arch spinenet-49 --fidelity smoke --device bogus --out {d}/t"),
    ("train-device-cuda", "train --arch spinenet-49 --fidelity smoke --device cuda --out {d}/t"),
    ("train-out-is-a-file", "train --arch spinenet-49 --fidelity smoke --out {d}/f", "file:f"),
    ("train-folder-task-no-root", "train --arch spinenet-49 --task folder --fidelity smoke --out {d}/t"),
    ("train-data-root-missing", "train --arch spinenet-49 --task folder --data-root {d}/none --out {d}/t"),
    ("eval-missing", "eval {d}/none.pt"),
    ("eval-garbage", "eval {d}/g.pt", "garbage:g.pt"),
    ("eval-empty", "eval {d}/g.pt", "empty:g.pt"),
    ("eval-directory", "eval {d}"),
    ("eval-device-bogus", "eval {d}/g.pt --device bogus", "garbage:g.pt"),
    ("search-no-out", "search --config {smoke}"),
    ("search-no-config", "search --out {d}/run"),
    ("search-missing-config", "search --config {d}/none.yaml --out {d}/run"),
    ("search-trials-0", "search --config {smoke} --out {d}/run --trials 0"),
    ("search-trials-negative", "search --config {smoke} --out {d}/run --trials -3"),
    ("search-trials-str", "search --config {smoke} --out {d}/run --trials x"),
    ("search-strategy-bogus", "search --config {smoke} --out {d}/run --strategy bogus"),
    ("search-out-is-a-file", "search --config {smoke} --out {d}/f", "file:f"),
    ("search-resume-missing", "search --resume {d}/none"),
    ("search-resume-empty-dir", "search --resume {d}/empty", "folder:empty"),
    ("search-resume-and-other-out", "search --resume {d}/a --out {d}/b"),
    ("search-address-nobody", "search --config {smoke} --out {d}/run --address 127.0.0.1:9"),
    ("search-address-garbage", "search --config {smoke} --out {d}/run --address 'not an address:x'"),
    ("show-missing", "show {d}/none"),
    ("show-empty-dir", "show {d}/empty", "folder:empty"),
    ("show-a-file", "show {d}/f", "file:f"),
    ("show-top-0", "show {d}/none --top 0"),
    ("show-top-str", "show {d} --top x"),
    ("promote-missing", "promote {d}/none"),
    ("promote-top-0", "promote {d}/none --top 0"),
    ("promote-top-negative", "promote {d}/none --top -2"),
    ("report-missing", "report {d}/none"),
    ("report-top-0", "report {d}/none --top 0"),
    ("export-missing", "export {d}/none"),
    ("export-format-bogus", "export {d}/none --format bogus"),
    ("export-garbage", "export {d}/g.pt", "garbage:g.pt"),
    ("export-size-0", "export {d}/g.pt --size 0 0", "garbage:g.pt"),
    ("export-opset-str", "export {d}/g.pt --opset x", "garbage:g.pt"),
    ("task-no-subcommand", "task"),
    ("task-show-unknown", "task show bogus"),
    ("task-show-missing-file", "task show {d}/none.yaml"),
]
FOLDER_CONTENT: dict[str, Callable[[Path, str], None]] = {
    "file": lambda d, name: (d / name).write_text("a file, not a folder\n"),
    "folder": lambda d, name: (d / name).mkdir(),
    "garbage": lambda d, name: (d / name).write_bytes(b"\x80\x02garbage" * 10),
    "empty": lambda d, name: (d / name).write_bytes(b""),
}


def cli_cases() -> list[Case]:
    def case(label: str, line: str, content: str = "") -> Case:
        def argv(folder: Path) -> list[str]:
            return shlex.split(line.format(d=folder, smoke=SMOKE_CONFIG))

        def prepare(folder: Path) -> None:
            if content:
                kind, name = content.split(":")
                FOLDER_CONTENT[kind](folder, name)

        return Case("cli", label, argv, prepare)

    return [case(*entry) for entry in CLI]


# -------------------------------------------------------------------------------------- damaged run dirs
def fake_outcome(candidate) -> Outcome:
    digest = int(hashlib.sha256(candidate.spec.hash.encode()).hexdigest()[:8], 16)
    return Outcome({"miou": 0.2 + digest % 1000 / 2000, "flops": 1e9, "params": 1_000_000, "steps": 4})


def make_run(folder: Path, strategy: str) -> Path:
    """A search of the smoke config (budget 6) stopped after 3 trials, trained by a fake evaluation."""
    config = load_search_config(SMOKE_CONFIG)
    if strategy != "evolution":
        config = dataclasses.replace(config, strategy=dataclasses.replace(config.strategy, name=strategy))
    run_dir = folder / f"run-{strategy}"
    run_dir.mkdir()
    write_config(config, run_dir)
    search = open_search(config, run_dir)
    search.budget = 3
    evaluate_in_process(search, fake_outcome)
    return run_dir


def damage_table(change: Callable[[Any], Any]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        table = pq.read_table(run / "trials.parquet")
        pq.write_table(change(table), run / "trials.parquet")

    return damage


def damage_state(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / "search_state.json"
        state = json.loads(path.read_text())
        result = change(state)
        path.write_text(result if isinstance(result, str) else json.dumps(state if result is None else result))

    return damage


def replace_file(name: str, content: str | bytes | None) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / name
        path.unlink()
        if content is not None:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return damage


class Crafted:
    """Unpickling this creates the marker file: proof that something ran code from a run directory."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def crafted_sampler(run: Path) -> None:
    path = run / "search_state.json"
    state = json.loads(path.read_text())
    state["controller"]["sampler"] = base64.b64encode(pickle.dumps(Crafted(run.parent / MARKER))).decode()
    path.write_text(json.dumps(state))


def set_key(key: str, value: Any) -> Callable[[dict], None]:
    def change(state: dict) -> None:
        state[key] = value

    return change


TABLE_DAMAGE: list[tuple[str, Callable[[Path], None]]] = [
    ("table-deleted", replace_file("trials.parquet", None)),
    ("table-garbage", replace_file("trials.parquet", b"PAR1 not really" * 50)),
    ("table-empty-file", replace_file("trials.parquet", b"")),
    ("table-truncated", lambda run: (run / "trials.parquet").write_bytes((run / "trials.parquet").read_bytes()[:300])),
    ("table-is-a-folder", lambda run: ((run / "trials.parquet").unlink(), (run / "trials.parquet").mkdir())),
    ("table-missing-column", damage_table(lambda t: t.drop_columns(["miou"]))),
    ("table-missing-spec", damage_table(lambda t: t.drop_columns(["spec_json"]))),
]
RESUME_ONLY_DAMAGE: list[tuple[str, Callable[[Path], None]]] = [
    ("table-lost-rows", damage_table(lambda t: t.slice(0, 1))),
    ("table-no-rows", damage_table(lambda t: t.slice(0, 0))),
    ("table-duplicate-trial", damage_table(lambda t: pa.concat_tables([t, t.slice(0, 1)]))),
    ("table-unknown-trial", damage_table(lambda t: t.set_column(0, "trial_id", pa.compute.add(t["trial_id"], 50)))),
    ("state-garbage", replace_file("search_state.json", "{not json")),
    ("state-binary", replace_file("search_state.json", bytes(range(256)))),
    ("state-empty", replace_file("search_state.json", "")),
    ("state-list", replace_file("search_state.json", "[]")),
    ("state-nested", replace_file("search_state.json", nested(50_000))),
    ("state-is-a-folder", lambda run: ((run / "search_state.json").unlink(), (run / "search_state.json").mkdir())),
    ("state-version-99", damage_state(set_key("version", 99))),
    ("state-strategy-other", damage_state(set_key("strategy", "random"))),
    ("state-next-id-str", damage_state(set_key("next_id", "three"))),
    ("state-next-id-negative", damage_state(set_key("next_id", -5))),
    ("state-attempts-list", damage_state(set_key("attempts", [1, 2]))),
    (
        "state-pending-bad-spec",
        damage_state(set_key("pending", [{"id": 3, "spec": "{", "origin": "random", "parents": [], "mutation": None}])),
    ),
    ("state-pending-not-list", damage_state(set_key("pending", 7))),
    ("state-controller-missing", damage_state(lambda s: s.pop("controller") and None)),
    ("state-controller-garbage", damage_state(set_key("controller", {"population": "x", "rng": 5}))),
    ("state-no-version", damage_state(lambda s: s.pop("version") and None)),
    ("config-deleted", replace_file("config.yaml", None)),
    ("config-garbage", replace_file("config.yaml", "name: [unclosed\n")),
    ("config-binary", replace_file("config.yaml", bytes(range(256)) * 4)),
    ("config-list", replace_file("config.yaml", "- a\n")),
    (
        "config-unknown-key",
        lambda run: (run / "config.yaml").write_text((run / "config.yaml").read_text() + "colour: red\n"),
    ),
    ("config-python-tag", replace_file("config.yaml", "name: !!python/object/apply:os.system ['touch pwned']\n")),
    ("config-nested", replace_file("config.yaml", "a: " + nested(5000))),
]
VIEW_DAMAGE = [
    *TABLE_DAMAGE,
    ("config-garbage", replace_file("config.yaml", "name: [unclosed\n")),
    ("config-binary", replace_file("config.yaml", bytes(range(256)) * 4)),
    ("config-list", replace_file("config.yaml", "- a\n")),
    ("config-nested", replace_file("config.yaml", "a: " + nested(5000))),
]


def promoted_summary(content: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        (run / "promoted").mkdir(exist_ok=True)
        (run / "promoted" / "summary.json").write_text(content)

    return damage


SUMMARY_DAMAGE = [  # read by the views only: `nas promote` writes the summary, never reads it
    ("summary-nested", promoted_summary('{"comparison": ' + nested(5000) + "}")),
    ("summary-garbage", promoted_summary("{not json")),
    ("summary-list", promoted_summary("[]")),
]


def run_dir_cases() -> list[Case]:
    def case(label: str, strategy: str, damage: Callable[[Path], None], command: list[str]) -> Case:
        """``command`` with RUN for the damaged copy of the strategy's victim run."""

        def prepare(folder: Path) -> None:
            shutil.copytree(VICTIMS[strategy], folder / "run")
            damage(folder / "run")

        def argv(folder: Path) -> list[str]:
            return [str(folder / "run") if word == "RUN" else word for word in command]

        return Case("run-dir", f"{label}:{command[0]}:{strategy}", argv, prepare)

    resume, show, report = ["search", "--resume", "RUN"], ["show", "RUN"], ["report", "RUN"]
    promote = ["promote", "RUN", "--fidelity", "smoke"]
    cases = [case(label, "evolution", damage, resume) for label, damage in [*TABLE_DAMAGE, *RESUME_ONLY_DAMAGE]]
    for command in (show, report, promote):
        cases += [case(label, "evolution", damage, command) for label, damage in VIEW_DAMAGE]
    for command in (show, report):
        cases += [case(label, "evolution", damage, command) for label, damage in SUMMARY_DAMAGE]
    cases += [
        case("crafted-pickled-sampler", "tpe", crafted_sampler, resume),
        case("state-garbage", "tpe", replace_file("search_state.json", "{"), resume),
        case("journal-garbage", "tpe", replace_file("optuna.journal", b"\x00garbage\n" * 20), resume),
        case("unknown-fidelity", "evolution", lambda run: None, ["promote", "RUN", "--fidelity", "bogus"]),
        case("top-0", "evolution", lambda run: None, ["promote", "RUN", "--top", "0"]),
        case("seeds-101", "evolution", lambda run: None, ["promote", "RUN", "--seeds", "101"]),
    ]
    return cases


VICTIMS: dict[str, Path] = {}  # strategy -> an undamaged run directory, made once per session


# ---------------------------------------------------------------------------------------------- the test
CORPUS = [*spec_cases(), *search_cases(), *task_cases(), *cli_cases(), *run_dir_cases()]
KINDS = ("spec", "search-config", "task-config", "cli", "run-dir")


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module", autouse=True)
def victims(tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("victims")
    for strategy in ("evolution", "tpe"):
        VICTIMS[strategy] = make_run(folder, strategy)


class CaseTimeout(Exception):
    pass


def run_cli(argv: list[str]) -> int:
    def alarm(signum, frame):
        raise CaseTimeout(f"still running after {TIME_BOUND_S} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_BOUND_S)
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's way; main() should return instead
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_the_corpus_is_large_and_covers_every_kind() -> None:
    kinds = {kind: sum(c.kind == kind for c in CORPUS) for kind in KINDS}
    assert len(CORPUS) >= 200 and all(n >= 25 for n in kinds.values()), kinds
    ids = [f"{c.kind}:{c.label}" for c in CORPUS]
    assert len(set(ids)) == len(ids), "case labels are unique"


@pytest.mark.parametrize("case", CORPUS, ids=[f"{c.kind}:{c.label}" for c in CORPUS])
def test_bad_input_gets_one_line_and_exit_2_and_changes_nothing(case: Case, tmp_path, capfd, monkeypatch) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    case.prepare(folder)
    monkeypatch.chdir(folder)  # relative default outputs (runs/...) would land here and be seen
    stdin = (folder / case.stdin).read_text(errors="replace") if case.stdin else ""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    argv = case.argv(folder)
    before = snapshot(folder)
    capfd.readouterr()
    started = time.monotonic()
    code = run_cli(argv)
    elapsed = time.monotonic() - started
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert code == 2, f"exit {code}; stderr: {err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("nas: error: "), f"stderr:\n{err[-3000:]}"
    assert "Traceback" not in err and out == "", f"stdout:\n{out[-2000:]}"
    assert snapshot(folder) == before, "the command wrote or changed files"
    assert not (folder / MARKER).exists() and not (tmp_path / MARKER).exists()
    assert elapsed < TIME_BOUND_S
    assert len(lines[0]) < 2000, "one line, not a dump"
