"""The builder: exact parameter parity with the published networks, shapes, dilation, speed paths."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from nas.model import build_backbone, build_model, create_model
from nas.model.builder import ChainNode, FuseNode
from nas.model.cost import count_params
from search_spaces import ArchSpec, Block, Head, SearchSpace, get_spec, published_names, sample, spinenet
from tests.helpers import slim

# Trainable parameters of TF Model Garden's SpineNet backbone (tf-models-official 2.15.0, built with
# input 640x640 and max_level 7), measured side by side in a scratch environment.
TF_SPINENET_PARAMS = {
    ("49s", 3): 9_089_215,
    ("49", 3): 21_831_488,
    ("96", 3): 36_262_976,
    ("143", 3): 60_247_616,
    ("143l", 3): 100_796_257,
    ("190", 3): 126_587_664,
    ("49s", 2): 9_167_206,
    ("49", 2): 22_034_688,
    ("96", 2): 36_536_576,
    ("143", 2): 60_657_344,
    ("143l", 2): 101_458_362,
    ("190", 2): 127_453_382,
}


@pytest.mark.parametrize(("size", "min_level"), list(TF_SPINENET_PARAMS))
def test_spinenet_backbone_parameters_equal_tf_model_garden(size: str, min_level: int) -> None:
    with torch.device("meta"):  # count without allocating 100M+ parameters
        backbone = build_backbone(spinenet(size, min_level=min_level))
    assert count_params(backbone) == TF_SPINENET_PARAMS[(size, min_level)]


def test_deeplabv3_resnet50_has_the_standard_parameter_count() -> None:
    with torch.device("meta"):
        model = build_model(get_spec("deeplabv3-resnet50"), 21)
        os8 = build_model(get_spec("deeplabv3-resnet50-os8"), 21)
        r101 = build_model(get_spec("deeplabv3-resnet101"), 21)
    assert count_params(model) == 39_638_869
    assert count_params(model.backbone) == 23_508_032  # torchvision's ResNet-50 without its fc layer
    assert count_params(os8) == 39_638_869  # dilation changes no parameter
    assert count_params(r101) == 58_630_997


def test_built_deeplabv3_resnet50_computes_exactly_the_hand_written_network() -> None:
    from handwritten_deeplab import DeepLabV3ResNet50

    built = create_model("deeplabv3-resnet50", 21).eval()
    reference = DeepLabV3ResNet50(21).eval()
    ours, theirs = built.state_dict(), reference.state_dict()
    assert [v.shape for v in ours.values()] == [v.shape for v in theirs.values()]
    reference.load_state_dict(dict(zip(theirs, ours.values())))
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        torch.testing.assert_close(built(x), reference(x), rtol=0, atol=0)


def test_dead_blocks_are_not_built() -> None:
    spec = get_spec("spinenet-49")
    backbone = build_backbone(slim(spec))
    assert len(backbone.nodes) == 17 == len(spec.live)
    assert 17 not in spec.live  # the level-2 output block: TF prunes it too
    absorbing = backbone.nodes[14]
    assert isinstance(absorbing, FuseNode) and len(absorbing.absorbed) == 1


def test_specs_with_one_network_hash_build_one_network() -> None:
    # Mutations that touch dead genes only (about 5 % of them) leave the network hash alone: the
    # two specs must then build the same modules and compute exactly the same function.
    from search_spaces.mutations import mutate

    twins = []
    for seed in range(40):
        parent = sample(SearchSpace(), seed)
        for k in range(5):
            child, _ = mutate(parent, None, 10 * seed + k)
            if child.hash != parent.hash and child.network_hash == parent.network_hash:
                twins.append((parent, child))
    assert len(twins) >= 4
    x = torch.randn(1, 3, 48, 40)
    for parent, child in twins[:4]:
        outputs = []
        for spec in (parent, child):
            torch.manual_seed(0)
            outputs.append(build_model(slim(spec), 5).eval()(x))
        assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("name", published_names())
def test_published_models_give_logits_at_odd_input_sizes(name: str) -> None:
    spec = slim(get_spec(name))
    model = build_model(spec, 5).eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        assert model(x).shape == (1, 5, 97, 131)
        features = model.backbone(x)
    assert sorted(features) == sorted(spec.endpoints)
    for level, feature in features.items():
        assert feature.shape[-2:] == (math.ceil(97 / 2**level), math.ceil(131 / 2**level))


@pytest.mark.parametrize("kind", ["deeplabv3", "deeplabv3plus"])
def test_sampled_models_train_at_odd_sizes(kind: str) -> None:
    space = SearchSpace(head=Head(kind=kind, level=4))
    for seed in range(3):
        model = build_model(slim(sample(space, seed)), 3)
        x, y = torch.randn(2, 3, 61, 45), torch.randint(0, 3, (2, 61, 45))
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None for p in model.parameters())


def _chain_spec(dilation: int) -> ArchSpec:
    blocks = [Block(level=2, type="residual", width=8, parents=(-1,))]
    blocks += [Block(level=3, type="residual", width=8, parents=(i,)) for i in range(3)]
    blocks = [replace(b, dilation=dilation) if i >= 2 else b for i, b in enumerate(blocks)]
    blocks[-1] = replace(blocks[-1], output=True)
    return ArchSpec(blocks=tuple(blocks), head=Head(level=3, aspp_channels=8), stem_channels=8)


def _receptive_field(spec: ArchSpec) -> tuple[tuple[int, int], int]:
    backbone = build_backbone(spec).eval()
    x = torch.rand(1, 3, 320, 320, requires_grad=True)
    feature = backbone(x)[3]
    h, w = feature.shape[-2:]
    feature[0, :, h // 2, w // 2].sum().backward()
    rows = (x.grad.abs().sum(dim=(0, 1, 3)) > 0).nonzero()
    return (h, w), int(rows.max() - rows.min() + 1)


def test_dilation_keeps_resolution_and_grows_the_receptive_field() -> None:
    size1, field1 = _receptive_field(_chain_spec(1))
    size4, field4 = _receptive_field(_chain_spec(4))
    assert size1 == size4 == (40, 40)
    # Blocks 2 and 3 are two residual blocks = four 3x3 convs at stride 8; rate 4 instead of 1 widens
    # each by 2 x (4 - 1) steps of 8 px: 4 x 2 x 3 x 8 = 192 px more.
    assert field1 == 115
    assert field4 - field1 == 192
    conv = build_backbone(_chain_spec(4)).nodes[2].body[0].conv1[0]
    assert conv.dilation == (4, 4) and conv.padding == (4, 4)


def test_channels_last_gives_the_same_output() -> None:
    spec = slim(get_spec("spinenet-49"))
    model = build_model(spec, 4).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)


def test_torch_compile_matches_eager() -> None:
    blocks = (
        Block(level=2, type="bottleneck", width=8),
        Block(level=3, type="residual", width=16, parents=(0,)),
        Block(level=4, type="residual", width=16, parents=(0, 1), connection="fuse", dilation=2, output=True),
        Block(level=3, type="bottleneck", width=8, parents=(1, 2), connection="fuse", output=True),
    )
    spec = ArchSpec(
        blocks=blocks,
        scaling=replace(get_spec("spinenet-49").scaling, endpoint_channels=16),
        head=Head(kind="deeplabv3plus", level=3, aspp_channels=16, decoder_channels=8),
        stem_channels=8,
    )
    model = build_model(spec, 3).eval()
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_chain_nodes_stride_once_and_project() -> None:
    backbone = build_backbone(get_spec("deeplabv3-resnet50"))
    first_of_stage2 = backbone.nodes[3]
    assert isinstance(first_of_stage2, ChainNode)
    bottleneck = first_of_stage2.body[0]
    assert bottleneck.conv2[0].stride == (2, 2) and bottleneck.shortcut[0].stride == (2, 2)
    assert isinstance(backbone.nodes[4].body[0].shortcut, torch.nn.Identity)


def test_build_model_rejects_bad_class_counts() -> None:
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        build_model(get_spec("deeplabv3-resnet50"), 0)
