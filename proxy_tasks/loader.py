"""Data loading: augmentation, a resumable sample order, and DataLoaders.

Training samples are augmented (random scale, pad, random crop, horizontal flip) in the loader's
worker processes. Each augmentation draws from ``numpy.random.default_rng((seed, position))``,
where ``position`` is the sample's place in the training stream, so a resumed run sees exactly the
batches the uninterrupted run would have seen, whatever the number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from .parallel import micro_batch_size
from .task import AugmentConfig, Fidelity, TaskConfig

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) * 255


def to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Float CHW image and int64 mask tensors that own their memory.

    The conversion copies: the arrays a dataset returns may be read-only (Pillow's ``np.asarray``
    of an image, a memory-mapped cache), and a tensor must not share memory it cannot write.
    """
    image_tensor = torch.from_numpy(np.array(image, dtype=np.float32, order="C")).permute(2, 0, 1)
    return image_tensor, torch.from_numpy(np.array(mask, dtype=np.int64, order="C"))


def resize(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    if tuple(image.shape[-2:]) == size:
        return image, mask
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
    return image, mask


def normalize(image: torch.Tensor) -> torch.Tensor:
    return (image - MEAN) / STD


class TrainSet(Dataset):
    """Augmented training crops; indexed by (dataset index, stream position)."""

    def __init__(self, data, fidelity: Fidelity, augment: AugmentConfig, seed: int, ignore_index: int) -> None:
        self.data = data
        self.resolution = fidelity.resolution if not getattr(data, "prescaled", False) else 1.0
        self.crop_height, self.crop_width = fidelity.crop_size
        self.augment = augment
        self.seed = seed
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, position = item
        rng = np.random.default_rng((self.seed, position))
        image, mask = to_tensors(*self.data[index])
        scale = self.resolution * rng.uniform(self.augment.scale_min, self.augment.scale_max)
        h, w = image.shape[-2:]
        image, mask = resize(image, mask, (max(1, round(h * scale)), max(1, round(w * scale))))
        image = normalize(image)
        # Pad to the crop (image with the mean, i.e. 0 after normalising; mask with ignore).
        crop_h, crop_w = self.crop_height, self.crop_width
        pad_h, pad_w = max(0, crop_h - image.shape[1]), max(0, crop_w - image.shape[2])
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top = int(rng.integers(0, image.shape[1] - crop_h + 1))
        left = int(rng.integers(0, image.shape[2] - crop_w + 1))
        image = image[:, top : top + crop_h, left : left + crop_w]
        mask = mask[top : top + crop_h, left : left + crop_w]
        if self.augment.hflip and rng.random() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image.contiguous(), mask.contiguous()


class EvalSet(Dataset):
    """Whole images at the fidelity's resolution, normalised."""

    def __init__(self, data, fidelity: Fidelity) -> None:
        self.data = data
        self.resolution = fidelity.resolution if not getattr(data, "prescaled", False) else 1.0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = to_tensors(*self.data[index])
        if self.resolution != 1.0:
            h, w = image.shape[-2:]
            image, mask = resize(image, mask, (max(1, round(h * self.resolution)), max(1, round(w * self.resolution))))
        return normalize(image), mask


class StreamSampler(Sampler):
    """An endless stream of (index, position) pairs: a fresh seeded permutation per epoch.

    ``start`` skips the first positions without touching any data, which is how a run resumes.
    """

    def __init__(self, size: int, seed: int, start: int = 0) -> None:
        self.size = size
        self.seed = seed
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.size)
            order = np.random.default_rng((self.seed, epoch)).permutation(self.size)
            for index in order[offset:]:
                yield int(index), position
                position += 1

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(loader)
        return 2**62


class ShardSampler(Sampler):
    """Worker ``rank``'s share of a `StreamSampler`: the stream cut into runs of ``world_size x
    micro_batch`` positions, of which it takes the ``rank``-th ``micro_batch``. Batched by
    ``micro_batch``, the workers' k-th batches together are the k-th run: the one-worker stream.

    ``start`` is a position where such a run begins (a step's first sample)."""

    def __init__(self, stream: StreamSampler, rank: int, world_size: int, micro_batch: int) -> None:
        self.stream = stream
        self.rank = rank
        self.world_size = world_size
        self.micro_batch = micro_batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        run = self.world_size * self.micro_batch
        for index, position in self.stream:
            if (position - self.stream.start) % run // self.micro_batch == self.rank:
                yield index, position

    def __len__(self) -> int:
        return 2**62


def default_workers(device: torch.device) -> int:
    """Loader processes: on CUDA one per spare core (at most 4); on CPU only cores that torch's own
    compute threads leave free, since a worker competing with them slows training (measured:
    0.74 of the bare loop's throughput with one worker on 2 cores, 0.99 with none)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    spare = cores - 1 if device.type == "cuda" else cores - torch.get_num_threads()
    return max(0, min(4, spare))


def train_loader(
    data,
    task: TaskConfig,
    fidelity: Fidelity,
    seed: int,
    start_sample: int,
    device: torch.device,
    shard: tuple[int, int] = (0, 1),
):
    """Micro-batches of ``batch_size / (world_size x accumulate)`` from ``start_sample`` on: all of
    them in one process, worker ``rank``'s share with ``shard=(rank, world_size)``."""
    rank, world_size = shard
    micro_batch = micro_batch_size(fidelity, world_size)
    dataset = TrainSet(data, fidelity, task.augment, seed, task.ignore_index)
    sampler = ShardSampler(StreamSampler(len(data), seed, start_sample), rank, world_size, micro_batch)
    workers = default_workers(device) if task.workers is None else task.workers
    return DataLoader(
        dataset,
        batch_size=micro_batch,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        # Its own generator: creating the iterator must not draw from the global RNG, which
        # drives dropout and is restored on resume.
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def eval_loader(data, task: TaskConfig, fidelity: Fidelity, device: torch.device):
    workers = default_workers(device) if task.workers is None else task.workers
    return DataLoader(
        EvalSet(data, fidelity),
        batch_size=task.eval_batch_size if data.fixed_size else 1,
        shuffle=False,
        generator=torch.Generator().manual_seed(0),
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
