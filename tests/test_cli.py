"""The `nas arch` command line: figures, pipelines, drawings and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli import main
from nas.search.config import SpaceConfig
from proxy_tasks.task import TASKS_DIR
from search_spaces import ArchSpec, get_spec, sample

NAS = [sys.executable, "-m", "nas.cli"]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NAS, *args], input=stdin, capture_output=True, text=True, timeout=120)


def test_info_reports_the_standard_deeplabv3_parameter_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["arch", "info", "deeplabv3-resnet50", "--classes", "21", "--size", "65", "65", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params_total"] == 39_638_869
    assert info["params_backbone"] == 23_508_032
    assert info["hash"] == get_spec("deeplabv3-resnet50").hash
    assert info["input_size"] == [65, 65]
    assert info["flops"] > 0


def test_info_reports_spinenet_backbone_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["arch", "info", "spinenet-49s", "--size", "64", "64", "--json", "--latency"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params_backbone"] == 9_089_215  # TF Model Garden SpineNet-49S
    assert info["latency_ms"] > 0 and info["device"] == "cpu"


def test_flops_scale_with_the_input_area(capsys: pytest.CaptureFixture[str]) -> None:
    flops = []
    for size in ("64", "128"):
        main(["arch", "info", "spinenet-49s", "--size", size, size, "--json"])
        flops.append(json.loads(capsys.readouterr().out)["flops"])
    assert flops[1] == pytest.approx(4 * flops[0], rel=0.02)


def test_list_names_every_published_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["arch", "list", "--json"]) == 0
    names = [row["name"] for row in json.loads(capsys.readouterr().out)]
    assert {"spinenet-49s", "spinenet-190", "deeplabv3-resnet50", "deeplabv3plus-resnet101"} <= set(names)


def test_sample_mutate_info_pipeline() -> None:
    sampled = run("arch", "sample", "--seed", "1")
    assert sampled.returncode == 0, sampled.stderr
    assert ArchSpec.from_json(sampled.stdout) == ArchSpec.from_json(run("arch", "sample", "--seed", "1").stdout)
    mutated = run("arch", "mutate", "-", "--seed", "2", stdin=sampled.stdout)
    assert mutated.returncode == 0, mutated.stderr
    assert mutated.stderr.startswith("mutation: ")
    assert ArchSpec.from_json(mutated.stdout) != ArchSpec.from_json(sampled.stdout)
    info = run("arch", "info", "-", "--json", "--size", "64", "64", stdin=mutated.stdout)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["hash"] == ArchSpec.from_json(mutated.stdout).hash


def test_sample_honours_block_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["arch", "sample", "--seed", "3", "--blocks", "9", "--min-level", "3", "--max-level", "5"]) == 0
    spec = ArchSpec.from_json(capsys.readouterr().out)
    assert len(spec.blocks) == 11 and {b.level for b in spec.blocks[2:]} <= {3, 4, 5}
    assert sorted(spec.endpoints) == [3, 4, 5]
    assert main(["arch", "sample", "--seed", "3", "--output-levels", "3", "5", "--head-level", "4"]) == 2
    assert "search space: head level 4 is not an output level" in capsys.readouterr().err


def test_sample_and_mutate_draw_from_the_search_configs_space(capsys: pytest.CaptureFixture[str]) -> None:
    space = SpaceConfig().build()  # what `nas search` samples with a config that leaves `space:` out
    assert space.dilations == (1, 2, 4)
    assert main(["arch", "sample", "--seed", "11"]) == 0
    assert ArchSpec.from_json(capsys.readouterr().out) == sample(space, 11)
    assert main(["arch", "mutate", "spinenet-49", "--seed", "5", "--steps", "20"]) == 0
    assert {b.dilation for b in ArchSpec.from_json(capsys.readouterr().out).blocks} <= {1, 2, 4}


def test_info_reads_spec_files_and_draw_writes_an_image(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(get_spec("spinenet-49").to_json())
    assert main(["arch", "info", str(spec_file), "--size", "64", "64"]) == 0
    out = tmp_path / "topology.png"
    assert main(["arch", "draw", str(spec_file), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["arch", "info", "no-such-net"], None, "'no-such-net' is neither a published architecture"),
        (["arch", "info", "-"], '{"blocks": [', "malformed JSON"),
        (["arch", "info", "-"], "", "no spec on standard input"),
        (
            ["arch", "info", "-"],
            '{"blocks": [{"level": 2, "parents": [3], "output": true}]}',
            "block 0: parent 3 is not an earlier block",
        ),
        (
            ["arch", "mutate", "deeplabv3-resnet50-os8", "--seed", "1", "--dilations", "1", "2"],
            None,
            "cannot mutate a spec outside the search space: block 14: dilation 4 not allowed (allowed: 1, 2)",
        ),
        (["arch", "draw", "spinenet-49", "-o", "/nonexistent-dir/x.png"], None, "cannot write"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], stdin: str | None, message: str) -> None:
    result = run(*args, stdin=stdin)
    assert result.returncode == 2
    assert result.stderr.startswith("nas: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_bad_spec_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"blocks": [{"level": 2, "dilation": -1, "output": true}]}')
    result = run("arch", "info", str(bad))
    assert result.returncode == 2
    assert f"{bad}: block 0: dilation must be >= 1" in result.stderr


# ------------------------------------------------------------------------------------ tasks and training
def test_task_show_prints_only_what_the_dataset_uses(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    assert main(["task", "show", "folder"]) == 0
    folder = yaml.safe_load(capsys.readouterr().out)
    assert folder["dataset"] == {"kind": "folder", "root": None, "train_split": "train", "val_split": "val"}
    assert folder["fidelities"]["proxy"]["crop"] == {"side": "median", "max_side": 128}
    assert main(["task", "show", "synthetic"]) == 0
    synthetic = yaml.safe_load(capsys.readouterr().out)
    assert set(synthetic["dataset"]) == {"kind", "synthetic"} and synthetic["fidelities"]["proxy"]["crop"] == 128


def _flat_dataset(root: Path) -> Path:
    """A flat-layout folder dataset (images/, masks/, train.txt, val.txt) of 12x16 px images."""
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("sky\nground\n")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.jpg")
        mask = np.zeros((12, 16), dtype=np.uint8)
        mask[6:] = 1
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    (root / "train.txt").write_text("im0\nim1.jpg\nimages/im2.jpg\nim3\n")
    (root / "val.txt").write_text("im4\n")
    return root


def test_train_on_a_flat_folder_dataset_with_a_crop_from_the_data(tmp_path: Path) -> None:
    import torch
    import yaml

    data = _flat_dataset(tmp_path / "data")
    task = yaml.safe_load((TASKS_DIR / "folder.yaml").read_text())
    task["fidelities"]["smoke"].update(resolution=1.0, crop="auto")
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    argv = ["train", "--arch", "spinenet-49s", "--task", str(tmp_path / "task.yaml"), "--fidelity", "smoke"]
    threads = torch.get_num_threads()
    try:
        assert main([*argv, "--data-root", str(data), "--out", str(tmp_path / "out"), "--quiet", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps"] == 4 and metrics["class_names"] == ["sky", "ground"]
    assert "(crop 32, resolution 1)" in (tmp_path / "out" / "train.log").read_text()  # 16 px rounded up to 32
    assert "1 threads" in (tmp_path / "out" / "train.log").read_text()


def test_train_threads_must_be_positive(tmp_path: Path) -> None:
    result = run("train", "--arch", "spinenet-49s", "--threads", "0", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "--threads" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()
