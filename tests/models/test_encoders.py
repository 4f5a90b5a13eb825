"""Encoders and heads: shapes, stems, 2-D and 3-D."""

from __future__ import annotations

import pytest
import torch

from medcl.models import EncoderSpec, PredictorHead, ProjectionHead, build_encoder, encoder_dim


def _encoder(name: str = "resnet10", spatial_dims: int = 2, image_size: int = 64, **kw):
    return build_encoder(EncoderSpec(name, spatial_dims, image_size, **kw))


@pytest.mark.parametrize(
    ("name", "dim"), [("resnet10", 512), ("resnet18", 512), ("resnet50", 2048)]
)
def test_encoder_2d_shapes(name, dim):
    enc = _encoder(name, spatial_dims=2, image_size=32).eval()
    out = enc(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, dim) == (2, encoder_dim(name))
    assert enc.out_dim == dim


def test_encoder_3d_shape():
    enc = _encoder("resnet10", spatial_dims=3, image_size=16).eval()
    assert enc(torch.randn(2, 1, 16, 16, 16)).shape == (2, 512)


def test_small_stem_keeps_resolution():
    small = _encoder("resnet10", stem="small")
    std = _encoder("resnet10", stem="standard")
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (2, 2)
    assert std.conv1.kernel_size == (7, 7)
    assert small.no_max_pool and not std.no_max_pool
    # the auto stem picks small below 128 px
    assert _encoder("resnet10", image_size=64).conv1.kernel_size == (3, 3)
    assert _encoder("resnet10", image_size=224).conv1.kernel_size == (7, 7)


def test_width_multiplier():
    enc = _encoder("resnet10", width=0.5).eval()
    assert enc(torch.randn(2, 1, 32, 32)).shape == (2, 256) and enc.out_dim == encoder_dim(
        "resnet10", 0.5
    )


def test_heads():
    proj = ProjectionHead(512, 64, 16).eval()
    pred = PredictorHead(16, 32).eval()
    z = proj(torch.randn(4, 512))
    assert z.shape == (4, 16) and pred(z).shape == (4, 16)


def test_bad_encoder_name():
    with pytest.raises(ValueError, match="unknown encoder"):
        _encoder("vgg")


def test_avgmax_pool_doubles_features_and_sees_a_single_hot_pixel():
    enc = _encoder("resnet10", width=0.125, pool="avgmax").eval()
    assert enc.out_dim == 2 * encoder_dim("resnet10", 0.125)
    from medcl.models.encoders import AvgMaxPool

    x = torch.zeros(1, 3, 8, 8)
    x[0, 1, 2, 5] = 64.0
    out = AvgMaxPool()(x).flatten()
    assert torch.allclose(out, torch.tensor([0.0, 1.0, 0.0, 0.0, 64.0, 0.0]))


# Blocks per stage in He et al. 2016, Table 1 (ResNet-10: one basic block per stage).
PAPER_LAYERS = {
    "resnet10": ("basic", [1, 1, 1, 1]),
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
}
# torchvision's published parameter counts (3 input channels, 1000-class fc layer)
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


def _expected_params(
    name: str, dims: int, stem: int, in_channels: int = 1, fc: int = 0, shortcut_bias: bool = True
) -> int:
    """Parameters of a ResNet counted from its layer table: bias-free convolutions, BatchNorm
    (2 per channel), 1×1 projection shortcuts where the shape changes (with a bias, as in MONAI's
    default ``bias_downsample=True``; torchvision's have none), and an optional ``fc``-class
    linear layer."""
    block, layers = PAPER_LAYERS[name]
    k3, expansion = 3**dims, 4 if block == "bottleneck" else 1
    total = in_channels * 64 * stem**dims + 2 * 64
    c_in = 64
    for planes, n in zip([64, 128, 256, 512], layers, strict=True):
        for i in range(n):
            c_out = planes * expansion
            if block == "basic":
                total += c_in * planes * k3 + 2 * planes + planes * planes * k3 + 2 * planes
            else:
                total += c_in * planes + 2 * planes + planes * planes * k3 + 2 * planes
                total += planes * c_out + 2 * c_out
            if i == 0 and (c_in != c_out or planes != 64):
                total += c_in * c_out + 2 * c_out + (c_out if shortcut_bias else 0)
            c_in = c_out
    return total + (c_in * fc + fc if fc else 0)


def test_the_layer_table_reproduces_torchvision_counts():
    """The reference counter itself, checked against published figures."""
    for name, count in TORCHVISION_PARAMS.items():
        assert _expected_params(name, 2, 7, 3, fc=1000, shortcut_bias=False) == count, name


@pytest.mark.parametrize("name", list(PAPER_LAYERS))
@pytest.mark.parametrize("dims", [2, 3])
def test_architecture_matches_the_layer_table(name, dims):
    """Blocks per stage and the parameter count, so that a wrong layer list (ResNet-10 built as
    ResNet-18: the same 512 features) fails."""
    enc = build_encoder(EncoderSpec(name, dims, 224, stem="standard"))
    block, layers = PAPER_LAYERS[name]
    assert [len(getattr(enc, f"layer{i}")) for i in range(1, 5)] == layers
    assert all(
        type(b).__name__ == ("ResNetBlock" if block == "basic" else "ResNetBottleneck")
        for i in range(1, 5)
        for b in getattr(enc, f"layer{i}")
    )
    assert sum(p.numel() for p in enc.parameters()) == _expected_params(name, dims, 7)


def test_resnet10_and_resnet18_differ():
    counts = {n: sum(p.numel() for p in _encoder(n).parameters()) for n in ("resnet10", "resnet18")}
    assert counts["resnet18"] - counts["resnet10"] == _expected_params(
        "resnet18", 2, 3
    ) - _expected_params("resnet10", 2, 3)
    assert counts["resnet10"] < counts["resnet18"]
