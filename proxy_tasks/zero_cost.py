"""Zero-cost proxies: training-free scores that rank architectures from their initial weights.

`score(spec, task, fidelity, name, seed)` builds the network exactly as a trial with that seed
starts it (`proxy_tasks.trial`: seed, data, then `build_model` at the fidelity's width) and scores
it on the first mini-batch that trial would train on (the same augmented crops), so a score is a
pure function of its arguments. Higher is meant to be better for every score.

The scores, each written from its paper's definition:

``synflow``    Tanaka et al. 2020, as a proxy in Abdelfattah et al. 2021: every weight made positive,
               an all-ones input, R = sum of the outputs, score = sum |theta * dR/dtheta| over the
               convolution and linear weights (the connections a pruner removes). Data-free. Run in
               double precision: on an all-positive net R grows by a factor per layer and overflows
               float32 in a deep network. BatchNorm runs in eval mode, with the freshly initialised
               statistics (mean 0, variance 1, gamma 1, beta 0) it is the identity up to 1/sqrt(1 + eps):
               this is disabling BN as Abdelfattah et al. do for synflow. In training mode BN would
               re-centre each channel and cancel the all-ones signal the score measures. Dropout is off too.
``naswot``     Mellor et al. 2021: each image's binary code is whether every ReLU output is positive
               (hooks on the nn.ReLU modules, every pixel of every channel, flattened per image);
               K[i, j] = number of units minus the Hamming distance of codes i and j; score = log|det K|.
               Two identical codes make K singular: the score is then -inf, the lowest possible.
``grad_norm``  sum over the convolution and linear weights of the L2 norm of dL/dtheta, with L the
               cross-entropy of the mini-batch (BN with batch statistics, as the first training step; no dropout).
``snip``       Lee et al. 2019: sum |dL/dtheta * theta| over the same weights and the same loss.
``params``     trainable parameters (`nas.model.cost.count_params`), a baseline.
``flops``      forward FLOPs of one crop (`nas.model.cost.count_flops`), a baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from nas.common.errors import UserError
from nas.model.builder import build_model
from nas.model.cost import count_flops, count_params
from search_spaces import ArchSpec

from .loader import StreamSampler, TrainSet
from .task import Fidelity, TaskConfig, ZeroCostName, build_datasets, scale_spec

# A score takes the freshly built network, a training mini-batch (images, masks) and the label
# ignored in the loss.
Score = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], float]


class UnknownScoreError(UserError):
    """A zero-cost score name that is not in `SCORES`."""


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """The convolution and linear weights: the connections the pruning papers score."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _batch_statistics(model: nn.Module) -> None:
    """Training mode (BN normalises with the batch's statistics, as the first step does) without
    dropout, which would only add noise to a one-batch score (and make identical images' codes differ)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()


def _loss_gradients(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, ignore_index: int) -> None:
    """Back-propagate the mini-batch's cross-entropy into the weights' ``.grad``."""
    _batch_statistics(model)
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), masks, ignore_index=ignore_index)
    loss.backward()


def grad_norm(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, ignore_index: int = 255) -> float:
    _loss_gradients(model, images, masks, ignore_index)
    return sum(float(w.grad.norm()) for w in _weights(model) if w.grad is not None)


def snip(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, ignore_index: int = 255) -> float:
    _loss_gradients(model, images, masks, ignore_index)
    return sum(float((w.grad * w.detach()).abs().sum()) for w in _weights(model) if w.grad is not None)


def synflow(
    model: nn.Module, images: torch.Tensor, masks: torch.Tensor | None = None, ignore_index: int = 255
) -> float:
    """Only the batch's shape is used: the input is all ones (see the module docstring)."""
    dtype = next(model.parameters()).dtype
    model.double().eval()
    signs = [p.detach().sign() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad(set_to_none=True)
    ones = torch.ones(1, *images.shape[1:], dtype=torch.float64, device=images.device)
    model(ones).sum().backward()
    total = sum(float((w.grad * w.detach()).abs().sum()) for w in _weights(model) if w.grad is not None)
    with torch.no_grad():
        for p, sign in zip(model.parameters(), signs):
            p.mul_(sign)
    model.zero_grad(set_to_none=True)
    model.to(dtype)
    return total


def naswot(model: nn.Module, images: torch.Tensor, masks: torch.Tensor | None = None, ignore_index: int = 255) -> float:
    """log|det K| of the ReLU codes' kernel; -inf when K is singular (e.g. two identical codes)."""
    n = images.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=images.device)

    def add_codes(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        # Read at once: an in-place ReLU's output may be overwritten by a later in-place op.
        codes = (output.detach() > 0).flatten(1).to(torch.float64)
        kernel.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)  # agreements = units - Hamming distance

    hooks = [m.register_forward_hook(add_codes) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        _batch_statistics(model)
        with torch.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return kernel_log_det(kernel)


def kernel_log_det(kernel: torch.Tensor) -> float:
    """log|det kernel|, -inf for a singular kernel (slogdet's sign 0)."""
    sign, log_abs = torch.linalg.slogdet(kernel.to(torch.float64))
    return -math.inf if float(sign) == 0 else float(log_abs)


def params(model: nn.Module, images: torch.Tensor, masks: torch.Tensor | None = None, ignore_index: int = 255) -> float:
    return float(count_params(model))


def flops(model: nn.Module, images: torch.Tensor, masks: torch.Tensor | None = None, ignore_index: int = 255) -> float:
    return float(count_flops(model, tuple(images.shape[-2:])))


SCORES: dict[str, Score] = {
    "synflow": synflow,
    "naswot": naswot,
    "grad_norm": grad_norm,
    "snip": snip,
    "params": params,
    "flops": flops,
}


assert set(SCORES) == set(get_args(ZeroCostName)), "a fidelity's zero_cost names exactly these scores"


def check_name(name: str) -> None:
    if name not in SCORES:
        raise UnknownScoreError(f"unknown zero-cost score {name!r} (known: {', '.join(SCORES)})")


def first_batch(train, task: TaskConfig, fid: Fidelity, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first mini-batch a trial with ``seed`` trains on at ``fid`` (built without worker processes)."""
    crops = TrainSet(train, fid, task.augment, seed, task.ignore_index)
    positions = iter(StreamSampler(len(train), seed))
    pairs = [crops[next(positions)] for _ in range(fid.batch_size)]  # the stream wraps round a small set
    return torch.stack([image for image, _ in pairs]), torch.stack([mask for _, mask in pairs])


def score(
    spec: ArchSpec,
    task: TaskConfig,
    fidelity: str,
    name: str,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> float:
    """Zero-cost score ``name`` of ``spec`` built as a ``task`` trial at ``fidelity`` with ``seed`` starts."""
    check_name(name)
    device = torch.device(device)
    fid = task.fidelity(fidelity)
    # The trial's order (seed, datasets, model) gives the trial's initial weights; the caller's random
    # state is left as it was.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        train, _ = build_datasets(task, fid)
        model = build_model(scale_spec(spec, fid), train.num_classes).to(device)
        images, masks = first_batch(train, task, fid, seed)
        value = SCORES[name](model, images.to(device), masks.to(device), task.ignore_index)
    return float(value)
