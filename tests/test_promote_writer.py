"""Promotion without Ray: each training's seed folder, written as its trial ends; a folder with no run;
exporting a model no seed of which trained; what the search already trained; which candidates."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from nas.cli import main
from nas.model.export import ExportError, find_source
from nas.search.promote import Model, _done, _plan, _search_trained, select, write_search_trained, write_training
from nas.search.run_dir import write_json
from nas.search.status import FAILED, LOST, OK
from search_spaces import get_spec


def _model() -> Model:
    spec = get_spec("spinenet-49s")
    return Model(spec.hash, "spinenet-49s", spec.to_json(indent=None), "baseline")


def test_a_finished_training_leaves_its_weights_spec_and_metrics_and_counts_as_done(tmp_path: Path) -> None:
    model, saved = _model(), tmp_path / "checkpoint"
    saved.mkdir()
    trained = get_spec("spinenet-49s").to_dict()
    trained["name"] = "scaled"  # the spec the weights were trained as, not the one promoted
    torch.save({"spec": json.dumps(trained), "state_dict": {}}, saved / "model.pt")
    result = {"final": True, "status": OK, "error": "", "result_json": json.dumps({"miou": 0.25, "flops": 7})}
    messages: list[str] = []

    write_training(tmp_path, model, "full", 3, result, False, saved, messages.append)

    folder = tmp_path / "promoted" / model.spec_hash / "seeds" / "full-seed3"
    record = json.loads((folder / "metrics.json").read_text())
    assert (record["status"], record["error"], record["seed"], record["role"]) == (OK, None, 3, "baseline")
    assert record["full"] == {"miou": 0.25, "flops": 7} and record["proxy"] == {}
    assert json.loads((folder / "spec.json").read_text())["name"] == "scaled"
    assert (folder / "model.pt").read_bytes() == (saved / "model.pt").read_bytes()
    assert _done(folder) and messages == [
        f"promoted baseline spinenet-49s ({model.spec_hash[:10]}) seed 3: ok, full mIoU 0.2500"
    ]


def test_a_training_tune_gave_up_on_is_failed_without_weights_and_is_trained_again(tmp_path: Path) -> None:
    model = _model()

    write_training(tmp_path, model, "smoke", 0, {"final": False, "miou": 0.1}, True, None, lambda _: None)

    folder = tmp_path / "promoted" / model.spec_hash / "seeds" / "smoke-seed0"
    record = json.loads((folder / "metrics.json").read_text())
    assert (record["status"], record["error"], record["full"]) == (FAILED, LOST, {})
    assert (
        not (folder / "model.pt").exists() and json.loads((folder / "spec.json").read_text())["name"] == "spinenet-49s"
    )
    assert not _done(folder)


def test_promoting_a_folder_without_a_run_says_there_is_no_run_there(tmp_path: Path, capsys) -> None:
    assert main(["promote", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"nas: error: {tmp_path.resolve()}: no search run here (no config.yaml)\n"
    assert list(tmp_path.iterdir()) == []


def test_exporting_a_promoted_model_no_seed_of_which_trained_says_how_each_seed_ended(tmp_path: Path) -> None:
    folder = tmp_path / "promoted" / "abc"
    for seed, error in ((0, "RuntimeError: CUDA out of memory"), (1, LOST)):
        write_json(folder / "seeds" / f"full-seed{seed}" / "metrics.json", {"status": FAILED, "error": error})

    with pytest.raises(ExportError) as refused:
        find_source(folder)

    assert str(refused.value) == (
        f"{folder}: no model.pt or checkpoint.pt in this directory (seeds/full-seed0 ended failed: RuntimeError: "
        f"CUDA out of memory; seeds/full-seed1 ended failed: {LOST})"
    )


def _row(trial_id: int, spec_hash: str, fidelity: str, seed: int, status: str = OK, miou: float = 0.3) -> dict:
    return {
        "trial_id": trial_id,
        "spec_hash": spec_hash,
        "name": f"n{trial_id}",
        "spec_json": "{}",
        "fidelity": fidelity,
        "seed": seed,
        "status": status,
        "miou": miou,
        "objective": miou,
        "flops": 10,
        "params": 5,
        "rung": 1 if fidelity == "long" else 0,
        "train_seconds": 2.5,
    }


def test_trainings_the_search_ran_at_the_promotion_fidelity_are_taken_and_each_model_keeps_one_with_weights(
    tmp_path: Path,
) -> None:
    model = _model()
    other = Model("f" * 16, "other", "{}", "candidate")
    trials = pd.DataFrame(
        [
            _row(0, model.spec_hash, "short", 0),
            _row(1, model.spec_hash, "long", 0, miou=0.41),
            _row(2, model.spec_hash, "long", 1, status="pruned"),  # stopped short: not a training to take
            _row(3, other.spec_hash, "long", 1, miou=0.2),
        ]
    )
    found = _search_trained(trials, "long", augmented=False)
    assert sorted(found) == [(model.spec_hash, 0), (other.spec_hash, 1)] and found[model.spec_hash, 0]["trial_id"] == 1
    assert _search_trained(trials, "long", augmented=True) == {}  # the table keeps no test-time-augmented mIoU

    todo, reused = _plan([model, other], [0, 1], tmp_path, "long", found)
    # model: seed 0 from the search, seed 1 trained; other: its only search seed is 1, seed 0 is trained.
    assert [(m.name, s) for m, s in todo] == [("other", 0), ("spinenet-49s", 1)]
    assert [(m.name, s, r["trial_id"]) for m, s, r in reused] == [("spinenet-49s", 0, 1), ("other", 1, 3)]

    # With one seed, and that one trained by the search, it is trained all the same: the weights.
    todo, reused = _plan([model], [0], tmp_path, "long", found)
    assert [(m.name, s) for m, s in todo] == [("spinenet-49s", 0)] and reused == []

    messages: list[str] = []
    write_search_trained(
        tmp_path, model, "long", 0, found[model.spec_hash, 0], get_spec("spinenet-49s"), messages.append
    )
    folder = tmp_path / "promoted" / model.spec_hash / "seeds" / "long-seed0"
    record = json.loads((folder / "metrics.json").read_text())
    assert record["search_trial_id"] == 1 and record["status"] == OK and record["seed"] == 0
    assert record["full"] == {"miou": 0.41, "flops": 10, "params": 5, "train_seconds": 2.5}
    assert _done(folder) and not (folder / "model.pt").exists() and "trained by the search: trial 1" in messages[0]
    # Done, without weights: a second seed must be trained for them even where the search has it too.
    found[model.spec_hash, 1] = _row(4, model.spec_hash, "long", 1)
    todo, reused = _plan([model], [0, 1], tmp_path, "long", found)
    assert [(m.name, s) for m, s in todo] == [("spinenet-49s", 1)] and reused == []


def test_a_network_at_several_rungs_is_one_candidate_ranked_by_its_top_rung() -> None:
    trials = pd.DataFrame(
        [
            _row(0, "a" * 16, "short", 0, miou=0.9),
            _row(1, "a" * 16, "long", 0, miou=0.5),
            _row(2, "b" * 16, "short", 0, miou=0.8),
            _row(3, "c" * 16, "short", 0, miou=0.7),
            _row(4, "d" * 16, "long", 0, miou=0.6),
        ]
    )
    chosen = select(trials, top=3, pareto=False)
    assert list(chosen["trial_id"]) == [4, 1, 2]  # the top rung first, each network once
    assert list(select(trials, top=5, pareto=False, baselines=frozenset({"d" * 16}))["trial_id"]) == [1, 2, 3]
