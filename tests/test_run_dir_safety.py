"""Loading a run directory or a shared file never executes code.

Each crafted file carries a pickle whose `__reduce__` creates a marker file when unpickled. The
tests load it the way the platform does (a resumed search, `nas eval`, `nas train --resume`,
`nas show`, the dataset cache, Ray Tune) and check that it is refused with one line or read as
plain data, and that the marker never appears; a control loads the same payload unsafely and
sees the marker appear, so each check is live.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from search_bench import likeness_objective

from analysis import load_run
from nas.cli import main
from nas.model.checkpoint import CheckpointError, load_model
from nas.search import STRATEGIES, Objective, Outcome, Search, evaluate_in_process
from nas.search.config import search_config_from_dict
from nas.search.optuna_base import RNG_PATHS, random_states
from nas.search.run_dir import STATE_NAME, TABLE_NAME, saved_config
from nas.search.runner import open_search, prepare_run_dir
from nas.search.search import SearchStateError
from nas.search.store import read_rows
from proxy_tasks.datasets.synthetic import load_or_generate
from proxy_tasks.task import load_task
from proxy_tasks.trial import CHECKPOINT_NAME
from search_spaces import SearchSpace, get_spec

SPACE = SearchSpace()
likeness = likeness_objective()


class MarkerPayload:
    """Unpickling it creates ``marker``: what a crafted file would do with a shell command instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def crafted_pickle(marker: Path) -> bytes:
    return pickle.dumps(MarkerPayload(marker))


def test_the_crafted_payload_runs_when_unpickled(tmp_path) -> None:
    # The control for every test below: loading the payload with pickle does create the marker.
    marker = tmp_path / "marker"
    pickle.loads(crafted_pickle(marker))
    assert marker.exists()


def evaluate(candidate) -> Outcome:
    return Outcome({"miou": likeness(candidate.spec), "flops": 1e9 + 1e8 * len(candidate.spec.blocks)})


# ---------------------------------------------------------------------------------- Optuna sampler state
def optuna_search(run_dir: Path, strategy: str, budget: int) -> Search:
    if strategy == "tpe":
        controller, objective = STRATEGIES["tpe"](SPACE, 5, storage=run_dir / "optuna.journal"), Objective()
    else:
        objective = Objective(kind="pareto")
        controller = STRATEGIES["nsga2"](
            SPACE, 5, objective.directions, storage=run_dir / "optuna.journal", population=4
        )
    return Search(run_dir, controller, objective, budget=budget)


def spec_hashes(search: Search) -> list[str]:
    return [r["spec_hash"] for r in sorted(search.store.rows, key=lambda r: r["trial_id"])]


@pytest.mark.parametrize("strategy", ["tpe", "nsga2"])
def test_every_random_state_of_the_samplers_is_in_rng_paths(tmp_path, strategy) -> None:
    search = evaluate_in_process(optuna_search(tmp_path / "run", strategy, budget=2), evaluate)
    sampler = search.controller.sampler
    owned = {id(rng): path for path, rng in random_states(sampler).items()}
    found = _random_states_reachable_from(sampler)
    assert set(found) == set(owned), f"RandomStates outside RNG_PATHS: {sorted(set(found.values()))}"
    assert len(owned) == len(RNG_PATHS)  # distinct generators


def _random_states_reachable_from(root) -> dict[int, str]:
    """Every numpy RandomState in the object graph of ``root`` (attributes and containers), by id."""
    found: dict[int, str] = {}
    seen: set[int] = set()
    stack = [(root, "sampler")]
    while stack:
        obj, path = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.random.RandomState):
            found[id(obj)] = path
        elif isinstance(obj, dict):
            stack += [(v, f"{path}[{k!r}]") for k, v in obj.items()]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += [(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        elif hasattr(obj, "__dict__") and not isinstance(obj, type) and not callable(obj):
            stack += [(v, f"{path}.{k}") for k, v in vars(obj).items()]
    return found


def crash_after(run_dir: Path, strategy: str, budget: int, asked: int) -> None:
    """A search killed after ``asked`` candidates were asked and recorded: only the run directory remains."""
    crashed = optuna_search(run_dir, strategy, budget)
    for _ in range(asked):
        candidate = crashed.next_candidate()
        crashed.record(candidate, evaluate(candidate))


@pytest.mark.parametrize(("strategy", "killed_after"), [("tpe", 10), ("nsga2", 6)])
def test_a_resumed_optuna_search_proposes_what_the_uninterrupted_one_would(tmp_path, strategy, killed_after) -> None:
    # TPE: past its 8 random startup trials; NSGA-II: in its second generation of 4. Both of the
    # sampler's generators are then in use.
    budget = 12
    reference = spec_hashes(evaluate_in_process(optuna_search(tmp_path / "ref", strategy, budget), evaluate))

    crash_after(tmp_path / "run", strategy, budget, killed_after)
    shutil.copytree(tmp_path / "run", tmp_path / "run2")
    state = json.loads((tmp_path / "run" / STATE_NAME).read_text())
    assert set(state["controller"]) == {"random_states"}
    assert set(state["controller"]["random_states"]) == set(RNG_PATHS)
    resumed = evaluate_in_process(optuna_search(tmp_path / "run", strategy, budget), evaluate)
    assert spec_hashes(resumed) == reference

    # The control: resumed with the random states of a sampler fresh from the seed, it proposes others.
    fresh = optuna_search(tmp_path / "fresh", strategy, budget).controller.state_dict()
    replace_controller_state(tmp_path / "run2", fresh)
    resumed = evaluate_in_process(optuna_search(tmp_path / "run2", strategy, budget), evaluate)
    assert spec_hashes(resumed)[:killed_after] == reference[:killed_after]
    assert spec_hashes(resumed) != reference


def write_tpe_run(tmp_path: Path, asked: int = 2) -> Path:
    """A TPE run directory as `nas search` leaves it (config.yaml, table, state, journal)."""
    config = search_config_from_dict(
        {"name": "t", "baselines": [], "strategy": {"name": "tpe"}, "budget": {"trials": 6}, "fidelity": "smoke"}
    )
    run_dir = tmp_path / "run"
    prepare_run_dir(config, run_dir, resume=False)
    search = open_search(config, run_dir)
    for _ in range(asked):
        candidate = search.next_candidate()
        search.record(candidate, evaluate(candidate))
    return run_dir


def replace_controller_state(run_dir: Path, controller: object) -> None:
    state = json.loads((run_dir / STATE_NAME).read_text())
    (run_dir / STATE_NAME).write_text(json.dumps({**state, "controller": controller}))


def test_a_state_holding_a_pickled_sampler_is_refused_unrun_by_search_and_cli(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = write_tpe_run(tmp_path)
    marker = tmp_path / "marker"
    replace_controller_state(run_dir, {"sampler": base64.b64encode(crafted_pickle(marker)).decode("ascii")})

    with pytest.raises(SearchStateError, match=r"older version of nas.*cannot be resumed safely") as caught:
        open_search(saved_config(run_dir), run_dir)
    assert "\n" not in str(caught.value) and str(run_dir / STATE_NAME) in str(caught.value)
    assert not marker.exists()

    assert main(["search", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nas: error: ") and "cannot be resumed safely" in err[0]
    assert not marker.exists()


def _key(state: dict, path: str) -> list:
    return state["random_states"][path]["key"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(
            lambda s: _key(s, "_rng").pop(), r"random state _rng: key must be 624 integers", id="key-623-words"
        ),
        pytest.param(
            lambda s: _key(s, "_rng").__setitem__(3, 2**32),
            r"key must be 624 integers in \[0, 2\*\*32\)",
            id="key-word-too-big",
        ),
        pytest.param(
            lambda s: _key(s, "_random_sampler._rng").__setitem__(0, 1.0),
            r"_random_sampler._rng: key must be",
            id="key-word-a-float",
        ),
        pytest.param(
            lambda s: s["random_states"]["_rng"].update(pos=625),
            r"pos must be an integer in \[0, 624\]",
            id="pos-out-of-range",
        ),
        pytest.param(
            lambda s: s["random_states"]["_rng"].update(has_gauss=True),
            r"has_gauss must be 0 or 1",
            id="has-gauss-a-bool",
        ),
        pytest.param(
            lambda s: s["random_states"]["_rng"].update(cached_gaussian="0"),
            r"cached_gaussian must be a number",
            id="cached-gaussian-a-string",
        ),
        pytest.param(
            lambda s: s["random_states"]["_rng"].pop("pos"), r"expected exactly the fields key, pos", id="field-missing"
        ),
        pytest.param(
            lambda s: s["random_states"].pop("_rng"),
            r"random_states must name exactly _rng, _random_sampler._rng",
            id="generator-missing",
        ),
        pytest.param(
            lambda s: s["random_states"].update(extra={}), r"random_states must name exactly", id="generator-unknown"
        ),
        pytest.param(
            lambda s: s.update(random_states=[]), r"random_states must name exactly", id="random-states-a-list"
        ),
        pytest.param(
            lambda s: s.update(code="os.system('true')"),
            r"expected an object with only 'random_states'",
            id="key-unknown",
        ),
    ],
)
def test_a_damaged_sampler_state_is_refused_with_one_line(tmp_path, damage, message) -> None:
    run_dir = tmp_path / "run"
    evaluate_in_process(optuna_search(run_dir, "tpe", budget=2), evaluate)
    state = json.loads((run_dir / STATE_NAME).read_text())["controller"]
    damage(state)
    replace_controller_state(run_dir, state)
    with pytest.raises(SearchStateError, match=message) as caught:
        optuna_search(run_dir, "tpe", budget=4)
    assert str(caught.value).startswith(f"{run_dir / STATE_NAME}: unreadable search state (controller state: ")
    assert "\n" not in str(caught.value)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nas: error: "), err
    return err[0]


# ---------------------------------------------------------------------------------- YAML
def test_a_yaml_config_with_a_python_tag_is_refused_unrun(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = write_tpe_run(tmp_path)
    marker = tmp_path / "marker"
    payload = f'name: !!python/object/apply:os.system ["touch {marker}"]\n'
    (run_dir / "config.yaml").write_text(payload)
    (tmp_path / "search.yaml").write_text(payload)

    assert main(["search", "--resume", str(run_dir)]) == 2
    assert "config.yaml: damaged run config" in one_error_line(capsys)
    assert main(["search", "--config", str(tmp_path / "search.yaml"), "--out", str(tmp_path / "new")]) == 2
    assert "search.yaml: malformed YAML" in one_error_line(capsys)
    assert not marker.exists()

    yaml.unsafe_load(payload)  # the control: an unsafe loader runs it
    assert marker.exists()


# ---------------------------------------------------------------------------------- torch.load
def test_a_model_checkpoint_holding_a_code_object_is_refused_unrun(tmp_path, capsys) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    torch.save(
        {"spec": get_spec("deeplabv3-resnet50").to_json(), "num_classes": 3, "state_dict": MarkerPayload(marker)}, path
    )

    with pytest.raises(CheckpointError, match=r"model\.pt: not a readable checkpoint \(UnpicklingError\)"):
        load_model(path)
    assert main(["eval", str(path)]) == 2
    assert "model.pt: not a readable checkpoint" in one_error_line(capsys)
    assert main(["export", str(path), "--output", str(tmp_path / "model.ts")]) == 2
    assert "model.pt: not a readable checkpoint" in one_error_line(capsys)
    assert not marker.exists() and not (tmp_path / "model.ts").exists()

    torch.load(path, weights_only=False)  # the control
    assert marker.exists()


@pytest.mark.parametrize("num_classes", [10**9, 0, "21", True])
def test_a_model_checkpoint_with_an_absurd_class_count_is_refused_before_building(tmp_path, capsys, num_classes):
    path = tmp_path / "model.pt"
    torch.save({"spec": get_spec("deeplabv3-resnet50").to_json(), "num_classes": num_classes, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=r"model\.pt: num_classes must be a positive integer of at most 1000"):
        load_model(path)
    assert main(["eval", str(path)]) == 2
    assert "num_classes must be a positive integer" in one_error_line(capsys)


def test_a_trial_checkpoint_holding_a_code_object_is_refused_unrun(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    marker = tmp_path / "marker"
    out = tmp_path / "train"
    out.mkdir()
    torch.save({"step": 1, "model": MarkerPayload(marker)}, out / CHECKPOINT_NAME)
    args = ["train", "--arch", "deeplabv3-resnet50", "--fidelity", "smoke", "--out", str(out), "--quiet", "--resume"]

    assert main(args) == 2
    assert f"{CHECKPOINT_NAME}: unreadable trial checkpoint (UnpicklingError)" in one_error_line(capsys)
    assert not marker.exists()

    torch.save([1, 2], out / CHECKPOINT_NAME)  # loads with weights_only, but is no checkpoint
    assert main(args) == 2
    assert f"{CHECKPOINT_NAME}: not a trial checkpoint (list)" in one_error_line(capsys)


# ---------------------------------------------------------------------------------- np.load
def test_a_synthetic_cache_file_holding_pickled_objects_is_regenerated_unrun(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    marker = tmp_path / "marker"
    expected = load_or_generate(4, 16, seed=1)
    cached = sorted((tmp_path / "cache" / "synthetic").glob("*.npy"))
    assert len(cached) == 2
    for path in cached:
        np.save(path, np.array([MarkerPayload(marker)], dtype=object), allow_pickle=True)

    images, masks = load_or_generate(4, 16, seed=1)
    assert np.array_equal(images, expected[0]) and np.array_equal(masks, expected[1])
    assert not marker.exists()

    np.save(cached[0], np.array([MarkerPayload(marker)], dtype=object), allow_pickle=True)
    np.load(cached[0], allow_pickle=True)  # the control
    assert marker.exists()


# ---------------------------------------------------------------------------------- Parquet
def test_a_results_table_with_a_pickled_extension_type_is_read_as_plain_data(tmp_path, monkeypatch, capsys) -> None:
    # CVE-2023-47248: pyarrow before 14.0.1 unpickled the metadata of an `arrow.py_extension_type` column.
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = write_tpe_run(tmp_path)
    marker = tmp_path / "marker"
    table = pq.read_table(run_dir / TABLE_NAME)
    extension = {
        b"ARROW:extension:name": b"arrow.py_extension_type",
        b"ARROW:extension:metadata": crafted_pickle(marker),
    }
    schema = pa.schema([f.with_metadata(extension) if f.name == "name" else f for f in table.schema])
    pq.write_table(pa.Table.from_arrays(table.columns, schema=schema), run_dir / TABLE_NAME)
    assert (
        pq.read_schema(run_dir / TABLE_NAME).field("name").metadata[b"ARROW:extension:name"]
        == b"arrow.py_extension_type"
    )

    assert main(["show", str(run_dir)]) == 0
    assert [r["name"] for r in read_rows(run_dir / TABLE_NAME)] == ["tpe-0", "tpe-1"]
    assert load_run(run_dir).trials["name"].tolist() == ["tpe-0", "tpe-1"]
    assert not marker.exists()


# ---------------------------------------------------------------------------------- Ray Tune
class FrozenClock:
    """The `time` module with `strftime` stuck at one moment."""

    def __init__(self, formatted: str):
        self.formatted = formatted

    def strftime(self, fmt: str) -> str:
        return self.formatted

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_a_planted_tune_experiment_state_is_never_read(tmp_path, monkeypatch) -> None:
    # A Tune run that ends without a trial reads the newest experiment state in its folder with
    # cloudpickle; the search's Tune folder must be one nobody could create beforehand.
    import ray
    from ray._common.utils import binary_to_hex

    from nas.search import runner

    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = write_tpe_run(tmp_path)
    marker = tmp_path / "marker"
    clock = "20990101-000000"
    planted = run_dir / "ray" / f"tune-{clock}" / "experiment_state-9999-12-31_23-59-59.json"
    planted.parent.mkdir(parents=True)
    planted.write_text(json.dumps({"_type": "CLOUDPICKLE_FALLBACK", "value": binary_to_hex(crafted_pickle(marker))}))
    monkeypatch.setattr(runner, "time", FrozenClock(clock))  # the runner's clock only: Ray keeps the real one

    config = saved_config(run_dir)
    search = open_search(config, run_dir)
    search.stopped = True  # no trial: the case in which Tune reads its experiment state back
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        task = load_task(config.task)
        runner.tune_search(search, config, task.to_dict(), task.fidelity(config.fidelity), run_dir)
    finally:
        ray.shutdown()
    sessions = sorted(p.name for p in (run_dir / "ray").iterdir())
    assert len(sessions) == 2 and sessions[1].startswith(f"tune-{clock}-")
    assert not marker.exists()
