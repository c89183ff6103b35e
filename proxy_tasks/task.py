"""Task configs: which data, at which fidelity, trained how.

A task is a YAML or JSON file that maps onto `TaskConfig` (unknown keys and wrong types are
errors naming the key). Built-in tasks live in ``proxy_tasks/tasks/*.yaml``; ``nas task list``
shows them. A fidelity preset (``smoke``, ``proxy``, ``full``) sets resolution, width, schedule
and data subset: the proxy follows SpineNet's search (features x 0.25, resample alpha 0.25,
short training at reduced image size).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from nas.common.config import ConfigError, from_dict, load_file, to_dict
from search_spaces import ArchSpec
from search_spaces.spec import MAX_NAME_CHARS

from .datasets import DatasetError, SyntheticDataset, cityscapes, folder, voc
from .datasets.synthetic import SHAPES, check_shapes

TASKS_DIR = Path(__file__).parent / "tasks"
# The zero-cost proxies a fidelity can name (`proxy_tasks.zero_cost.SCORES` implements each).
ZeroCostName = Literal["synflow", "naswot", "grad_norm", "snip", "params", "flops"]


@dataclass(frozen=True)
class SyntheticConfig:
    image_size: int = 256  # native (full-fidelity) resolution; a fidelity's resolution scales it
    num_train: int = 1024
    num_val: int = 256
    min_objects: int = 5
    max_objects: int = 12
    seed: int = 0  # scene seed; validation scenes use seed + 1_000_003
    # which shapes are the object classes (label k = shapes[k - 1]); default: all of them
    shapes: tuple[str, ...] = SHAPES

    def __post_init__(self) -> None:
        _positive(self, "image_size", "num_train", "num_val", "min_objects")
        try:
            check_shapes(tuple(self.shapes))
        except ValueError as e:
            raise ConfigError(str(e)) from None  # already names the key
        if self.max_objects < self.min_objects:
            raise ConfigError(f"max_objects: must be >= min_objects ({self.min_objects}), got {self.max_objects}")


@dataclass(frozen=True)
class DatasetConfig:
    kind: Literal["synthetic", "cityscapes", "voc", "folder"] = "synthetic"
    root: str | None = None  # dataset folder (not used by synthetic)
    train_split: str = "train"
    val_split: str = "val"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


# Test-time scales beyond this would only run out of memory: the papers' largest is 2.
MAX_EVAL_SCALE = 4.0
# Sizes taken from the data are rounded up to a multiple of the networks' output stride.
OUTPUT_STRIDE = 32
# A median of this many training images (evenly spaced) sizes a preset: reading every header of a
# large dataset at each trial start would cost seconds and move the median by a pixel or two.
SIZED_FROM_IMAGES = 256


@dataclass(frozen=True)
class FromData:
    """A size taken from the training images: the ``median`` (or ``max``) of their longer sides,
    at most ``max_side`` pixels. As a crop: that side after ``resolution``, rounded up to a multiple
    of 32; as a resolution: the factor (at most 1) that brings that side down to ``max_side``."""

    side: Literal["median", "max"] = "median"
    max_side: int = 512

    def __post_init__(self) -> None:
        _positive(self, "max_side")


@dataclass(frozen=True)
class Fidelity:
    # Resolution and crop are a number or a size taken from the data (a `FromData` mapping, or
    # ``auto`` for its defaults). Typed Any for the config reader and parsed in __post_init__, so
    # that a wrong value's message says what either form expects.
    resolution: Any = 1.0  # images are resized by this factor (synthetic: rendered at this size)
    crop: Any = 512  # training crop after resizing: a square's side, or [height, width]
    width: float = 1.0  # multiplies every channel count of the network (SpineNet's proxy: 0.25)
    resample_alpha: float | None = None  # overrides the spec's (SpineNet's proxy: 0.25)
    # The schedule: ``steps`` (default 1000), or ``epochs`` (passes over the training images), which
    # the task turns into steps from the training set's size: epochs x (images // batch_size), the
    # published recipes' own conversion. The warm-up (linear, then the poly decay) likewise.
    steps: int | None = None
    epochs: float | None = None
    warmup_steps: int | None = None  # overrides optimizer.warmup_steps
    warmup_epochs: float | None = None
    batch_size: int = 8  # the global batch of one optimizer step: workers x per-worker batch x accumulate
    accumulate: int = 1  # micro-batches whose gradients add up to one step (the batch is split into this many)
    eval_every: int = 0  # evaluate (and report, checkpoint) every N steps; 0: at the end only
    # Evaluation runs on whole validation images at the fidelity's resolution; ``eval_window``
    # ([height, width] or a side) evaluates larger images in overlapping windows instead (their
    # logits averaged), for when a whole image does not fit in memory.
    eval_window: Any = None
    eval_overlap: float = 1 / 3  # share of a window that overlaps its neighbour
    # Test-time augmentation, evaluated once after training and reported apart (``miou_ms``):
    # softmax averaged over these input scales, and over left-right flips with ``eval_flip``.
    eval_scales: tuple[float, ...] = ()
    eval_flip: bool = False
    train_images: int | None = None  # use the first N training images (None: all)
    val_images: int | None = None
    lr: float | None = None  # overrides optimizer.lr
    # evaluate an exponential moving average of the weights and BN statistics with this decay
    # (None: the weights as trained); it damps the last steps' jitter in a short schedule
    ema_decay: float | None = None
    # a training-free fidelity: score the network at initialisation with this zero-cost proxy
    # (`proxy_tasks.zero_cost`) on the first mini-batch instead of training it; steps are not used
    zero_cost: ZeroCostName | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolution", _size("resolution", self.resolution, float))
        object.__setattr__(self, "crop", _size("crop", self.crop, int))
        object.__setattr__(self, "eval_window", _window(self.eval_window))
        _positive(self, *(n for n in ("resolution", "crop") if isinstance(getattr(self, n), (int, float))))
        self._check_schedule()
        _positive(self, "width", "batch_size", "accumulate", *(("steps",) if self.steps is not None else ()))
        if self.batch_size % self.accumulate:
            raise ConfigError(
                f"accumulate: batch_size {self.batch_size} does not split into {self.accumulate} micro-batches"
            )
        if self.eval_every < 0:
            raise ConfigError(f"eval_every: must be >= 0, got {self.eval_every}")
        self._check_evaluation()
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay: must be in (0, 1) or null, got {self.ema_decay}")
        for name in ("train_images", "val_images", "resample_alpha", "lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name}: must be > 0 or null, got {value}")

    def _check_schedule(self) -> None:
        for steps, epochs in (("steps", "epochs"), ("warmup_steps", "warmup_epochs")):
            if getattr(self, steps) is not None and getattr(self, epochs) is not None:
                raise ConfigError(f"{epochs}: give {steps} or {epochs}, not both")
        if self.steps is None and self.epochs is None:
            object.__setattr__(self, "steps", 1000)
        for name in ("epochs", "warmup_epochs"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: must be > 0 or null, got {value}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps: must be >= 0 or null, got {self.warmup_steps}")

    def _check_evaluation(self) -> None:
        object.__setattr__(self, "eval_scales", tuple(self.eval_scales))
        if not 0 <= self.eval_overlap < 1:
            raise ConfigError(f"eval_overlap: must be in [0, 1), got {self.eval_overlap}")
        for scale in self.eval_scales:
            if not (math.isfinite(scale) and 0 < scale <= MAX_EVAL_SCALE):
                raise ConfigError(f"eval_scales: each scale must be in (0, {MAX_EVAL_SCALE}], got {scale}")
        if len(set(self.eval_scales)) != len(self.eval_scales):
            raise ConfigError(f"eval_scales: must be distinct, got {list(self.eval_scales)}")

    @property
    def crop_size(self) -> tuple[int, int]:
        """The training crop as (height, width); a preset whose crop is taken from the data must be sized first."""
        if isinstance(self.crop, FromData):
            raise ValueError("crop is taken from the training images: size the preset first (TaskConfig.fidelity)")
        return (self.crop, self.crop) if isinstance(self.crop, int) else self.crop

    @property
    def augmented_evaluation(self) -> bool:
        """Whether a test-time-augmented evaluation (scales, flips) follows the training."""
        return bool(self.eval_scales) or self.eval_flip

    def by_epochs(self) -> bool:
        """Whether the schedule is written in epochs (steps follow from the training set's size)."""
        return self.epochs is not None or self.warmup_epochs is not None

    def scheduled(self, images: int) -> Fidelity:
        """This preset with ``epochs`` and ``warmup_epochs`` turned into steps for ``images`` training
        images: an epoch is images // batch_size steps (at least one), as in TF Model Garden's recipes."""
        per_epoch = max(1, images // self.batch_size)
        steps = self.steps if self.epochs is None else max(1, round(self.epochs * per_epoch))
        warmup = self.warmup_steps if self.warmup_epochs is None else round(self.warmup_epochs * per_epoch)
        return replace(self, steps=steps, epochs=None, warmup_steps=warmup, warmup_epochs=None)

    def from_data(self, name: str = "") -> bool:
        """Whether field ``name`` (any field, when not given) is taken from the training images."""
        names = (name,) if name else ("resolution", "crop")
        return any(isinstance(getattr(self, n), FromData) for n in names)

    def sized(self, longer_sides: list[int]) -> Fidelity:
        """This preset with its sizes taken from the training images' ``longer_sides`` (see `FromData`)."""
        resolution, crop = self.resolution, self.crop
        if isinstance(resolution, FromData):
            resolution = min(1.0, resolution.max_side / _statistic(longer_sides, resolution.side))
        if isinstance(crop, FromData):
            side = _statistic(longer_sides, crop.side) * resolution
            crop = min(crop.max_side, max(OUTPUT_STRIDE, math.ceil(side / OUTPUT_STRIDE) * OUTPUT_STRIDE))
        return replace(self, resolution=resolution, crop=crop)


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    poly_power: float = 0.9  # DeepLab's poly schedule: lr * (1 - step / steps) ** power
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _positive(self, "lr")
        for name in ("weight_decay", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class AugmentConfig:
    scale_min: float = 0.5
    scale_max: float = 2.0
    hflip: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.scale_min <= self.scale_max:
            raise ConfigError(f"scale_min: [{self.scale_min}, {self.scale_max}] is not a valid scale range")


@dataclass(frozen=True)
class TaskConfig:
    name: str
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    fidelities: dict[str, Fidelity] = field(default_factory=dict)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16 autocast on CUDA only
    channels_last: bool | None = None  # None: on CUDA only
    compile: bool = False
    ignore_index: int = 255
    seed: int = 0
    workers: int | None = None  # data-loader processes; None: the spare cores, at most 4 (see loader)
    eval_batch_size: int = 8

    def __post_init__(self) -> None:
        # The name goes into default output folders and one-line messages.
        if not self.name or len(self.name) > MAX_NAME_CHARS or not self.name.isprintable():
            shown = self.name if len(self.name) <= 40 else self.name[:37] + "..."
            raise ConfigError(f"name: {shown!r} is not 1 to {MAX_NAME_CHARS} printable characters")
        if not self.fidelities:
            raise ConfigError("fidelities: at least one preset (smoke, proxy, full) is needed")

    def preset(self, name: str) -> Fidelity:
        """The fidelity ``name`` as written (sizes taken from the data not yet known)."""
        if name not in self.fidelities:
            raise ConfigError(f"task {self.name!r} has no fidelity {name!r} (has: {', '.join(self.fidelities)})")
        return self.fidelities[name]

    def fidelity(self, name: str) -> Fidelity:
        """The fidelity ``name`` ready to train: sizes taken from the data are read from the training
        images, and a schedule in epochs becomes steps from the number of training images."""
        preset = self.preset(name)
        if preset.from_data():
            preset = preset.sized(training_sides(self, preset))
        if preset.by_epochs():
            preset = preset.scheduled(training_count(self, preset))
        return preset

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def applicable_dict(self) -> dict[str, Any]:
        """`to_dict` without the settings this task's dataset does not use (what `nas task show` prints)."""
        data = self.to_dict()
        if self.dataset.kind == "synthetic":
            for unused in ("root", "train_split", "val_split"):
                del data["dataset"][unused]
        else:
            del data["dataset"]["synthetic"]
        return data


def _size(name: str, value: Any, number: type[int] | type[float]) -> int | float | tuple[int, int] | FromData:
    """``value`` of field ``name``: a number of type ``number``, ``auto`` or a `FromData` mapping;
    for integers (the crop) also ``[height, width]``."""
    if isinstance(value, str) and value == "auto":
        return FromData()
    if isinstance(value, FromData):
        return value
    if isinstance(value, Mapping):
        return from_dict(FromData, value, name)
    if number is int and isinstance(value, (list, tuple)):
        return _height_width(name, value)
    expected = "an integer" if number is int else "a number"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or (number is int and not isinstance(value, int)):
        others = "auto, or {side: median|max, max_side: N}" + (", or [height, width]" if number is int else "")
        raise ConfigError(f"{name}: expected {expected}, got {_shown(value)} (or {others})")
    return number(value)


def _window(value: Any) -> tuple[int, int] | None:
    """``eval_window``: null, a side, or [height, width] (a side is a square window)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return _height_width("eval_window", value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return (value, value)
    raise ConfigError(f"eval_window: expected null, a positive integer or [height, width], got {_shown(value)}")


def _height_width(name: str, value: list | tuple) -> tuple[int, int]:
    if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ConfigError(f"{name}: expected [height, width] of two positive integers, got {_shown(value)}")
    return (int(value[0]), int(value[1]))


def _shown(value: Any) -> str:
    try:
        shown = json.dumps(value) if isinstance(value, (str, int, float, list, tuple)) else type(value).__name__
    except (TypeError, ValueError):
        shown = type(value).__name__
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(f"{name}: must be > 0, got {value}")


# ------------------------------------------------------------------------------------ loading
def builtin_tasks() -> dict[str, Path]:
    return {p.stem: p for p in sorted(TASKS_DIR.glob("*.yaml"))}


def load_task(ref: str | Path, data_root: str | None = None) -> TaskConfig:
    """A task by built-in name or from a YAML/JSON file; ``data_root`` overrides dataset.root."""
    path = builtin_tasks().get(str(ref)) or Path(ref)
    if not path.is_file():
        raise ConfigError(f"unknown task {str(ref)!r}: not a built-in task ({', '.join(builtin_tasks())}) nor a file")
    data = load_file(path)
    try:
        task = from_dict(TaskConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if data_root is not None:
        task = replace(task, dataset=replace(task.dataset, root=data_root))
    return task


def task_from_dict(data: dict[str, Any]) -> TaskConfig:
    return from_dict(TaskConfig, data)


# ------------------------------------------------------------------------------------ data
def build_datasets(task: TaskConfig, fidelity: Fidelity):
    """(train, val) datasets for ``task`` at ``fidelity`` (subsets applied)."""
    ds = task.dataset
    if ds.kind == "synthetic":
        s = ds.synthetic
        size = max(16, round(s.image_size * fidelity.resolution))
        n_train = min(s.num_train, fidelity.train_images or s.num_train)
        n_val = min(s.num_val, fidelity.val_images or s.num_val)
        shapes = tuple(s.shapes)
        train = SyntheticDataset(n_train, size, s.seed, s.min_objects, s.max_objects, shapes)
        val = SyntheticDataset(n_val, size, s.seed + 1_000_003, s.min_objects, s.max_objects, shapes)
        return train, val
    train, val = _file_dataset(task, ds.train_split), _file_dataset(task, ds.val_split)
    if train.class_names != val.class_names:
        raise DatasetError(f"{ds.root}: train and val class lists differ")
    if fidelity.train_images:
        train.pairs = train.pairs[: fidelity.train_images]
    if fidelity.val_images:
        val.pairs = val.pairs[: fidelity.val_images]
    return train, val


def _file_dataset(task: TaskConfig, split: str):
    ds = task.dataset
    if ds.root is None:
        raise ConfigError(f"dataset.root: the {ds.kind} task needs a dataset folder (--data-root)")
    make = {"cityscapes": cityscapes, "voc": voc, "folder": folder}[ds.kind]
    return make(ds.root, split)


def training_sides(task: TaskConfig, fidelity: Fidelity) -> list[int]:
    """The longer side of the training images ``fidelity`` trains on, at native resolution (for a
    large training set, those of `SIZED_FROM_IMAGES` evenly spaced images unless a preset takes the max)."""
    if task.dataset.kind == "synthetic":
        return [task.dataset.synthetic.image_size]
    train = _file_dataset(task, task.dataset.train_split)
    if fidelity.train_images:
        train.pairs = train.pairs[: fidelity.train_images]
    takes_max = any(isinstance(v, FromData) and v.side == "max" for v in (fidelity.resolution, fidelity.crop))
    return train.longer_sides(None if takes_max else SIZED_FROM_IMAGES)


def class_count(task: TaskConfig) -> int:
    """How many classes ``task`` predicts, without generating or reading any image."""
    if task.dataset.kind == "synthetic":
        return 1 + len(task.dataset.synthetic.shapes)  # background and one class per shape
    return _file_dataset(task, task.dataset.train_split).num_classes


def training_count(task: TaskConfig, fidelity: Fidelity) -> int:
    """How many training images ``fidelity`` trains on (indexing a dataset folder reads no image)."""
    if task.dataset.kind == "synthetic":
        return min(task.dataset.synthetic.num_train, fidelity.train_images or task.dataset.synthetic.num_train)
    count = len(_file_dataset(task, task.dataset.train_split))
    return min(count, fidelity.train_images) if fidelity.train_images else count


def _statistic(values: list[int], name: str) -> float:
    return float(max(values)) if name == "max" else float(statistics.median(values))


# ------------------------------------------------------------------------------------ model
def scale_spec(spec: ArchSpec, fidelity: Fidelity) -> ArchSpec:
    """``spec`` at the fidelity's width: every channel count x width, resample alpha overridden."""
    if fidelity.width == 1.0 and fidelity.resample_alpha is None:
        return spec
    w = fidelity.width
    scaling = replace(
        spec.scaling,
        filter_size_scale=spec.scaling.filter_size_scale * w,
        resample_alpha=fidelity.resample_alpha or spec.scaling.resample_alpha,
        endpoint_channels=None
        if spec.scaling.endpoint_channels is None
        else max(8, round(spec.scaling.endpoint_channels * w)),
    )
    head = replace(
        spec.head,
        aspp_channels=max(8, round(spec.head.aspp_channels * w)),
        decoder_channels=max(4, round(spec.head.decoder_channels * w)),
    )
    return replace(spec, scaling=scaling, head=head, stem_channels=max(8, round(spec.stem_channels * w)))
