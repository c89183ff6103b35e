"""Bad input to the `nas` command: one line `nas: error: ...` on stderr, exit status 2, nothing written.

Each case runs `nas.cli.main(argv)` in-process inside a folder of prepared inputs and checks that the
folder is byte for byte what it was (no output folder, no partial file).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nas.cli
from nas.cli import main
from nas.search.store import COLUMNS, write_rows
from proxy_tasks.datasets import folder
from proxy_tasks.loader import EvalSet, to_tensors
from proxy_tasks.task import Fidelity
from search_spaces import ArchSpec, SearchSpace, SpecError, get_spec, published_names
from search_spaces.spec import MAX_BLOCKS

from .helpers import slim

BINARY = b"\xff\xfe\x00\x81binary\x00"


# ---------------------------------------------------------------------------------- the inputs
def _spec_file(path: Path, **changes) -> Path:
    """SpineNet-49S as JSON with ``changes``: top-level keys, ``scaling``/``head`` fields, ``block3`` fields."""
    data = get_spec("spinenet-49s").to_dict()
    for key, value in changes.items():
        if key in ("scaling", "head", "block3"):
            target = data["blocks"][3] if key == "block3" else data[key]
            target.update(value)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return path


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _folder_dataset(root: Path) -> Path:
    """A `folder` dataset: two classes, three training and two validation pairs of 16 x 16 images."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            _png(root / split / "images" / f"img{i}.png", rng.integers(0, 255, (16, 16, 3)))
            _png(root / split / "masks" / f"img{i}.png", rng.integers(0, 2, (16, 16)))
    (root / "classes.txt").write_text("background\nthing\n")
    return root


def _run_dir(path: Path) -> Path:
    """A search run directory with one successful trial."""
    spec = get_spec("spinenet-49s")
    row = {column: None for column in COLUMNS}
    row.update(
        trial_id=0,
        spec_hash=spec.hash,
        name="spinenet-49s",
        spec_json=spec.to_json(),
        strategy="random",
        origin="baseline",
        parent_hashes=[],
        status="ok",
        objective=0.5,
        miou=0.5,
        pixel_accuracy=0.7,
        params=9_000_000,
        flops=10**9,
        latency_ms=1.0,
        fidelity="smoke",
        seed=0,
        attempts=1,
    )
    path.mkdir()
    write_rows(path / "trials.parquet", [row])
    (path / "config.yaml").write_text("name: t\ntask: synthetic\nbaselines: [spinenet-49s]\n")
    return path


def _checkpoint(path: Path) -> None:
    """A `nas train` checkpoint of a narrow SpineNet-49S."""
    from nas.model.builder import build_model
    from nas.model.checkpoint import save_model

    model = build_model(slim(get_spec("spinenet-49s")), 2)
    save_model(path, model, class_names=["a", "b"], task="synthetic", fidelity="smoke", source_spec="{}", miou=0.5)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every input a case names, made once; each test works on its own copy."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "a_file").write_text("not a folder\n")
    (root / "binary.json").write_bytes(BINARY)
    (root / "binary.yaml").write_bytes(BINARY)
    (root / "search.yaml").write_text("name: t\ntask: synthetic\nfidelity: smoke\n")
    _spec_file(root / "wide.json", block3={"width": 10**12})
    _spec_file(root / "scaled.json", scaling={"filter_size_scale": 100.0})
    _spec_file(root / "stem.json", stem_channels=10**12)
    _spec_file(root / "endpoint.json", scaling={"endpoint_channels": 10**6})
    _spec_file(root / "aspp.json", head={"aspp_channels": 10**6})
    _spec_file(root / "repeats.json", scaling={"block_repeats": 1_000_000})
    _spec_file(root / "alpha.json", scaling={"resample_alpha": 1e6})
    _spec_file(root / "huge.json", scaling={"filter_size_scale": 4.0, "block_repeats": 8})
    _spec_file(root / "dilation_huge.json", block3={"dilation": 10**9})
    _spec_file(root / "dilation_zero.json", block3={"dilation": 0})
    _spec_file(root / "dilation_negative.json", block3={"dilation": -4})
    _spec_file(root / "rate.json", head={"aspp_rates": [6, 12, 10**6]})
    _spec_file(root / "rates.json", head={"aspp_rates": list(range(1, 40))})
    _spec_file(root / "name_long.json", name="x" * 201)
    _spec_file(root / "name_10mb.json", name="x" * 10_000_000)
    _spec_file(root / "name_newline.json", name="two\nlines")
    blocks = [{"level": 2, "parents": [i - 1]} for i in range(MAX_BLOCKS)] + [{"level": 2, "output": True}]
    (root / "many_blocks.json").write_text(json.dumps({"blocks": blocks, "head": {"level": 2}}))
    (root / "nested.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "nested_object.json").write_text('{"blocks": ' + "[" * 500 + "]" * 500 + "}")
    _folder_dataset(root / "data")
    _run_dir(root / "run")
    _checkpoint(root / "model.pt")
    return root


@pytest.fixture
def work(inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder, a copy of the inputs; the cache lives outside it."""
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "work"
    shutil.copytree(inputs, root)
    monkeypatch.chdir(root)
    return root


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and folder under ``root`` with its modification time and content digest."""
    return {
        str(p.relative_to(root)): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).digest() if p.is_file() else b"",
        )
        for p in sorted(root.rglob("*"))
    }


def assert_one_line_error(argv: list[str], work: Path, capsys: pytest.CaptureFixture[str], expected: str) -> None:
    before = snapshot(work)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert err.startswith("nas: error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err and expected in err, err
    assert out == ""
    assert snapshot(work) == before


# ---------------------------------------------------------------------------------- 1. specs
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("wide.json", "block 3: width 1,000,000,000,000 is more than the limit of 2,048"),
        ("scaled.json", "scaling.filter_size_scale: 100.0 is more than the limit of 4.0"),
        ("stem.json", "stem_channels: 1,000,000,000,000 is more than the limit of 2,048"),
        ("endpoint.json", "scaling.endpoint_channels: 1,000,000 is more than the limit of 2,048"),
        ("aspp.json", "head.aspp_channels: 1,000,000 is more than the limit of 2,048"),
        ("repeats.json", "scaling.block_repeats: 1,000,000 is more than the limit of 8"),
        ("alpha.json", "scaling.resample_alpha: 1,000,000.0 is more than the limit of 4.0"),
        ("huge.json", "parameters (blocks x block_repeats x width^2), more than the limit of 1e+09"),
        ("dilation_huge.json", "block 3: dilation 1,000,000,000 is more than the limit of 64"),
        ("dilation_zero.json", "block 3: dilation must be >= 1, got 0"),
        ("dilation_negative.json", "block 3: dilation must be >= 1, got -4"),
        ("rate.json", "head.aspp_rates: rate 1,000,000 is more than the limit of 64"),
        ("rates.json", "head.aspp_rates: 39 rates, more than the limit of 8"),
        ("name_long.json", "name: 201 characters, more than the limit of 200"),
        ("name_10mb.json", "bytes, more than a spec file holds (at most 1,048,576)"),
        ("name_newline.json", "holds a control character"),
        ("many_blocks.json", f"spec.blocks: {MAX_BLOCKS + 1} blocks, more than the limit of {MAX_BLOCKS}"),
        ("nested.json", "malformed JSON: nested too deeply"),
        ("nested_object.json", "blocks[0]: expected an object, got [[[["),
        ("binary.json", "binary.json: not a UTF-8 text file"),
    ],
)
def test_a_spec_out_of_bounds_is_one_line(work: Path, capsys: pytest.CaptureFixture[str], spec: str, expected: str):
    assert_one_line_error(["arch", "info", spec, "--size", "64", "64"], work, capsys, expected)


def test_a_bad_spec_stops_train_before_it_writes(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(
        ["train", "--arch", "repeats.json", "--fidelity", "smoke", "--out", "out"],
        work,
        capsys,
        "scaling.block_repeats",
    )


def test_a_binary_spec_on_standard_input_is_one_line(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(BINARY), encoding="utf-8"))
    assert_one_line_error(["arch", "info", "-"], work, capsys, "standard input: not UTF-8 text")


def test_the_limits_leave_room_for_every_published_network_at_twice_its_scale() -> None:
    for name in published_names():
        spec = get_spec(name)
        s = spec.scaling
        for scaling in (
            replace(s, filter_size_scale=2 * s.filter_size_scale),
            replace(s, block_repeats=2 * s.block_repeats),
        ):
            bigger = replace(spec, scaling=scaling)  # validated on construction
            assert ArchSpec.from_json(bigger.to_json()) == bigger
    os8 = get_spec("deeplabv3plus-resnet50-os8")
    assert replace(os8, head=replace(os8.head, aspp_rates=(12, 24, 36, 48))).head.aspp_rates[-1] == 48


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"num_blocks": 10**6}, "num_blocks 1,000,000 is more than the limit of 126"),
        ({"dilations": (1, 10**9)}, "dilation 1,000,000,000 is more than the limit of 64"),
        ({"dilations": (0, 1)}, "dilations must be positive"),
        ({"dilations": (2, 4)}, "must include 1"),
    ],
)
def test_search_space_settings_are_bounded(settings: dict, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        SearchSpace(**settings)


# ---------------------------------------------------------------------------------- 2. command line
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # argparse: a bad choice, a bad type, a missing argument, an unknown command or option
        (["search", "--strategy", "bogus"], "search: argument --strategy: invalid choice: 'bogus'"),
        (["arch", "sample", "--seed", "abc"], "arch sample: argument --seed: expected an integer, got 'abc'"),
        (["arch", "sample"], "arch sample: the following arguments are required: --seed"),
        (["train"], "train: the following arguments are required: --arch"),
        (["bogus"], "argument command: invalid choice: 'bogus'"),
        (["arch", "info", "spinenet-49s", "--colour"], "unrecognized arguments: --colour"),
        (["export", "run", "--format", "gif"], "export: argument --format: invalid choice: 'gif'"),
        ([], "the following arguments are required: command"),
        # numbers that make no sense
        (["search", "--trials", "0", "--out", "new", "--config", "search.yaml"], "argument --trials: must be >= 1"),
        (["search", "--trials", "-3", "--resume", "run"], "argument --trials: must be >= 1, got -3"),
        (["show", "run", "--top", "0"], "show: argument --top: must be >= 1, got 0"),
        (["promote", "run", "--top", "0"], "promote: argument --top: must be >= 1, got 0"),
        (["report", "run", "--top", "-1"], "report: argument --top: must be >= 1, got -1"),
        (["arch", "mutate", "spinenet-49", "--seed", "1", "--steps", "-1"], "argument --steps: must be in 1..10,000"),
        (["arch", "mutate", "spinenet-49", "--seed", "1", "--steps", "0"], "argument --steps: must be in 1..10,000"),
        (["arch", "info", "spinenet-49s", "--size", "0", "64"], "arch info: argument --size: must be in 1..4,096"),
        (["arch", "info", "spinenet-49s", "--size", "99999", "64"], "argument --size: must be in 1..4,096"),
        (["arch", "info", "spinenet-49s", "--classes", "0"], "argument --classes: must be in 1..1,000, got 0"),
        (["arch", "draw", "spinenet-49s", "-o", "x.png", "--dpi", "0"], "argument --dpi: must be in 1..1,200, got 0"),
        (["arch", "sample", "--seed", "-1"], "arch sample: argument --seed: must be in 0..4,294,967,295, got -1"),
        (["train", "--arch", "spinenet-49s", "--seed", "-1"], "train: argument --seed: must be in 0..4,294,967,295"),
        (["export", "run", "--size", "0", "64"], "export: argument --size: must be in 1..4,096, got 0"),
        (["export", "run", "--opset", "3"], "export: argument --opset: must be in 11..20, got 3"),
        # search-space options: the space reports them
        (["arch", "sample", "--seed", "1", "--blocks", "1000000"], "num_blocks 1,000,000 is more than the limit"),
        (["arch", "sample", "--seed", "1", "--dilations", "1", "1000000000"], "dilation 1,000,000,000 is more"),
        (["arch", "sample", "--seed", "1", "--dilations", "0"], "dilations must be positive, got [0]"),
    ],
)
def test_bad_arguments_are_one_line(work: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str):
    assert_one_line_error(argv, work, capsys, expected)


@pytest.mark.parametrize(
    "argv",
    [
        ["arch", "info", "spinenet-49s", "--size", "64", "64", "--latency", "--device", "{device}"],
        ["arch", "info", "spinenet-49s", "--size", "64", "64", "--device", "{device}"],  # checked without --latency
        ["train", "--arch", "spinenet-49s", "--fidelity", "smoke", "--out", "out", "--device", "{device}"],
        ["eval", "missing.pt", "--device", "{device}"],
    ],
)
@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cuda:99", "--device cuda:99: "),  # no CUDA here, or no such device
        ("bogus", "--device 'bogus': not a device (use cpu, cuda or cuda:N)"),
        ("meta", "--device meta: meta devices are not supported"),
    ],
)
def test_a_device_this_machine_lacks_is_one_line(
    work: Path, capsys: pytest.CaptureFixture[str], argv: list[str], device: str, expected: str
) -> None:
    assert_one_line_error([a.format(device=device) for a in argv], work, capsys, expected)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--arch", "spinenet-49s", "--task", "binary.yaml"], "binary.yaml: not a UTF-8 text file (byte 0"),
        (["task", "show", "binary.yaml"], "binary.yaml: not a UTF-8 text file"),
        (["eval", "missing.pt", "--task", "binary.yaml"], "binary.yaml: not a UTF-8 text file"),
        (["search", "--config", "binary.yaml", "--out", "new"], "binary.yaml: not a UTF-8 text file"),
        (["arch", "mutate", "binary.json", "--seed", "1"], "binary.json: not a UTF-8 text file"),
    ],
)
def test_a_binary_config_task_or_spec_file_is_one_line(
    work: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert_one_line_error(argv, work, capsys, expected)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--arch", "spinenet-49s", "--fidelity", "smoke", "--out", "a_file"], "--out a_file: exists and is"),
        (["train", "--arch", "spinenet-49s", "--fidelity", "smoke", "--out", "a_file/sub"], "a_file is not a folder"),
        (["search", "--config", "search.yaml", "--out", "a_file"], "--out a_file: exists and is not a folder"),
        (["search", "--resume", "a_file"], "--resume a_file: exists and is not a folder"),
        (["report", "run", "--out", "a_file"], "--out a_file: exists and is not a folder"),
        (["report", "run", "--out", "a_file/report"], "a_file is not a folder"),
        (["export", "model.pt", "--output", "a_file/model.pt"], "--output a_file: exists and is not a folder"),
        (["export", "model.pt", "--output", "a_file/sub/model.pt"], "--output a_file/sub: "),
        (["promote", "a_file", "--fidelity", "smoke"], "a_file"),
    ],
)
def test_an_output_path_that_is_a_file_is_one_line(
    work: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert_one_line_error(argv, work, capsys, expected)


def test_show_checks_a_damaged_run_config_before_printing(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "run"]) == 0  # the intact run prints its leaderboard and best spec
    assert "best spec:" in capsys.readouterr().out
    for garbage in ("baselines: [unclosed\n  - {", "baselines: 3\n", "- a list\n"):
        (work / "run" / "config.yaml").write_text(garbage)
        assert_one_line_error(["show", "run"], work, capsys, "run/config.yaml")
    (work / "run" / "config.yaml").write_bytes(BINARY)
    assert_one_line_error(["show", "run"], work, capsys, "config.yaml: not a UTF-8 text file")


def test_main_returns_2_in_process_for_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["arch", "sample", "--seed", "abc"]) == 2  # no SystemExit
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["--help"]) == 0
    assert "usage: nas" in capsys.readouterr().out


def test_python_m_nas_cli_reports_errors_raised_by_other_modules_as_one_line(tmp_path: Path) -> None:
    # `nas report` raises the `nas.cli.CliError` it imports: under `python -m nas.cli` too.
    result = subprocess.run(
        [sys.executable, "-m", "nas.cli", "report", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"nas: error: {tmp_path / 'missing'}: no such run directory\n"


def test_memory_and_os_errors_are_one_line_but_programming_errors_are_not_hidden(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(nas.cli, "arch_info", out_of_memory)
    assert_one_line_error(["arch", "info", "spinenet-49s"], work, capsys, "out of memory")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", "out/metrics.json")

    monkeypatch.setattr(nas.cli, "arch_info", disk_full)
    assert_one_line_error(["arch", "info", "spinenet-49s"], work, capsys, "out/metrics.json: No space left on device")

    def bug(*args, **kwargs):
        return {}["missing"]

    monkeypatch.setattr(nas.cli, "arch_info", bug)
    with pytest.raises(KeyError):
        main(["arch", "info", "spinenet-49s"])


# ---------------------------------------------------------------------------------- 3. tasks and data
def test_an_image_lost_from_a_folder_dataset_is_an_error_naming_it(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (work / "data" / "train" / "images" / "img1.png").unlink()  # its mask stays
    argv = ["train", "--arch", "spinenet-49s", "--task", "folder", "--data-root", "data", "--fidelity", "smoke"]
    assert_one_line_error([*argv, "--out", "out"], work, capsys, "data/train/images/img1.*: missing image for")


def test_a_binary_class_list_is_an_error_naming_it(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "data" / "classes.txt").write_bytes(BINARY)
    argv = ["train", "--arch", "spinenet-49s", "--task", "folder", "--data-root", "data", "--fidelity", "smoke"]
    assert_one_line_error([*argv, "--out", "out"], work, capsys, "classes.txt: not a UTF-8 text file")


def test_read_only_arrays_become_tensors_without_a_warning(work: Path) -> None:
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    mask = np.ones((4, 5), dtype=np.uint8)
    image.flags.writeable = False
    mask.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about sharing a read-only array
        tensor, target = to_tensors(image, mask)
        sample, _ = EvalSet(folder(work / "data", "train"), Fidelity(resolution=0.5))[0]  # Pillow's read-only arrays
    assert tensor.shape == (3, 4, 5) and tensor.dtype == torch.float32 and target.dtype == torch.int64
    assert torch.equal(tensor, torch.from_numpy(image.copy()).permute(2, 0, 1).float())
    assert torch.equal(target, torch.ones(4, 5, dtype=torch.int64))
    tensor += 1  # the tensors own their memory
    assert image[0, 0, 0] == 0
    assert sample.shape == (3, 8, 8)
