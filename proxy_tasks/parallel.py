"""Data parallelism for the trial: how one worker of several takes part in a training.

`run_trial` trains with a `DataParallel` context. The default, `SINGLE_PROCESS`, is one process
that sees the whole batch. `process_group_parallel` is one worker of a `torch.distributed` process
group (started by Ray Train in `nas.search.distributed`): it converts BatchNorm to SyncBatchNorm
on CUDA, wraps the model in DistributedDataParallel and sums over the workers.

The batch is global: ``workers x per-worker batch x accumulate = batch_size``. Worker ``r`` takes
the ``r``-th slice of every micro-batch of the one-worker stream (`loader.ShardSampler`), and the
loss is the global batch's mean over its labelled pixels, so the gradient of every step equals the
one-worker gradient up to floating-point rounding. Batch statistics are the exception: BatchNorm
normalises each worker's micro-batch by itself, unless SyncBatchNorm (CUDA only) pools them over the
workers; accumulation always normalises each micro-batch by itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nas.common.errors import UserError

from .task import Fidelity


class BatchSplitError(UserError):
    """A global batch that does not split evenly over the workers and accumulation steps."""


def _unchanged(value):
    return value


@dataclass(frozen=True)
class DataParallel:
    """One worker's part: its ``rank`` of ``world_size``; ``prepare`` turns the built model into the one
    trained (before the optimizer sees it); ``wrap`` gives the module the training loop calls (and whose
    backward synchronises gradients); ``all_reduce`` returns the sum of a tensor over the workers."""

    rank: int = 0
    world_size: int = 1
    prepare: Callable[[nn.Module], nn.Module] = _unchanged
    wrap: Callable[[nn.Module], nn.Module] = _unchanged
    all_reduce: Callable[[torch.Tensor], torch.Tensor] = _unchanged

    @property
    def chief(self) -> bool:
        """The worker that evaluates, checkpoints and measures cost (the others' models are the same)."""
        return self.rank == 0


SINGLE_PROCESS = DataParallel()


def no_sync(trained: nn.Module):
    """A context in which backward leaves the gradients unsynchronised (all but the last micro-batch of
    an accumulated step): DistributedDataParallel's ``no_sync``; nothing for a plain module."""
    return trained.no_sync() if hasattr(trained, "no_sync") else contextlib.nullcontext()


def micro_batch_size(fid: Fidelity, world_size: int) -> int:
    """The per-worker batch of one micro-step: ``batch_size / (world_size x accumulate)``."""
    parts = world_size * fid.accumulate
    if world_size < 1 or fid.batch_size % parts:
        raise BatchSplitError(
            f"batch_size {fid.batch_size} does not split into {world_size} workers x {fid.accumulate} "
            f"accumulation steps (workers x per-worker batch x accumulate must equal batch_size)"
        )
    return fid.batch_size // parts


def process_group_parallel(device: torch.device) -> DataParallel:
    """This process's part in the initialised default ``torch.distributed`` process group."""
    import torch.distributed as dist

    world_size = dist.get_world_size()

    def prepare(model: nn.Module) -> nn.Module:
        # SyncBatchNorm pools the batch statistics over the workers; torch runs it on CUDA only.
        if device.type == "cuda" and world_size > 1:
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def wrap(model: nn.Module) -> nn.Module:
        if device.type != "cuda":
            return nn.parallel.DistributedDataParallel(model)
        index = device.index if device.index is not None else torch.cuda.current_device()
        return nn.parallel.DistributedDataParallel(model, device_ids=[index])

    def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.detach().clone()
        dist.all_reduce(total)
        return total

    return DataParallel(dist.get_rank(), world_size, prepare, wrap, all_reduce)
