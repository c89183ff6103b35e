"""Task configs: which data, at which fidelity, trained how.

A task is a YAML or JSON file that maps onto `TaskConfig` (unknown keys and wrong types are
errors naming the key). Built-in tasks live in ``proxy_tasks/tasks/*.yaml``; ``nas task list``
shows them. A fidelity preset (``smoke``, ``proxy``, ``full``) sets resolution, width, schedule
and data subset: the proxy follows SpineNet's search (features x 0.25, resample alpha 0.25,
short training at reduced image size).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from nas.common.config import ConfigError, from_dict, load_file, to_dict
from search_spaces import ArchSpec
from search_spaces.spec import MAX_NAME_CHARS

from .datasets import DatasetError, SyntheticDataset, cityscapes, folder, voc
from .datasets.synthetic import SHAPES, check_shapes

TASKS_DIR = Path(__file__).parent / "tasks"


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


@dataclass(frozen=True)
class Fidelity:
    resolution: float = 1.0  # images are resized by this factor (synthetic: rendered at this size)
    crop: int = 512  # square training crop after resizing
    width: float = 1.0  # multiplies every channel count of the network (SpineNet's proxy: 0.25)
    resample_alpha: float | None = None  # overrides the spec's (SpineNet's proxy: 0.25)
    steps: int = 1000
    batch_size: int = 8
    eval_every: int = 0  # evaluate (and report, checkpoint) every N steps; 0: at the end only
    train_images: int | None = None  # use the first N training images (None: all)
    val_images: int | None = None
    lr: float | None = None  # overrides optimizer.lr
    # evaluate an exponential moving average of the weights and BN statistics with this decay
    # (None: the weights as trained); it damps the last steps' jitter in a short schedule
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        _positive(self, "resolution", "crop", "width", "steps", "batch_size")
        if self.eval_every < 0:
            raise ConfigError(f"eval_every: must be >= 0, got {self.eval_every}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay: must be in (0, 1) or null, got {self.ema_decay}")
        for name in ("train_images", "val_images", "resample_alpha", "lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name}: must be > 0 or null, got {value}")


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

    def fidelity(self, name: str) -> Fidelity:
        if name not in self.fidelities:
            raise ConfigError(f"task {self.name!r} has no fidelity {name!r} (has: {', '.join(self.fidelities)})")
        return self.fidelities[name]

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


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
    if ds.root is None:
        raise ConfigError(f"dataset.root: the {ds.kind} task needs a dataset folder (--data-root)")
    make = {"cityscapes": cityscapes, "voc": voc, "folder": folder}[ds.kind]
    train, val = make(ds.root, ds.train_split), make(ds.root, ds.val_split)
    if train.class_names != val.class_names:
        raise DatasetError(f"{ds.root}: train and val class lists differ")
    if fidelity.train_images:
        train.pairs = train.pairs[: fidelity.train_images]
    if fidelity.val_images:
        val.pairs = val.pairs[: fidelity.val_images]
    return train, val


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
