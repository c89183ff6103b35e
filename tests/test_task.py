"""Task configs: built-ins load, files round-trip, bad keys and values are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nas.common.config import ConfigError
from proxy_tasks.task import Fidelity, TaskConfig, builtin_tasks, load_task, scale_spec, task_from_dict
from search_spaces import get_spec


def test_builtin_tasks_load_with_all_three_fidelities() -> None:
    assert {"synthetic", "cityscapes", "voc", "folder"} <= set(builtin_tasks())
    for name in builtin_tasks():
        task = load_task(name)
        assert {"smoke", "proxy", "full"} <= set(task.fidelities)
    proxy = load_task("synthetic").fidelity("proxy")
    assert proxy.width == 0.25 and proxy.resample_alpha == 0.25 and proxy.resolution < 1.0


def test_synthetic_presets_render_at_their_sizes() -> None:
    # Scenes are rendered at image_size x resolution: the proxy trains whole 128 px scenes (half
    # the native 256 px) with its own, higher learning rate; smoke stays at 64 px for the tests.
    task = load_task("synthetic")
    native = task.dataset.synthetic.image_size
    names = ("smoke", "proxy", "proxy-gpu", "full-1k", "full")
    sizes = {name: round(native * task.fidelity(name).resolution) for name in names}
    assert sizes == {"smoke": 64, "proxy": 128, "proxy-gpu": 256, "full-1k": 256, "full": 256}
    assert task.fidelity("full-1k").width == task.fidelity("full").width == 1.0
    proxy = task.fidelity("proxy")
    assert proxy.crop == sizes["proxy"] and proxy.lr is not None and proxy.lr > task.optimizer.lr
    assert proxy.steps * proxy.batch_size < task.fidelity("full").steps * task.fidelity("full").batch_size
    # full-1k: full's network and images, an eighth of its schedule (what the proxy is ranked against).
    short, full = task.fidelity("full-1k"), task.fidelity("full")
    assert (short.crop, short.batch_size, short.steps * 8) == (full.crop, full.batch_size, full.steps)
    # proxy-gpu: full-1k's images and learning rate at half the width and half the steps (what
    # ranked like full-1k on a GPU; less resolution or fewer steps did not).
    gpu = task.fidelity("proxy-gpu")
    assert (gpu.crop, gpu.batch_size, gpu.lr, gpu.resample_alpha) == (short.crop, short.batch_size, None, None)
    assert (gpu.width, gpu.steps * 2) == (0.5, short.steps)


def test_task_files_round_trip(tmp_path: Path) -> None:
    task = load_task("synthetic")
    as_yaml, as_json = tmp_path / "t.yaml", tmp_path / "t.json"
    as_yaml.write_text(yaml.safe_dump(task.to_dict()))
    as_json.write_text(json.dumps(task.to_dict()))
    assert load_task(as_yaml) == task == load_task(as_json)


def _with(path: Path, **changes: object) -> Path:
    data = load_task("synthetic").to_dict()
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimiser": {}}, "unknown key 'optimiser'"),
        ({"optimizer__lr": "fast"}, 'optimizer.lr: expected a number, got "fast"'),
        ({"optimizer__name": "lion"}, 'optimizer.name: "lion" is not one of sgd, adamw'),
        ({"fidelities__proxy__steps": 0}, "fidelities.proxy.steps: must be > 0, got 0"),
        ({"fidelities__proxy__crop": 1.5}, "fidelities.proxy.crop: expected an integer, got 1.5"),
        ({"fidelities__proxy__ema_decay": 1.0}, "fidelities.proxy.ema_decay: must be in (0, 1) or null, got 1.0"),
        ({"fidelities__smoke__epochs": 3}, "fidelities.smoke: unknown key 'epochs'"),
        ({"dataset__kind": "coco"}, 'dataset.kind: "coco" is not one of'),
        ({"augment__scale_min": 3.0}, "augment.scale_min: [3.0, 1.1] is not a valid scale range"),
        ({"channels_last": "yes"}, 'channels_last: expected true or false, got "yes"'),
        ({"precision": "fp8"}, 'precision: "fp8" is not one of fp32, bf16, fp16'),
        ({"fidelities": {}}, "fidelities: at least one preset"),
        ({"dataset__synthetic__shapes": ["disk", "hexagon"]}, "dataset.synthetic.shapes: must be distinct names"),
        ({"dataset__synthetic__shapes": ["disk", "disk"]}, "dataset.synthetic.shapes: must be distinct names"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, changes: dict, message: str) -> None:
    path = _with(tmp_path / "task.yaml", **changes)
    with pytest.raises(ConfigError) as info:
        load_task(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_and_malformed_task_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        load_task("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: malformed YAML"):
        load_task(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_task(bad)
    with pytest.raises(ConfigError, match="missing key 'name'"):
        task_from_dict({"fidelities": {"smoke": {}}})


def test_unknown_fidelity_is_named() -> None:
    message = "task 'synthetic' has no fidelity 'huge' \\(has: smoke, proxy, proxy-gpu, full-1k, full\\)"
    with pytest.raises(ConfigError, match=message):
        load_task("synthetic").fidelity("huge")


def test_data_root_override_and_requirement(tmp_path: Path) -> None:
    task = load_task("voc", data_root=str(tmp_path))
    assert task.dataset.root == str(tmp_path)
    from proxy_tasks.task import build_datasets

    with pytest.raises(ConfigError, match=r"dataset\.root: the voc task needs a dataset folder"):
        build_datasets(load_task("voc"), load_task("voc").fidelity("smoke"))


def test_scale_spec_applies_width_and_alpha() -> None:
    spec = get_spec("spinenet-49")
    scaled = scale_spec(spec, Fidelity(width=0.25, resample_alpha=0.25))
    assert scaled.scaling.filter_size_scale == 0.25 and scaled.scaling.resample_alpha == 0.25
    assert scaled.scaling.endpoint_channels == 64 and scaled.head.aspp_channels == 64 and scaled.stem_channels == 16
    assert scaled.blocks == spec.blocks
    assert scale_spec(spec, Fidelity()) is spec
    assert isinstance(load_task("synthetic"), TaskConfig)
