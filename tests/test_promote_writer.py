"""Promotion without Ray: each training's seed folder, written as its trial ends; a folder with no run;
exporting a model no seed of which trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas.cli import main
from nas.model.export import ExportError, find_source
from nas.search.promote import Model, _done, write_training
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
