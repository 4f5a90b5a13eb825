"""The per-sample torchio path (k-space artifacts, anisotropy) on 2-D and 3-D tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medcl.transforms import build_preset, make_options

ALL_ON = {"p_motion": 1.0, "p_ghosting": 1.0, "p_spike": 1.0, "p_anisotropy": 1.0}


def _image(dims: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, *([size] * dims))
    c = size // 2
    x[(slice(None), *([slice(c - size // 4, c + size // 4)] * dims))] = 0.8
    return x + 0.05 * torch.rand(x.shape, generator=g)


SEEDS = range(4)


def _only(off, kind: str, dims: int):
    """The per-sample pipeline of the MR preset with only ``kind`` on (always applied)."""
    preset = build_preset("mr", off("mr", **{f"p_{kind}": 1.0}), dims=dims)
    assert preset.per_sample is not None and preset.per_sample.transforms == (kind,)
    return preset.per_sample


def _size(dims: int) -> int:
    return 24 if dims == 2 else 12


def _kspace(a: torch.Tensor) -> np.ndarray:
    """Centred k-space (``fftshift(fftn(a))``, float64) of one image without its channel axis."""
    return np.fft.fftshift(np.fft.fftn(a[0].double().numpy()))


def _plane_energy(power: np.ndarray, axis: int) -> np.ndarray:
    """Energy of each k-space plane perpendicular to ``axis``."""
    return power.sum(axis=tuple(a for a in range(power.ndim) if a != axis))


def _mirror(i: np.ndarray, n: int) -> np.ndarray:
    """Index of the opposite frequency in a centred spectrum of length ``n``."""
    return (2 * (n // 2) - i) % n


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", ["motion", "ghosting", "spike", "anisotropy"])
def test_each_artifact_keeps_shape_dtype_and_is_finite(dims: int, kind: str, off) -> None:
    x = _image(dims, _size(dims))
    y = _only(off, kind, dims)(x, seed=0)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert (y - x).abs().max() > 1e-3


@pytest.mark.parametrize("dims", [2, 3])
def test_spike_adds_one_k_space_spike_of_the_configured_strength(dims: int, off) -> None:
    # torchio RandomSpike: spectrum[k0] += r * max|spectrum| with r drawn from the intensity range;
    # the image is the real part, so the difference is one cosine: k-space peaks at k0 and -k0
    lo, hi = make_options("mr").spike_intensity_range
    x = _image(dims, _size(dims))
    peak = np.abs(_kspace(x - x.min())).max()  # torchio sees the image shifted to a 0 minimum
    for seed in SEEDS:
        d = np.abs(_kspace(_only(off, "spike", dims)(x, seed=seed) - x))
        top = np.sort(d.ravel())[::-1]
        assert (top[:2] ** 2).sum() > 0.999 * (d**2).sum(), f"seed {seed}: not one spike"
        strength = top[:2].sum() / peak  # r/2 at k0 and at -k0 (r once where k0 = -k0)
        assert lo - 1e-3 <= strength <= hi + 1e-3, (seed, strength)


@pytest.mark.parametrize("dims", [2, 3])
def test_ghosting_scales_periodic_k_space_planes_along_one_axis(dims: int, off) -> None:
    # torchio RandomGhosting: along one in-plane axis, every n-th plane of the centred spectrum
    # (n from ghost_count_range) is multiplied by 1 - c (c from ghost_intensity_range), the
    # centre plane restored; taking the real part spreads half of each change to the mirror plane
    o = make_options("mr")
    size = _size(dims)
    x = _image(dims, size)
    kx = _kspace(x - x.min())
    for seed in SEEDS:
        ky = _kspace(_only(off, "ghosting", dims)(x, seed=seed) - x.min())
        diff = ky - kx
        power = np.abs(diff) ** 2
        matches = []
        for axis in range(dims):
            # rounding leaves < 1e-9 of the change's energy on a plane; a changed one has > 1e-4
            changed = set(np.flatnonzero(_plane_energy(power, axis) > 1e-6 * power.sum()))
            for n in range(o.ghost_count_range[0], o.ghost_count_range[1] + 1):
                planes = np.arange(0, size, n)
                planes = planes[planes != size // 2]
                index = np.arange(size)
                weight = np.isin(index, planes).astype(int) + np.isin(_mirror(index, size), planes)
                if changed and changed <= set(np.flatnonzero(weight)):
                    matches.append((int(np.count_nonzero(weight)), axis, weight))
        assert matches, f"seed {seed}: the change is not on periodic planes along one axis"
        _, axis, weight = min(matches, key=lambda m: m[0])  # the largest period that fits
        shape = [1] * dims
        shape[axis] = size
        model = kx * weight.reshape(shape) / 2  # diff = -c * model
        c = -np.real(np.vdot(model, diff)) / np.vdot(model, model).real
        assert o.ghost_intensity_range[0] - 1e-3 <= c <= o.ghost_intensity_range[1] + 1e-3
        residual = np.abs(diff + c * model) ** 2
        assert residual.sum() < 1e-4 * power.sum(), f"seed {seed}: not a plane-wise scaling"


# torchio RandomMotion (2 movements): the centred spectrum is cut into 3 segments along the last
# axis, at about 1/3 and 2/3; the middle segment, which holds the centre of k-space for these
# seeds, comes from the unmoved image, the outer ones from moved copies. The real part of the
# result keeps exactly the planes whose mirror plane is in the middle segment too.


def _motion_check(off, dims: int) -> None:
    size = _size(dims)
    x = _image(dims, size)
    kx = _kspace(x - x.min())
    last = dims - 1
    for seed in SEEDS:
        y = _only(off, "motion", dims)(x, seed=seed)
        ky = _kspace(y - x.min())
        rel = _plane_energy(np.abs(ky - kx) ** 2, last) / _plane_energy(np.abs(kx) ** 2, last)
        kept = np.flatnonzero(rel < 1e-8)
        assert size // 2 in kept, f"seed {seed}: the centre of k-space was not kept ({kept})"
        assert np.all(np.diff(kept) == 1), f"seed {seed}: kept planes not one band ({kept})"
        assert set(_mirror(kept, size)) == set(kept), f"seed {seed}: {kept}"
        assert len(kept) <= size // 2 and (rel[rel >= 1e-8] > 1e-4).all(), "the rest moved"
        assert torch.isclose(y.mean(), x.mean(), rtol=1e-5)  # the centre plane holds the mean
        energy = float((y - x.min()).square().sum() / (x - x.min()).square().sum())
        assert 0.6 < energy < 1.1, (seed, energy)  # rigid motion: energy about kept


def test_motion_3d_keeps_the_centre_of_k_space_and_moves_the_rest(off) -> None:
    _motion_check(off, 3)


def test_motion_2d_keeps_the_centre_of_k_space_and_moves_the_rest(off) -> None:
    _motion_check(off, 2)


@pytest.mark.parametrize("dims", [2, 3])
def test_anisotropy_removes_high_frequencies_along_one_axis(dims: int, off) -> None:
    # torchio RandomAnisotropy: downsample one axis by 1.5-3 and resample back (linear)
    size = _size(dims)
    x = _image(dims, size)
    high = np.abs(np.arange(size) - size // 2) >= size // 4
    px = np.abs(_kspace(x - x.min())) ** 2
    for seed in SEEDS:
        py = np.abs(_kspace(_only(off, "anisotropy", dims)(x, seed=seed) - x.min())) ** 2
        ratio = np.array(
            [
                _plane_energy(py, a)[high].sum() / _plane_energy(px, a)[high].sum()
                for a in range(dims)
            ]
        )
        axis = int(ratio.argmin())
        others = np.delete(ratio, axis)
        assert ratio[axis] < 0.5 and ratio[axis] < 0.5 * others.min(), (seed, ratio)
        assert (others > 0.6).all(), (seed, ratio)


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


@pytest.mark.parametrize("kind", ["anisotropy", "ghosting", "spike"])
def test_each_artifact_fires_at_its_configured_probability(kind: str, off) -> None:
    # the firing rate over many seeded draws is the configured p (not p², as when a transform's
    # own p gated it a second time), within 4 binomial standard deviations
    p, n = 0.3, 2000
    per_sample = build_preset("mr", off("mr", **{f"p_{kind}": p}), dims=2).per_sample
    x = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    fired = sum(bool((per_sample(x, seed=s) - x).abs().max() > 1e-6) for s in range(n))
    tolerance = 4 * math.sqrt(p * (1 - p) / n)
    assert abs(fired / n - p) <= tolerance, (kind, fired / n)
