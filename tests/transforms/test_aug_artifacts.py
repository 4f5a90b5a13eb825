"""The per-sample torchio path (k-space artifacts, anisotropy) on 2-D and 3-D tensors."""

from __future__ import annotations

import pytest
import torch

from medcl.transforms import build_preset

ALL_ON = {"p_motion": 1.0, "p_ghosting": 1.0, "p_spike": 1.0, "p_anisotropy": 1.0}


def _image(dims: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, *([size] * dims))
    c = size // 2
    x[(slice(None), *([slice(c - size // 4, c + size // 4)] * dims))] = 0.8
    return x + 0.05 * torch.rand(x.shape, generator=g)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", ["motion", "ghosting", "spike", "anisotropy"])
def test_each_artifact_changes_the_image_and_keeps_shape(dims: int, kind: str, off) -> None:
    preset = build_preset("mr", off("mr", **{f"p_{kind}": 1.0}), dims=dims)
    assert preset.per_sample is not None and preset.per_sample.transforms == (kind,)
    x = _image(dims, 24 if dims == 2 else 12)
    y = preset.per_sample(x, seed=0)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert not torch.allclose(y, x, atol=1e-3)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_seeded_per_sample_is_reproducible_and_leaves_global_rng(dims: int) -> None:
    preset = build_preset("mr", ALL_ON, dims=dims)
    x = _image(dims, 24 if dims == 2 else 12)
    state = torch.get_rng_state()
    a, b = preset.per_sample(x, seed=3), preset.per_sample(x, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, preset.per_sample(x, seed=4))
    preset.per_sample(x)  # unseeded: global generator (DataLoader seeds it per worker)


def test_ct_has_only_anisotropy_and_xr_nothing() -> None:
    assert build_preset("ct").per_sample.transforms == ("anisotropy",)
    assert build_preset("xr").per_sample is None
    mr = build_preset("mr").per_sample.transforms
    assert set(mr) == {"motion", "ghosting", "spike", "anisotropy"}


def test_ct_anisotropy_works_in_hounsfield_units(off) -> None:
    preset = build_preset("ct", off("ct", p_anisotropy=1.0), dims=2)
    x = _image(2, 32) * 2000 - 1000
    y = preset.per_sample(x, seed=0)
    assert y.shape == x.shape and y.min() >= -1000 - 1 and y.max() <= 1000 + 1
    # resampling must pad with air, not with 0 HU (water), which the window shows as grey
    air = torch.full((1, 32, 32), -1000.0)
    for seed in range(8):
        assert torch.allclose(preset.per_sample(air, seed=seed), air)


def test_sample_views_stacks_independent_views() -> None:
    preset = build_preset("mr", ALL_ON)
    x = _image(2, 24)
    views = preset.sample_views(x, 3, seed=0)
    assert views.shape == (3, 1, 24, 24)
    assert not torch.equal(views[0], views[1])
    xr = build_preset("xr").sample_views(x, 2)
    assert xr.shape == (2, 1, 24, 24) and torch.equal(xr[1], x)


def test_wrong_rank_is_rejected() -> None:
    with pytest.raises(ValueError, match="expects"):
        build_preset("mr", ALL_ON).per_sample(torch.rand(24, 24))
