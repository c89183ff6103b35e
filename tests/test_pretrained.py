"""--init: torchvision's ResNet and DeepLabv3 state_dicts (names and shapes recorded once from
torchvision 0.28.0, tests/fixtures/torchvision_state_dicts.json) load into our networks by name."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nas.cli import main
from nas.model import create_model
from nas.model.builder import build_model
from nas.model.pretrained import (
    DEEPLABV3,
    RESNET,
    InitError,
    check_fits,
    file_kind,
    load_into,
    module_names,
    read_weights,
    resnet_stages,
)
from proxy_tasks.task import load_task, scale_spec
from proxy_tasks.trial import run_trial
from search_spaces import get_spec

FIXTURE = Path(__file__).parent / "fixtures" / "torchvision_state_dicts.json"


def recorded(model: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state_dict with torchvision's names and shapes for ``model``, filled with random numbers."""
    shapes = json.loads(FIXTURE.read_text())["models"][model]
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}


def in_their_names(spec, classes: int, kind: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """A network of ``spec`` saved under torchvision's names (for networks narrower than theirs)."""
    torch.manual_seed(seed)
    model = build_model(spec, classes)
    names = module_names(model, kind)
    weights = {}
    for ours, tensor in model.state_dict().items():
        module, _, leaf = ours.rpartition(".")
        if module in names:
            weights[f"{names[module]}.{leaf}"] = tensor.clone()
    if kind == RESNET:
        weights["fc.weight"], weights["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    return weights


def test_the_fixture_is_torchvisions_as_recorded() -> None:
    fixture = json.loads(FIXTURE.read_text())
    assert fixture["torchvision"].startswith("0.28.0") and fixture["torch"].startswith("2.13.0")
    counts = {name: len(shapes) for name, shapes in fixture["models"].items()}
    assert counts == {"resnet50": 320, "resnet101": 626, "deeplabv3_resnet50": 362, "deeplabv3_resnet101": 668}
    parameters = sum(
        torch.Size(shape).numel()
        for name, shape in fixture["models"]["deeplabv3_resnet50"].items()
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert parameters == 39_638_869  # the published count of DeepLabv3-ResNet-50 without its auxiliary head


def test_a_whole_torchvision_deeplabv3_resnet50_fills_every_tensor_of_ours() -> None:
    weights = recorded("deeplabv3_resnet50")
    shuffled = dict(random.Random(0).sample(list(weights.items()), len(weights)))  # names, not order
    model = create_model("deeplabv3-resnet50-os8", 21)
    report = load_into(model, shuffled, "dlv3.pth")
    assert (report.kind, len(report.loaded), report.fresh, report.problems) == (DEEPLABV3, 362, [], [])
    state = model.state_dict()
    # Block 1 of stage 2 is our fifth node (stage 1 has three); the pooling branch's conv is the fifth
    # ASPP branch's; the classifier is torchvision's classifier.4.
    for ours, theirs in (
        ("backbone.stem.0.0.weight", "backbone.conv1.weight"),
        ("backbone.nodes.4.body.0.conv2.0.weight", "backbone.layer2.1.conv2.weight"),
        ("backbone.nodes.3.body.0.shortcut.1.running_var", "backbone.layer2.0.downsample.1.running_var"),
        ("backbone.nodes.15.body.0.conv3.1.bias", "backbone.layer4.2.bn3.bias"),
        ("head.aspp.branches.4.1.0.weight", "classifier.0.convs.4.1.weight"),
        ("head.aspp.branches.4.1.1.weight", "classifier.0.convs.4.2.weight"),
        ("head.conv.1.running_mean", "classifier.2.running_mean"),
        ("head.classifier.bias", "classifier.4.bias"),
    ):
        assert torch.equal(state[ours], weights[theirs]), ours


def test_an_imagenet_resnet_sets_the_backbone_and_leaves_the_head_as_initialised() -> None:
    weights = recorded("resnet50")
    torch.manual_seed(0)
    model = create_model("deeplabv3plus-resnet50", 19)
    torch.manual_seed(0)
    untouched = create_model("deeplabv3plus-resnet50", 19).state_dict()
    report = load_into(model, weights, "resnet50.pth")
    assert report.kind == RESNET and report.problems == []  # fc.* is ImageNet's classifier: not used
    assert len(report.loaded) == 318 and all(name.startswith("backbone.") for name in report.loaded)
    assert report.fresh and all(name.startswith("head.") for name in report.fresh)
    state = model.state_dict()
    assert torch.equal(state["backbone.nodes.9.body.0.conv1.0.weight"], weights["layer3.2.conv1.weight"])
    assert all(torch.equal(state[name], untouched[name]) for name in report.fresh)


@pytest.mark.parametrize(
    ("arch", "checkpoint", "classes", "loaded"),
    [
        ("deeplabv3-resnet101", "resnet101", 19, 624),
        ("deeplabv3plus-resnet101", "resnet101", 19, 624),
        ("deeplabv3-resnet101", "deeplabv3_resnet101", 21, 668),  # OS 16 here, 8 there: the same tensors
        ("deeplabv3-resnet50", "resnet50", 21, 318),
    ],
)
def test_every_deeplab_spec_takes_its_torchvision_checkpoint(arch, checkpoint, classes, loaded) -> None:
    report = check_fits(get_spec(arch), classes, recorded(checkpoint), checkpoint)
    assert report.problems == [] and len(report.loaded) == loaded


def test_resnet_stages_are_read_from_the_spec() -> None:
    layout = resnet_stages(get_spec("deeplabv3-resnet101"))
    assert [sum(1 for s, _ in layout if s == stage) for stage in (1, 2, 3, 4)] == [3, 4, 23, 3]
    assert layout[7] == (3, 0) and layout[-1] == (4, 2)
    assert resnet_stages(get_spec("spinenet-49")) is None


def test_what_does_not_fit_is_named_one_line_each_and_strict_refuses_it() -> None:
    weights = recorded("deeplabv3_resnet50")
    del weights["backbone.layer4.2.bn3.running_var"]
    weights["backbone.layer5.0.conv1.weight"] = torch.zeros(1)
    model = create_model("deeplabv3-resnet50", 19)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InitError) as info:
        load_into(model, weights, "dlv3.pth")
    message = str(info.value)
    assert "\n" not in message and message.startswith("dlv3.pth: 4 tensors do not fit deeplabv3-resnet50")
    assert "classifier.4.weight: shape [21, 256, 1, 1] in the file, [19, 256, 1, 1] in the network" in message
    assert "--init-partial" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # refused before any copy
    report = load_into(model, weights, "dlv3.pth", strict=False)
    assert sorted(report.problems) == [
        "backbone.layer4.2.bn3.running_var: not in the file "
        "(the network's backbone.nodes.15.body.0.conv3.1.running_var)",
        "backbone.layer5.0.conv1.weight: in the file, no counterpart in the network",
        "classifier.4.bias: shape [21] in the file, [19] in the network (head.classifier.bias)",
        "classifier.4.weight: shape [21, 256, 1, 1] in the file, [19, 256, 1, 1] in the network "
        "(head.classifier.weight)",
    ]
    assert len(report.loaded) == 362 - 3
    assert torch.equal(model.state_dict()["backbone.stem.0.0.weight"], weights["backbone.conv1.weight"])


def test_a_narrower_or_other_network_does_not_fit_an_imagenet_resnet() -> None:
    narrow = scale_spec(get_spec("deeplabv3-resnet50"), load_task("synthetic").fidelity("smoke"))
    with pytest.raises(InitError, match=r"conv1\.weight: shape \[64, 3, 7, 7\] in the file, \[8, 3, 7, 7\]"):
        check_fits(narrow, 7, recorded("resnet50"), "resnet50.pth")
    report = check_fits(get_spec("spinenet-49"), 19, recorded("resnet50"), "resnet50.pth", strict=False)
    assert len(report.loaded) == 6  # the stem's conv and BN: SpineNet's blocks have no ResNet counterpart
    assert any("no counterpart in a torchvision ResNet checkpoint" in p for p in report.problems)


def test_weights_files_are_read_safely_and_checked(tmp_path: Path) -> None:
    weights = recorded("resnet50")
    torch.save({"model": {f"module.{k}": v for k, v in weights.items()}, "epoch": 90}, tmp_path / "train.pth")
    assert read_weights(tmp_path / "train.pth").keys() == weights.keys()  # unwrapped, prefix removed
    torch.save([1, 2], tmp_path / "list.pt")
    torch.save({"conv1.weight": "not a tensor"}, tmp_path / "strings.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")

    class Payload:
        def __reduce__(self):
            return (print, ("ran code",))

    torch.save(Payload(), tmp_path / "code.pt")
    for name, message in (
        ("missing.pt", "no such file"),
        ("list.pt", "not a state_dict"),
        ("strings.pt", "'conv1.weight' is not a name with a tensor"),
        ("junk.pt", "not a readable weights file"),
        ("code.pt", "not a readable weights file"),  # weights_only: nothing in the file runs
    ):
        with pytest.raises(InitError, match=message):
            read_weights(tmp_path / name)
    with pytest.raises(InitError, match="not a torchvision ResNet, a torchvision DeepLabv3 nor a nas checkpoint"):
        file_kind({"encoder.weight": torch.zeros(1)})


def test_a_trial_starts_from_the_weights_it_is_given(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    task = load_task("synthetic")
    spec = get_spec("deeplabv3-resnet50")
    smoke = task.fidelity("smoke")
    weights = in_their_names(scale_spec(spec, smoke), 7, RESNET)
    task = replace(task, fidelities={**task.fidelities, "still": replace(smoke, steps=1, lr=1e-12)}, workers=0)
    trained = {}
    run_trial(
        spec,
        task,
        "still",
        on_trained=lambda m: trained.update(model=m),
        init=lambda m: load_into(m, weights, "w.pth"),
    )
    state = trained["model"].state_dict()
    # One step at a learning rate of 1e-12 leaves the weights where the file put them.
    assert torch.allclose(state["backbone.nodes.5.body.0.conv2.0.weight"], weights["layer2.2.conv2.weight"], atol=1e-9)


def test_nas_train_init_refuses_weights_that_do_not_fit_in_one_line(tmp_path: Path, capsys) -> None:
    torch.save(recorded("resnet50"), tmp_path / "resnet50.pth")  # full width; smoke trains at 1/8
    out = tmp_path / "out"
    args = ["train", "--arch", "deeplabv3-resnet50", "--fidelity", "smoke", "--out", str(out), "--quiet"]
    assert main([*args, "--init", str(tmp_path / "resnet50.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nas: error: ")
    # 318 backbone tensors, less the 53 BN step counters (scalars fit any width); fc is ImageNet's, not counted.
    assert "265 tensors do not fit deeplabv3-resnet50" in err
    assert "conv1.weight: shape [64, 3, 7, 7] in the file, [8, 3, 7, 7] in the network" in err
    assert not out.exists()
    # A file that fits but for one missing tensor: refused too, naming it.
    narrow = scale_spec(get_spec("deeplabv3-resnet50"), load_task("synthetic").fidelity("smoke"))
    weights = in_their_names(narrow, 7, RESNET)
    del weights["layer3.4.conv2.weight"]
    torch.save(weights, tmp_path / "small.pth")
    assert main([*args, "--init", str(tmp_path / "small.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 tensor does not fit deeplabv3-resnet50" in err
    assert "layer3.4.conv2.weight: not in the file (the network's backbone.nodes.11.body.0.conv2.0.weight)" in err
    assert not out.exists()
    assert main([*args, "--init-partial"]) == 2
    assert "--init-partial: give the weights with --init FILE" in capsys.readouterr().err
    assert main([*args, "--init", str(tmp_path / "nothing.pth")]) == 2
    assert capsys.readouterr().err == f"nas: error: {tmp_path / 'nothing.pth'}: no such file\n"
    assert not out.exists()


def test_nas_train_init_partial_reports_each_skipped_tensor_and_records_the_load(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    spec = scale_spec(get_spec("deeplabv3-resnet50"), load_task("synthetic").fidelity("smoke"))
    weights = in_their_names(spec, 7, RESNET)
    del weights["layer1.0.bn2.running_mean"]
    torch.save(weights, tmp_path / "small.pth")
    out = tmp_path / "out"
    args = ["train", "--arch", "deeplabv3-resnet50", "--fidelity", "smoke", "--out", str(out), "--quiet"]
    assert main([*args, "--threads", "1", "--init", str(tmp_path / "small.pth"), "--init-partial"]) == 0
    err = capsys.readouterr().err
    assert (
        "init: skipped layer1.0.bn2.running_mean: not in the file "
        "(the network's backbone.nodes.0.body.0.conv2.1.running_mean)"
    ) in err
    init = json.loads((out / "metrics.json").read_text())["init"]
    assert (init["kind"], init["loaded"], init["fresh"], len(init["problems"])) == (RESNET, 317, 44, 1)
    assert "init: skipped layer1.0.bn2.running_mean" in (out / "train.log").read_text()


def test_nas_promote_init_checks_every_model_first_then_trains_each_from_the_weights(tmp_path, monkeypatch, capsys):
    import pandas as pd
    import ray
    import yaml

    from nas.search.config import load_search_config
    from nas.search.runner import run_search

    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    smoke = {"resolution": 1.0, "crop": 32, "width": 0.125, "resample_alpha": 0.25, "steps": 1, "batch_size": 2}
    task = {
        "name": "tiny",
        "dataset": {"kind": "synthetic", "synthetic": {"image_size": 32, "num_train": 4, "num_val": 2, "seed": 0}},
        "fidelities": {"smoke": {**smoke, "eval_scales": [0.5, 1.0], "eval_flip": True}},
        "optimizer": {"name": "adamw", "lr": 0.001},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(task))
    config = {
        "name": "t",
        "task": "tiny.yaml",
        "fidelity": "smoke",
        "baselines": [],  # the search trains one random candidate; the promotion adds DeepLabv3-ResNet-50
        "strategy": {"name": "random"},
        "budget": {"trials": 1},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 2, "ray_cpus": 2},
    }
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(config))
    narrow = scale_spec(get_spec("deeplabv3-resnet50"), load_task(tmp_path / "tiny.yaml").fidelity("smoke"))
    torch.save(in_their_names(narrow, 7, RESNET), tmp_path / "resnet.pth")
    run = tmp_path / "run"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        run_search(load_search_config(tmp_path / "search.yaml"), run, log=lambda _: None)
        capsys.readouterr()  # Ray's own start-up messages
        args = ["promote", str(run), "--top", "1", "--fidelity", "smoke", "--seeds", "1"]
        # Strict: the searched candidate is no ResNet, so the weights are refused before anything is trained.
        assert main([*args, "--init", str(tmp_path / "resnet.pth")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("nas: error: ") and err.count("\n") == 1 and "do not fit" in err
        assert not (run / "promoted").exists()
        assert main([*args, "--init", str(tmp_path / "resnet.pth"), "--init-partial"]) == 0
        captured = capsys.readouterr()
    finally:
        ray.shutdown()
    assert "no counterpart in a torchvision ResNet checkpoint" in captured.err  # the candidate's, one line each
    seeds = pd.read_parquet(run / "promoted_seeds.parquet")
    for _, row in seeds.iterrows():
        init = json.loads((run / row["path"] / "metrics.json").read_text())["full"]["init"]
        assert init["kind"] == RESNET and init["file"] == str(tmp_path / "resnet.pth")
        if row["role"] == "baseline":
            assert (init["loaded"], init["problems"]) == (318, [])
        else:
            assert init["problems"] and init["loaded"] < 318
    # Single-scale and multi-scale mIoU apart, each labelled.
    assert seeds["miou_ms"].between(0, 1).all() and seeds["miou"].between(0, 1).all()
    promoted = pd.read_parquet(run / "promoted.parquet")
    assert promoted["promoted_miou_ms"].between(0, 1).all()
    assert "smoke mIoU ms" in captured.out and "smoke mIoU: single scale, whole images" in captured.out
    assert "smoke mIoU ms: scales 0.5, 1 with left-right flips, softmax averaged, whole images" in captured.out
    summary = json.loads((run / "promoted" / "summary.json").read_text())
    assert summary["evaluation"]["miou_ms"].startswith("scales 0.5, 1 with left-right flips")
