"""Intensity steps: CT windowing, normalisation, gamma, contrast, bias field, blur, noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from medcl.errors import ConfigError
from medcl.transforms import build_preset, make_options, to_model_intensity
from medcl.transforms.blur import gaussian_blur
from medcl.transforms.intensity import (
    adjust_contrast,
    adjust_gamma,
    apply_window,
    bias_field,
    bias_field_basis_size,
)
from medcl.transforms.noise import gaussian_noise, rician_noise


def test_ct_window_endpoints() -> None:
    hu = torch.tensor([-2000.0, 40 - 200, 40.0, 40 + 200, 3000.0])
    out = to_model_intensity(hu, "ct")
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    lung = to_model_intensity(torch.tensor([-1350.0, -600.0, 150.0]), "ct", window=(-600, 1500))
    assert torch.allclose(lung, torch.tensor([0.0, 0.5, 1.0]))


def test_normalize_mr_xr_clamp_and_numpy_roundtrip() -> None:
    a = np.array([-0.2, 0.3, 1.4], dtype=np.float64)
    for m in ("mr", "XR"):
        out = to_model_intensity(a, m)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        np.testing.assert_allclose(out, [0.0, 0.3, 1.0], rtol=1e-6)
    with pytest.raises(ConfigError):
        to_model_intensity(a, "pet")


def test_ct_preset_without_jitter_is_the_window(off) -> None:
    hu = torch.linspace(-500, 500, 64).expand(3, 1, 64, 64).clone()
    preset = build_preset("ct", off("ct", window_level_hu=0.0, window_width_hu=500.0))
    out = preset.batched(hu)
    ref = ((hu + 250) / 500).clamp(0, 1)  # independent reference
    assert torch.allclose(out, ref, atol=1e-6)


def test_ct_window_jitter_stays_in_range_and_differs_per_sample(off) -> None:
    w = 700
    hu = torch.linspace(-300, 400, w).expand(64, 1, 4, w).clone()
    preset = build_preset("ct", off("ct", level_jitter_hu=20.0, width_jitter_frac=0.15))
    out = preset.batched(hu, generator=torch.Generator().manual_seed(0))[:, 0, 0].double()
    levels, widths = [], []
    axis = torch.linspace(-300, 400, w).double()
    for row in out:
        inside = (row > 0.05) & (row < 0.95)
        slope = np.polyfit(axis[inside].numpy(), row[inside].numpy(), 1)
        width = 1.0 / slope[0]
        level = (0.5 - slope[1]) / slope[0]
        levels.append(level)
        widths.append(width)
    levels_t, widths_t = torch.tensor(levels), torch.tensor(widths)
    assert levels_t.min() >= 20 - 1 and levels_t.max() <= 60 + 1
    assert widths_t.min() >= 400 * 0.85 - 2 and widths_t.max() <= 400 * 1.15 + 2
    assert levels_t.std() > 5 and widths_t.std() > 10  # independent draws per sample


def test_window_function_matches_formula() -> None:
    x = torch.randn(2, 1, 5, 5) * 500
    level, width = torch.tensor([0.0, 100.0]), torch.tensor([200.0, 1000.0])
    out = apply_window(x, level, width)
    for i in range(2):
        ref = ((x[i] - (level[i] - width[i] / 2)) / width[i]).clamp(0, 1)
        assert torch.allclose(out[i], ref)


def test_gamma_and_contrast() -> None:
    x = torch.rand(2, 1, 8, 8)
    g = adjust_gamma(x, torch.tensor([1.0, 2.0]))
    assert torch.allclose(g[0], x[0]) and torch.allclose(g[1], x[1] ** 2)
    c = adjust_contrast(x, torch.tensor([1.0, 0.0]))
    assert torch.allclose(c[0], x[0])
    assert torch.allclose(c[1], x[1].mean().expand_as(x[1]))


def test_bias_field_constant_and_linear_terms() -> None:
    x = torch.ones(1, 1, 9, 9)
    m = bias_field_basis_size(3, 2)
    assert m == 10 and bias_field_basis_size(3, 3) == 20
    coef = torch.zeros(2, m)
    assert torch.equal(bias_field(x.expand(2, -1, -1, -1), coef, 3), x.expand(2, -1, -1, -1))
    coef[0, 0] = math.log(2.0)  # exponents (0, 0): the constant term
    out = bias_field(x, coef[:1], 3)
    assert torch.allclose(out, torch.full_like(x, 2.0))
    coef = torch.zeros(1, m)
    coef[0, 1] = 1.0  # exponents (0, 1): linear in the last axis, exp(x) with x in [-1, 1]
    out = bias_field(x, coef, 3)[0, 0]
    assert torch.allclose(out[4], torch.exp(torch.linspace(-1, 1, 9)), atol=1e-6)
    assert torch.allclose(out[:, 0], torch.full((9,), math.exp(-1)), atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_blur_matches_scipy(dims: int) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 1, *([12] * dims), dtype=torch.float64)
    sigma = torch.tensor([0.0, 0.7, 1.3], dtype=torch.float64)
    out = gaussian_blur(x, sigma, radius=4)
    assert torch.allclose(out[0], x[0])
    for i in (1, 2):
        ref = ndimage.gaussian_filter(
            x[i, 0].numpy(), float(sigma[i]), mode="nearest", truncate=4 / float(sigma[i])
        )
        np.testing.assert_allclose(out[i, 0].numpy(), ref, atol=1e-6)


def test_noise_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(3, 1, 128, 128)
    std = torch.tensor([0.0, 0.05, 0.2])
    n = gaussian_noise(x, std, g)
    assert torch.equal(n[0], x[0])
    assert abs(n[1].std().item() - 0.05) < 0.003 and abs(n[2].std().item() - 0.2) < 0.01
    r = rician_noise(x, std, g)
    assert (r >= 0).all() and torch.equal(r[0], x[0])
    # zero signal: Rayleigh distribution, mean std * sqrt(pi / 2)
    assert abs(r[2].mean().item() - 0.2 * math.sqrt(math.pi / 2)) < 0.01


def _monomials(shape: tuple[int, int], order: int) -> np.ndarray:
    """All products y^a x^b (a + b <= order) of coordinates in [-1, 1], ``(M, H * W)``."""
    yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    terms = [yy**a * xx**b for a in range(order + 1) for b in range(order + 1 - a)]
    return np.stack([t.ravel() for t in terms])


def test_bias_field_preset_multiplies_by_exp_of_a_bounded_polynomial(off) -> None:
    o = make_options("mr")
    preset = build_preset("mr", off("mr", p_bias=1.0))
    x = torch.full((32, 1, 24, 20), 0.25)
    out = preset.batched(x, generator=torch.Generator().manual_seed(0))[:, 0].double().numpy()
    basis = _monomials((24, 20), o.bias_order)
    means = []
    for field in out / 0.25:
        ok = (field > 1e-6) & (field < 4 - 1e-6)  # not clamped to [0, 1]
        assert ok.mean() > 0.9
        log = np.log(field[ok])
        coef, *_ = np.linalg.lstsq(basis[:, ok.ravel()].T, log, rcond=None)
        # smooth: exactly a polynomial of order bias_order (noise or a sharper field would not be)
        assert np.abs(basis[:, ok.ravel()].T @ coef - log).max() < 1e-4
        assert np.abs(coef).max() <= o.bias_coef + 1e-3
        assert log.std() > 0.02, "a field, not a constant"
        means.append(log.mean())
    assert abs(np.mean(means)) < 0.1  # coefficients centred on 0: the field is about 1 on average
    assert np.std(means) > 0.05  # and drawn per sample


def test_gaussian_noise_preset_residual_is_white_with_the_requested_std(off) -> None:
    preset = build_preset("xr", off("xr", p_noise=1.0, noise_std_range=(0.04, 0.04)))
    x = torch.full((8, 1, 64, 64), 0.5)
    r = (preset.batched(x, generator=torch.Generator().manual_seed(0)) - 0.5)[:, 0].double()
    for s in r:
        assert abs(s.std().item() - 0.04) < 0.003 and abs(s.mean().item()) < 0.003
        for a, b in ((s[1:], s[:-1]), (s[:, 1:], s[:, :-1])):  # neighbours are uncorrelated
            assert abs(np.corrcoef(a.flatten(), b.flatten())[0, 1]) < 0.06
    assert not torch.allclose(r[0], r[1])  # a fresh draw per sample
