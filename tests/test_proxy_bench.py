"""The stored signal results (benchmarks/results/synthetic-*.json): read only when they match this run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from proxy_bench import _architectures, _dataset, _settings, _stored_reference

from proxy_tasks.datasets.synthetic import GENERATOR_VERSION
from proxy_tasks.task import load_task
from search_spaces import get_spec

TASK = load_task("synthetic")
NAMES = ["deeplabv3-resnet50", "spinenet-49"]
SPECS = [get_spec(n) for n in NAMES]


def _row(fidelity: str, seed: int, miou: float, spec_hash: str | None = None) -> dict:
    return {"fidelity": fidelity, "seed": seed, "miou": miou, "spec_hash": spec_hash}


def _write(path: Path, results: dict, **top: object) -> str:
    path.write_text(
        json.dumps({"task": "synthetic", "generator_version": GENERATOR_VERSION, **top, "results": results})
    )
    return str(path)


def test_stored_reference_rows_are_taken_when_they_match_this_run(tmp_path: Path) -> None:
    rows = {
        n: [_row("full-1k", s, 0.5 + s / 10, spec.hash) for s in (0, 1)] + [_row("proxy", 0, 0.1, spec.hash)]
        for n, spec in zip(NAMES, SPECS)
    }
    path = _write(tmp_path / "r.json", rows, dataset=_dataset(TASK))
    stored = _stored_reference(path, TASK, "full-1k", NAMES, SPECS)
    assert {n: [(r["seed"], r["miou"]) for r in v] for n, v in stored.items()} == {
        n: [(0, 0.5), (1, 0.6)] for n in NAMES
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("stale spec", r"r\.json: its spinenet-49 is spec 0123456789, this run's is [0-9a-f]{10}; measure again"),
        ("missing", r"r\.json: no full-1k trials of spinenet-49"),
        ("generator", rf"measured on synthetic scenes v1, not v{GENERATOR_VERSION}; measure again"),
        ("task", r"r\.json: holds trials of task 'voc', not 'synthetic'"),
        ("dataset", r"r\.json: measured on other dataset settings than task 'synthetic' has now; measure again"),
        ("no version", r"r\.json: does not say which scene generator it was measured on"),
        ("settings", r"r\.json: its full-1k trials were run with other full-1k or optimizer settings than task"),
    ],
)
def test_stored_reference_that_does_not_match_is_refused_in_one_line(tmp_path: Path, change: str, message: str):
    rows = {n: [_row("full-1k", 0, 0.5, spec.hash)] for n, spec in zip(NAMES, SPECS)}
    top: dict = {}
    if change == "stale spec":
        rows["spinenet-49"][0]["spec_hash"] = "0123456789abcdef"
    if change == "missing":
        rows["spinenet-49"] = [_row("proxy", 0, 0.1, SPECS[1].hash)]
    if change == "generator":
        top["generator_version"] = 1
    if change == "task":
        top["task"] = "voc"
    if change == "dataset":  # the same task name, other scenes: fewer training images
        top["dataset"] = _dataset(TASK) | {"synthetic": _dataset(TASK)["synthetic"] | {"num_train": 64}}
    if change == "no version":
        top["generator_version"] = None
    if change == "settings":
        settings = _settings(TASK, "full-1k")
        rows["spinenet-49"][0]["settings"] = settings | {"fidelity": settings["fidelity"] | {"steps": 999}}
    path = _write(tmp_path / "r.json", rows, **top)
    with pytest.raises(SystemExit, match=message) as info:
        _stored_reference(path, TASK, "full-1k", NAMES, SPECS)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("fidelity", "seeds"), [("full-1k", 2), ("proxy-gpu", 3)])
def test_the_stored_gpu_results_still_describe_the_shipped_presets(fidelity: str, seeds: int) -> None:
    # The README's proxy figures come from these files: they must have been measured with today's
    # presets, optimizer, scenes and search space, on every architecture the signal benchmark uses.
    archs = _architectures(5)
    names = [a.name for a in archs]
    stored = _stored_reference(f"benchmarks/results/synthetic-{fidelity}.json", TASK, fidelity, names, archs)
    assert {name: sorted(r["seed"] for r in rows) for name, rows in stored.items()} == {
        name: list(range(seeds)) for name in names
    }
    assert all(0.0 < r["miou"] < 1.0 for rows in stored.values() for r in rows)


def test_a_variant_task_file_ranks_against_the_stored_results(tmp_path: Path) -> None:
    # A proxy preset under trial lives in a copy of the task file: the stored full-1k trials are
    # the same task's (by name and dataset settings), wherever the file is.
    variant = tmp_path / "variant.yaml"
    preset = "  mine: {resolution: 0.5, crop: 128, width: 0.5, steps: 10, batch_size: 4}\n"
    variant.write_text(
        Path("proxy_tasks/tasks/synthetic.yaml").read_text().replace("fidelities:\n", "fidelities:\n" + preset)
    )
    archs = _architectures(5)
    stored = _stored_reference(
        "benchmarks/results/synthetic-full-1k.json", load_task(variant), "full-1k", [a.name for a in archs], archs
    )
    assert [len(rows) for rows in stored.values()] == [2] * 8
