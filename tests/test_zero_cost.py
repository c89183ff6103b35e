"""Zero-cost proxies: determinism by seed, and each score's definition checked by hand on tiny networks."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from nas.common.errors import UserError
from nas.model.builder import build_model
from proxy_tasks.task import load_task
from proxy_tasks.zero_cost import SCORES, grad_norm, naswot, score, snip, synflow
from search_spaces import get_spec
from tests.helpers import slim


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))


def _smoke_task():
    """The synthetic task whose smoke preset keeps a spec's width: `slim` already narrows it as much."""
    task = load_task("synthetic")
    smoke = replace(task.preset("smoke"), width=1.0, resample_alpha=None)
    return replace(task, fidelities={**task.fidelities, "smoke": smoke})


@pytest.mark.parametrize("name", list(SCORES))
def test_each_score_is_finite_and_the_same_for_the_same_seed(name: str) -> None:
    spec, task = slim(get_spec("spinenet-49")), _smoke_task()
    rng_before = torch.get_rng_state()
    first, again = score(spec, task, "smoke", name, seed=0), score(spec, task, "smoke", name, seed=0)
    other_seed = score(spec, task, "smoke", name, seed=1)
    assert math.isfinite(first) and first > 0
    assert first == again  # bit-identical
    if name in ("params", "flops"):
        assert other_seed == first
    else:  # other initial weights (and, but for synflow, another batch)
        assert other_seed != first
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random state is left alone


def test_an_unknown_score_is_a_one_line_user_error() -> None:
    with pytest.raises(UserError, match=r"^unknown zero-cost score 'zen' \(known: synflow, naswot, .*flops\)$"):
        score(slim(get_spec("spinenet-49")), _smoke_task(), "smoke", "zen")


def _two_layer(inputs: int, hidden: int, first: float, second: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(inputs, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, 1, bias=False))
    nn.init.constant_(net[0].weight, first)
    nn.init.constant_(net[2].weight, second)
    return net


def test_synflow_of_a_two_layer_net_is_as_computed_by_hand() -> None:
    # |weights| a, b; all-ones input of d features: R = h * d * a * b, and each layer's
    # sum of theta * dR/dtheta is R (R is linear in each layer's weights), so synflow = 2 R.
    x = torch.randn(5, 3)
    assert synflow(_two_layer(3, 4, 0.5, -2.0), x) == pytest.approx(2 * 4 * 3 * 0.5 * 2.0, rel=1e-12)
    # doubling the width doubles it; the weights' signs do not matter
    assert synflow(_two_layer(3, 8, -0.5, 2.0), x) == pytest.approx(2 * 8 * 3 * 0.5 * 2.0, rel=1e-12)


def test_synflow_ignores_the_pixels_and_leaves_the_network_as_it_was() -> None:
    torch.manual_seed(0)
    model = build_model(slim(get_spec("deeplabv3plus-resnet50")), 7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    on_noise = synflow(model, torch.randn(2, 3, 64, 64))
    on_zeros = synflow(model, torch.zeros(4, 3, 64, 64))
    assert on_noise == on_zeros and math.isfinite(on_noise) and on_noise > 0
    after = model.state_dict()
    weights = [k for k in before if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(before[k], after[k]) and after[k].dtype == torch.float32 for k in weights)


def test_naswot_kernel_by_hand_and_identical_codes_give_minus_infinity() -> None:
    relu = nn.Sequential(nn.ReLU())
    # codes (1, 0) and (1, 1): K = [[2, 1], [1, 2]] (units minus Hamming distance), det 3
    assert naswot(relu, torch.tensor([[1.0, -1.0], [2.0, 3.0]])) == pytest.approx(math.log(3), rel=1e-12)
    assert naswot(relu, torch.tensor([[1.0, -1.0], [2.0, -3.0]])) == -math.inf  # same codes: singular K
    torch.manual_seed(0)
    model = build_model(slim(get_spec("spinenet-49")), 7)
    same_image = torch.randn(1, 3, 64, 64).expand(3, -1, -1, -1).clone()
    assert naswot(model, same_image) == -math.inf
    assert math.isfinite(naswot(model, torch.randn(3, 3, 64, 64)))


def test_snip_and_grad_norm_of_a_one_pixel_classifier_are_as_computed_by_hand() -> None:
    # two classes, logits (w0 x, w1 x), label 0: dL/dw0 = x (p0 - 1) = -x p1, dL/dw1 = x p1
    conv = nn.Conv2d(1, 2, 1, bias=False)
    w0, w1, x = 0.3, -0.7, 2.0
    conv.weight.data = torch.tensor([w0, w1]).view(2, 1, 1, 1)
    images, masks = torch.full((1, 1, 1, 1), x), torch.zeros(1, 1, 1, dtype=torch.long)
    p1 = 1 / (1 + math.exp((w0 - w1) * x))
    assert snip(conv, images, masks) == pytest.approx(abs(w0 * x * p1) + abs(w1 * x * p1), rel=1e-6)
    assert grad_norm(conv, images, masks) == pytest.approx(math.sqrt(2) * abs(x) * p1, rel=1e-6)


class _Ignores(nn.Module):
    """Logits equal to the input: its weights reach the loss multiplied by zero."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0 * self.conv(x)


def test_snip_and_grad_norm_are_zero_when_the_loss_does_not_depend_on_the_weights() -> None:
    images, masks = torch.randn(2, 2, 4, 4), torch.randint(0, 2, (2, 4, 4))
    assert snip(_Ignores(), images, masks) == 0.0
    assert grad_norm(_Ignores(), images, masks) == 0.0
    assert snip(_two_layer(2, 2, 1.0, 1.0), torch.ones(1, 2), torch.zeros(1, dtype=torch.long)) == 0.0  # one class
