"""Task configs: built-ins load, files round-trip, bad keys and values are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nas.common.config import ConfigError, read_mapping
from nas.common.errors import UserError, first_line, one_line
from proxy_tasks.task import Fidelity, FromData, TaskConfig, builtin_tasks, load_task, scale_spec, task_from_dict
from search_spaces import get_spec


def test_builtin_tasks_load_with_all_three_fidelities() -> None:
    assert {"synthetic", "cityscapes", "voc", "folder"} <= set(builtin_tasks())
    for name in builtin_tasks():
        task = load_task(name)
        assert {"smoke", "proxy", "full"} <= set(task.fidelities)
        # a search on a CPU (proxy), one on a GPU (proxy-gpu), a mid-length promotion (promote)
        assert {"proxy-gpu", "promote"} <= set(task.fidelities)
        assert task.preset("proxy").width < task.preset("proxy-gpu").width < task.preset("promote").width == 1.0
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
    assert task.fidelity("promote") == task.fidelity("full-1k")
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
        ({"fidelities__smoke__epoch": 3}, "fidelities.smoke: unknown key 'epoch'"),
        ({"fidelities__smoke__epochs": 3}, "fidelities.smoke.epochs: give steps or epochs, not both"),
        ({"fidelities__smoke__warmup_epochs": -1}, "fidelities.smoke.warmup_epochs: must be > 0 or null, got -1"),
        ({"fidelities__smoke__crop": [64]}, "fidelities.smoke.crop: expected [height, width] of two positive"),
        ({"fidelities__smoke__crop": [64, 0]}, "fidelities.smoke.crop: expected [height, width] of two positive"),
        ({"fidelities__smoke__eval_window": "big"}, "fidelities.smoke.eval_window: expected null, a positive integer"),
        ({"fidelities__smoke__eval_overlap": 1.0}, "fidelities.smoke.eval_overlap: must be in [0, 1), got 1.0"),
        ({"fidelities__smoke__eval_scales": [0.5, 0.5]}, "fidelities.smoke.eval_scales: must be distinct"),
        ({"fidelities__smoke__eval_scales": [0.0]}, "fidelities.smoke.eval_scales: each scale must be in (0, 4.0]"),
        ({"fidelities__smoke__eval_scales": 1.5}, "fidelities.smoke.eval_scales: expected a list of numbers"),
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


class DamagedError(UserError):
    pass


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("deep.yaml", "a: " + "[" * 5000 + "]" * 5000, "malformed file: nested too deeply"),
        ("deep.json", '{"a": ' + "[" * 5000 + "]" * 5000 + "}", "malformed file: nested too deeply"),
        ("list.json", "[1, 2]", "expected a mapping at the top level"),
        ("bad.json", "{not json", "malformed file: Expecting property name"),
    ],
)
def test_read_mapping_gives_the_callers_error_naming_the_file(tmp_path: Path, name, text, problem) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DamagedError) as caught:
        read_mapping(path, DamagedError, "damaged thing")
    assert str(caught.value).startswith(f"{path}: damaged thing ({problem}")
    assert "\n" not in str(caught.value)


def test_read_mapping_reads_yaml_and_json_and_an_empty_file_only_when_allowed(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("x: 1\n")
    (tmp_path / "a.json").write_text('{"x": [1, 2]}')
    (tmp_path / "empty.yaml").write_text("")
    assert read_mapping(tmp_path / "a.yaml") == {"x": 1}
    assert read_mapping(tmp_path / "a.json") == {"x": [1, 2]}
    assert read_mapping(tmp_path / "empty.yaml", empty={}) == {}
    with pytest.raises(ConfigError, match=r"empty\.yaml: expected a mapping at the top level$"):
        read_mapping(tmp_path / "empty.yaml")


def test_first_line_and_one_line() -> None:
    assert first_line(ValueError("")) == "ValueError"  # no IndexError on an empty message
    assert first_line(ValueError("\n  the cause \nmore")) == "the cause"
    assert one_line("a path\nwith\t a  break") == "a path with a break"


def test_unknown_fidelity_is_named() -> None:
    message = (
        "task 'synthetic' has no fidelity 'huge' \\(has: smoke, proxy, proxy-gpu, full-1k, promote-cpu, zc-synflow, "
    )
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


# ------------------------------------------------------------------------------------ sized to the data
def _image_folder(root: Path, height: int, width: int, count: int = 3) -> Path:
    """A flat-layout folder dataset of ``count`` training images and one validation image of one size."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("background\nthing\n")
    for i in range(count + 1):
        Image.new("RGB", (width, height), (i, 2 * i, 3 * i)).save(root / "images" / f"im{i}.png")
        Image.new("L", (width, height), i % 2).save(root / "masks" / f"im{i}.png")
    (root / "train.txt").write_text("".join(f"im{i}\n" for i in range(count)))
    (root / "val.txt").write_text(f"im{count}\n")
    return root


def test_folder_presets_take_their_crop_from_small_images(tmp_path: Path) -> None:
    # 80x100 px images: every preset trains on crops of 128 px (100 rounded up to a multiple of 32)
    # at native resolution, not on 256 or 512 px crops that would be mostly padding.
    task = load_task("folder", str(_image_folder(tmp_path, 80, 100)))
    sized = {name: (task.fidelity(name).resolution, task.fidelity(name).crop) for name in task.fidelities}
    assert sized == {
        "smoke": (0.25, 64),
        "proxy": (1.0, 128),
        "proxy-gpu": (1.0, 128),
        "promote": (1.0, 128),
        "promote-cpu": (1.0, 128),
        **{f"zc-{score}": (1.0, 128) for score in ("params", "flops", "synflow", "naswot", "grad-norm", "snip")},
        "full": (1.0, 128),
    }
    assert isinstance(task.preset("full").crop, FromData) and task.preset("full").crop.max_side == 512


def test_folder_presets_bring_large_images_down_to_their_size(tmp_path: Path) -> None:
    task = load_task("folder", str(_image_folder(tmp_path, 400, 600)))
    proxy, gpu, full = task.fidelity("proxy"), task.fidelity("proxy-gpu"), task.fidelity("full")
    assert (proxy.resolution, proxy.crop) == (pytest.approx(128 / 600), 128)
    assert (gpu.resolution, gpu.crop) == (pytest.approx(512 / 600), 512)
    assert (full.resolution, full.crop) == (1.0, 512)  # capped: 600 px rounds up to 608
    scored = task.fidelity("zc-snip")
    assert (scored.resolution, scored.crop, scored.zero_cost) == (pytest.approx(256 / 600), 256, "snip")


def test_sizes_from_data_follow_their_rule() -> None:
    sides = [80, 100, 300]
    assert Fidelity(crop="auto").sized(sides).crop == 128  # the median, 100, rounded up to 128
    assert Fidelity(crop="auto") == Fidelity(crop=FromData(side="median", max_side=512))
    assert Fidelity(crop=FromData(side="max", max_side=1000)).sized(sides).crop == 320
    assert Fidelity(crop=FromData(side="max", max_side=256)).sized(sides).crop == 256
    assert Fidelity(crop=FromData(max_side=1000)).sized([10, 12]).crop == 32  # at least one output stride
    halved = Fidelity(resolution=FromData(max_side=50), crop="auto").sized(sides)
    assert (halved.resolution, halved.crop) == (0.5, 64)
    assert Fidelity(resolution=0.5, crop=96).sized(sides) == Fidelity(resolution=0.5, crop=96)


def test_sizes_from_data_load_from_files_and_are_checked(tmp_path: Path) -> None:
    auto = _with(tmp_path / "t.yaml", fidelities__smoke__crop="auto")
    task = load_task(auto)
    assert task.fidelity("smoke").crop == 64  # synthetic: 256 px scenes at resolution 0.25
    assert (
        load_task(
            _with(tmp_path / "r.yaml", **{"fidelities__smoke__crop": task.to_dict()["fidelities"]["smoke"]["crop"]})
        )
        == task
    )
    for bad, message in (
        ({"side": "mean"}, r"fidelities\.smoke\.crop\.side: \"mean\" is not one of median, max"),
        ({"max_side": 0}, r"fidelities\.smoke\.crop\.max_side: must be > 0, got 0"),
        ("big", r"fidelities\.smoke\.crop: expected an integer, got \"big\" \(or auto, or \{side: median\|max"),
        ("x" * 100, r"fidelities\.smoke\.crop: expected an integer, got \"x{36}\.\.\. \(or auto"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_task(_with(tmp_path / "bad.yaml", fidelities__smoke__crop=bad))
    with pytest.raises(ConfigError, match=r"dataset\.root: the folder task needs a dataset folder"):
        load_task("folder").fidelity("proxy")
    assert load_task("folder").preset("proxy").width == 0.25  # the preset as written needs no data


def test_synthetic_presets_are_not_taken_from_data() -> None:
    task = load_task("synthetic")
    assert not any(preset.from_data() for preset in task.fidelities.values())


def test_applicable_dict_leaves_out_the_other_datasets_settings() -> None:
    folder, synthetic = load_task("folder").applicable_dict(), load_task("synthetic").applicable_dict()
    assert "synthetic" not in folder["dataset"] and folder["dataset"]["kind"] == "folder"
    assert set(synthetic["dataset"]) == {"kind", "synthetic"}
    assert folder["fidelities"]["proxy"]["crop"] == {"side": "median", "max_side": 128}


# ------------------------------------------------------------------------------------ recipes
def _cityscapes_tree(root: Path, count: int, height: int = 1024, width: int = 2048) -> Path:
    """Cityscapes' layout with ``count`` training frames and one validation frame (one colour each:
    only their headers are read to size the presets)."""
    from PIL import Image

    for split, n in (("train", count), ("val", 1)):
        images, masks = root / "leftImg8bit" / split / "aachen", root / "gtFine" / split / "aachen"
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (width, height)).save(images / f"aachen_{i:06d}_000019_leftImg8bit.png")
            Image.new("L", (width, height)).save(masks / f"aachen_{i:06d}_000019_gtFine_labelIds.png")
    return root


def test_epochs_become_steps_from_the_training_set_size() -> None:
    # TF Model Garden's conversion: an epoch is images // batch steps (Cityscapes: 2,975 // 16 = 185).
    recipe = Fidelity(epochs=500, warmup_epochs=5, batch_size=16)
    assert (recipe.steps, recipe.by_epochs()) == (None, True)
    scheduled = recipe.scheduled(2975)
    assert (scheduled.steps, scheduled.warmup_steps, scheduled.epochs) == (92500, 925, None)
    assert not scheduled.by_epochs()
    assert Fidelity(epochs=45, warmup_epochs=5, batch_size=16).scheduled(10582).steps == 29745  # VOC train_aug
    assert Fidelity(epochs=0.5, batch_size=16).scheduled(8).steps == 1  # at least one step of one batch
    assert Fidelity(steps=300, warmup_epochs=2, batch_size=10).scheduled(105) == Fidelity(
        steps=300, warmup_steps=20, batch_size=10
    )
    assert Fidelity().steps == 1000 and not Fidelity().by_epochs()
    with pytest.raises(ConfigError, match="warmup_epochs: give warmup_steps or warmup_epochs, not both"):
        Fidelity(warmup_steps=3, warmup_epochs=1)


def test_synthetic_epochs_count_the_training_subset(tmp_path: Path) -> None:
    task = load_task(_with(tmp_path / "t.yaml", fidelities__smoke__steps=None, fidelities__smoke__epochs=3))
    smoke = task.fidelity("smoke")  # 16 training images in batches of 4: 4 steps an epoch
    assert (smoke.steps, smoke.epochs) == (12, None)
    assert load_task(tmp_path / "t.yaml") == task  # round-trips with the epochs as written


def test_cityscapes_presets_follow_the_data_and_the_published_recipe(tmp_path: Path) -> None:
    task = load_task("cityscapes", str(_cityscapes_tree(tmp_path, count=40)))
    assert {"smoke", "proxy", "proxy-gpu", "promote", "full"} <= set(task.fidelities)
    sized = {name: (task.fidelity(name).resolution, task.fidelity(name).crop) for name in task.fidelities}
    assert sized == {
        "smoke": (0.0625, 64),
        "proxy": (0.125, 128),  # 2048 px frames brought down to 256: 128x256, crops of 128 (a CPU's)
        "proxy-gpu": (0.5, 512),
        "promote": (0.5, 512),
        "full": (1.0, (512, 1024)),  # the recipe's 512x1024 crops of 1024x2048 frames
    }
    full, promote = task.fidelity("full"), task.fidelity("promote")
    per_epoch = 40 // 16
    assert (full.steps, full.warmup_steps, full.batch_size, full.lr) == (500 * per_epoch, 5 * per_epoch, 16, 0.01)
    assert (promote.steps, promote.width, full.width) == (50 * per_epoch, 1.0, 1.0)
    assert (full.eval_window, full.eval_scales, full.eval_flip) == ((1024, 2048), (0.75, 1, 1.25, 1.5, 1.75, 2), True)
    assert task.fidelity("proxy").width == 0.25 and task.fidelity("proxy-gpu").width == 0.5
    assert (task.augment.scale_min, task.augment.scale_max, task.optimizer.weight_decay) == (0.5, 2.0, 1e-4)
    assert (task.optimizer.momentum, task.optimizer.poly_power) == (0.9, 0.9)


def test_voc_presets_follow_the_data_and_the_published_recipe(tmp_path: Path) -> None:
    from PIL import Image

    sets = tmp_path / "ImageSets" / "Segmentation"
    for folder in (sets, tmp_path / "JPEGImages", tmp_path / "SegmentationClass"):
        folder.mkdir(parents=True)
    ids = [f"2007_{i:06d}" for i in range(33)]
    for image_id in ids:
        Image.new("RGB", (500, 375)).save(tmp_path / "JPEGImages" / f"{image_id}.jpg")
        Image.new("L", (500, 375)).save(tmp_path / "SegmentationClass" / f"{image_id}.png")
    (sets / "train.txt").write_text("\n".join(ids[:32]) + "\n")
    (sets / "val.txt").write_text(ids[32] + "\n")
    task = load_task("voc", str(tmp_path))
    sized = {name: (task.fidelity(name).resolution, task.fidelity(name).crop) for name in task.fidelities}
    assert sized == {
        "smoke": (0.125, 64),
        "proxy": (pytest.approx(128 / 500), 128),
        "proxy-gpu": (1.0, 512),
        "promote": (1.0, 512),
        "full": (1.0, 512),
    }
    full = task.fidelity("full")
    assert (full.steps, full.warmup_steps, full.batch_size, task.optimizer.lr) == (45 * 2, 5 * 2, 16, 0.007)
    assert (full.eval_scales, full.eval_flip) == ((0.5, 0.75, 1.0, 1.25, 1.5, 1.75), True)


def test_recipe_presets_round_trip_through_files(tmp_path: Path) -> None:
    for name in ("cityscapes", "voc"):
        task = load_task(name)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(task.to_dict()))
        assert load_task(path) == task
    assert load_task("cityscapes").to_dict()["fidelities"]["full"]["crop"] == [512, 1024]


def test_training_crops_take_the_height_and_width_of_the_preset(tmp_path: Path, monkeypatch) -> None:
    from dataclasses import replace

    from proxy_tasks.loader import TrainSet
    from proxy_tasks.task import build_datasets

    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    task = load_task("synthetic")
    smoke = task.fidelity("smoke")  # 64 px scenes
    train, _ = build_datasets(task, smoke)
    wide = TrainSet(train, replace(smoke, crop=[32, 96]), task.augment, seed=0, ignore_index=255)
    image, mask = wide[(0, 0)]
    assert tuple(image.shape) == (3, 32, 96) and tuple(mask.shape) == (32, 96)
    # At most 64 x 1.1 px of scene across: the other columns are padding, ignored (on either side after a flip).
    assert int((mask == 255).all(dim=0).sum()) >= 96 - 71
    # A square written [n, n] crops exactly as n does: the same draws, the same pixels.
    square = TrainSet(train, replace(smoke, crop=48), task.augment, seed=0, ignore_index=255)
    as_pair = TrainSet(train, replace(smoke, crop=[48, 48]), task.augment, seed=0, ignore_index=255)
    for position in range(3):
        assert all(a.equal(b) for a, b in zip(square[(position, position)], as_pair[(position, position)]))


def test_a_warm_up_in_the_fidelity_overrides_the_optimizers(tmp_path: Path, monkeypatch) -> None:
    from dataclasses import replace

    import torch

    from proxy_tasks.trial import _set_up
    from tests.helpers import slim

    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    task = load_task("synthetic")
    spec = slim(get_spec("deeplabv3-resnet50"))
    cpu = torch.device("cpu")
    warm = _set_up(spec, task, replace(task.fidelity("smoke"), warmup_steps=10), 0, cpu)
    cold = _set_up(spec, task, task.fidelity("smoke"), 0, cpu)  # the optimizer's warm-up: none
    assert warm.optimizer.param_groups[0]["lr"] == pytest.approx(task.optimizer.lr / 10)
    assert cold.optimizer.param_groups[0]["lr"] == pytest.approx(task.optimizer.lr)
