"""The batched device path: shapes, range, determinism, per-sample independence, identity, flips."""

from __future__ import annotations

import pytest
import torch

from medcl.transforms import PRESETS, build_preset, to_model_intensity


def _phantom(name: str, dims: int, size: int = 32, marker: bool = True) -> torch.Tensor:
    """Body disc/ball plus (optionally) a bright laterality marker on the image's left side."""
    grid = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * dims, indexing="ij")
    c = (size - 1) / 2
    r2 = sum((g - c) ** 2 for g in grid)
    body, bright, air = (40.0, 1000.0, -1000.0) if name == "ct" else (0.3, 1.0, 0.0)
    x = torch.where(r2 <= (0.4 * size) ** 2, body, air)
    if marker:
        sl = (slice(size // 2 - 4, size // 2 + 4),) * (dims - 1)
        x[(*sl, slice(2, 11))] = bright
    return x.unsqueeze(0)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("dims", [2, 3])
def test_shape_dtype_range(name: str, dims: int) -> None:
    preset = build_preset(name, dims=dims)
    size = 32 if dims == 2 else 16
    x = _phantom(name, dims, size).expand(8, *([-1] * (dims + 1))).clone()
    x = x + (torch.randn_like(x) * (30 if name == "ct" else 0.05))
    out = preset.batched(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("name", PRESETS)
def test_determinism_with_seeded_generator(name: str) -> None:
    preset = build_preset(name)
    x = _phantom(name, 2).expand(6, 1, -1, -1)
    a = preset.batched(x, generator=torch.Generator().manual_seed(7))
    b = preset.batched(x, generator=torch.Generator().manual_seed(7))
    c = preset.batched(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    preset.batched(x)  # no generator: global RNG


@pytest.mark.parametrize("name", PRESETS)
def test_samples_in_a_batch_get_different_parameters(name: str) -> None:
    preset = build_preset(name)
    out = preset.batched(_phantom(name, 2).expand(16, 1, -1, -1), torch.Generator().manual_seed(0))
    flat = out.flatten(1)
    diffs = (flat[:, None] - flat[None]).abs().amax(-1)
    off_diag = diffs[~torch.eye(16, dtype=torch.bool)]
    assert off_diag.min() > 1e-3  # no two samples share their augmentation


def test_independence_of_a_single_parameter(off) -> None:
    # only noise on: each sample's measured std is its own draw from [0, 0.1]
    preset = build_preset("xr", off("xr", p_noise=1.0, noise_std_range=(0.0, 0.1)))
    x = torch.full((32, 1, 64, 64), 0.5)
    out = preset.batched(x, torch.Generator().manual_seed(0))
    stds = (out - 0.5).flatten(1).std(1)
    assert stds.max() < 0.105 and stds.std() > 0.015


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("dims", [2, 3])
def test_identity_when_everything_is_off(name: str, dims: int, off) -> None:
    preset = build_preset(name, off(name), dims=dims)
    x = _phantom(name, dims, 16).expand(4, *([-1] * (dims + 1))).clone()
    x = x + torch.randn_like(x) * (100 if name == "ct" else 0.2)
    assert torch.equal(preset.batched(x), to_model_intensity(x, name))
    assert preset.per_sample is None


@pytest.mark.parametrize("name", PRESETS)
def test_identity_when_magnitudes_are_zero(name: str) -> None:
    zero = {
        "rotate_deg": 0.0,
        "scale_range": (1.0, 1.0),
        "translate_frac": 0.0,
        "crop_area_range": (1.0, 1.0),
        "crop_aspect_range": (1.0, 1.0),
        "log_gamma_range": (0.0, 0.0),
        "contrast_range": (1.0, 1.0),
        "blur_sigma_px_range": (0.0, 0.0),
        "noise_std_range": (0.0, 0.0),
    }
    zero.update(
        {
            "ct": {"level_jitter_hu": 0.0, "width_jitter_frac": 0.0},
            "mr": {"bias_coef": 0.0, "rician_std_range": (0.0, 0.0)},
            "xr": {"bias_coef": 0.0},
        }[name]
    )
    preset = build_preset(name, zero)
    x = _phantom(name, 2).expand(4, 1, -1, -1)
    out = preset.batched(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, to_model_intensity(x, name), atol=1e-5)


def _marker_centroid_x(preset, name: str, n: int, seed: int) -> torch.Tensor:
    """x-centroid of the marker's contribution, isolated by augmenting a marker-free twin with
    the same random draws."""
    with_m = _phantom(name, 2, 48).expand(n, 1, -1, -1)
    without = _phantom(name, 2, 48, marker=False).expand(n, 1, -1, -1)
    a = preset.batched(with_m, torch.Generator().manual_seed(seed))
    b = preset.batched(without, torch.Generator().manual_seed(seed))
    diff = (a - b).abs()[:, 0]
    xs = torch.arange(48, dtype=torch.float32)
    return (diff.sum(1) * xs).sum(1) / diff.sum((1, 2)).clamp_min(1e-6)


@pytest.mark.parametrize("name", PRESETS)
def test_laterality_kept_by_default_and_flipped_when_enabled(name: str) -> None:
    cx = _marker_centroid_x(build_preset(name), name, 64, seed=0)
    assert (cx < 23.5).all(), "the left marker moved to the right half without flip_lr"
    cx = _marker_centroid_x(build_preset(name, {"flip_lr": True}), name, 64, seed=0)
    right = (cx > 23.5).float().mean().item()
    assert 0.3 < right < 0.7


def test_generator_on_other_device_and_int_input() -> None:
    preset = build_preset("xr")
    x = (torch.rand(4, 1, 16, 16) * 2).round().to(torch.int64)
    out = preset.batched(x, torch.Generator(device="cpu").manual_seed(0))
    assert out.dtype == torch.float32


def test_wrong_rank_is_rejected() -> None:
    with pytest.raises(ValueError, match="expects"):
        build_preset("mr").batched(torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="expects"):
        build_preset("mr", dims=3).batched(torch.rand(2, 1, 16, 16))


@pytest.mark.parametrize("name", PRESETS)
def test_input_is_not_modified(name: str) -> None:
    x = _phantom(name, 2).expand(16, 1, -1, -1).clone()
    before = x.clone()
    build_preset(name).batched(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)


def test_outside_the_field_of_view_is_background_not_zero(off) -> None:
    # lung window: air (-1000 HU) maps to 0.233, which must also fill the rotated-in corners
    preset = build_preset(
        "ct", off("ct", p_affine=1.0, window_level_hu=-600.0, window_width_hu=1500.0)
    )
    air = torch.full((8, 1, 32, 32), -1000.0)
    out = preset.batched(air, torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.full_like(out, 350 / 1500), atol=1e-5)
