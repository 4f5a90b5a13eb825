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
