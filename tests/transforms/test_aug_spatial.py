"""Geometry: exact references for the fused matrix, and bounds of the random draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medcl.transforms import build_preset
from medcl.transforms.spatial import build_theta, rotation_matrix, warp


def _theta(shape: tuple[int, ...], b: int = 1, **kw: torch.Tensor) -> torch.Tensor:
    d = len(shape)
    args = {
        "rotation_deg": torch.zeros(b) if d == 2 else torch.zeros(b, 3),
        "scale": torch.ones(b),
        "translate_frac": torch.zeros(b, d),
        "flip": torch.zeros(b, dtype=torch.bool),
        "crop_frac": torch.ones(b, d),
        "crop_center": torch.zeros(b, d),
    }
    args.update(kw)
    return build_theta(shape, **args)


def test_identity_rot90_flip_and_shift_match_numpy() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 1, 8, 8)
    assert torch.allclose(warp(x, _theta((8, 8))), x, atol=1e-6)
    rot = warp(x, _theta((8, 8), rotation_deg=torch.tensor([90.0])))
    ref = np.rot90(x[0, 0].numpy(), k=-1)  # clockwise as displayed
    np.testing.assert_allclose(rot[0, 0].numpy(), ref, atol=1e-5)
    flip = warp(x, _theta((8, 8), flip=torch.tensor([True])))
    np.testing.assert_allclose(flip[0, 0].numpy(), x[0, 0].numpy()[:, ::-1], atol=1e-6)
    shift = warp(x, _theta((8, 8), translate_frac=torch.tensor([[0.25, 0.0]])))  # 2 px right
    np.testing.assert_allclose(shift[0, 0, :, 2:].numpy(), x[0, 0, :, :-2].numpy(), atol=1e-6)
    assert shift[0, 0, :, :2].abs().max() == 0


def test_rotation_of_non_square_image_is_not_sheared() -> None:
    # a 90-degree turn of a 6x10 image maps pixel centres onto pixel centres of the central square
    x = torch.zeros(1, 1, 6, 10)
    x[0, 0, 1, 4] = 1.0  # row 1, col 4: offset (-0.5, -1.5) from the centre (4.5, 2.5) in (x, y)
    out = warp(x, _theta((6, 10), rotation_deg=torch.tensor([90.0])))[0, 0]
    # clockwise: (dx, dy) -> (-dy, dx) = (1.5, -0.5) -> col 6, row 2
    assert out[2, 6] == pytest.approx(1.0, abs=1e-5)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)


def test_rotation_matrix_3d_is_orthonormal_and_matches_2d_about_z() -> None:
    a = torch.tensor([[0.0, 0.0, 30.0], [10.0, -20.0, 5.0]])
    r = rotation_matrix(a)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(r[0, :2, :2], rotation_matrix(torch.tensor([30.0]))[0], atol=1e-6)


def _bar(size: int = 65) -> torch.Tensor:
    x = torch.zeros(1, size, size)
    c = size // 2
    x[0, c - 2 : c + 3, 8:-8] = 1.0  # horizontal bar through the centre
    return x


def _orientation_deg(img: torch.Tensor) -> float:
    """Principal-axis angle from second moments, clockwise as displayed (y down)."""
    h, w = img.shape
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    m = img.double()
    s = m.sum()
    cx, cy = (m * xx).sum() / s, (m * yy).sum() / s
    mu20 = (m * (xx - cx) ** 2).sum()
    mu02 = (m * (yy - cy) ** 2).sum()
    mu11 = (m * (xx - cx) * (yy - cy)).sum()
    return math.degrees(0.5 * math.atan2(2 * mu11, mu20 - mu02))


def test_moment_estimator_reference() -> None:
    # the estimator itself, checked against a bar rotated by a known angle
    x = _bar().unsqueeze(0)
    out = warp(x, _theta((65, 65), rotation_deg=torch.tensor([7.0])))[0, 0]
    assert _orientation_deg(out) == pytest.approx(7.0, abs=0.3)


def test_random_rotation_stays_within_10_degrees(off) -> None:
    preset = build_preset("xr", off("xr", p_affine=1.0, scale_range=(1.0, 1.0), translate_frac=0.0))
    x = _bar().expand(256, 1, -1, -1)
    out = preset.batched(x, generator=torch.Generator().manual_seed(1))
    angles = torch.tensor([_orientation_deg(o[0]) for o in out])
    assert angles.abs().max() <= 10.3
    assert angles.max() > 8 and angles.min() < -8  # the whole range is used
    assert angles.std() > 4  # roughly uniform on [-10, 10] (std 5.8)


def test_random_scale_and_translation_bounds(off, make_disc) -> None:
    preset = build_preset("mr", off("mr", p_affine=1.0, rotate_deg=0.0))
    x = make_disc(64, 12.0).expand(128, 1, -1, -1)
    out = preset.batched(x, generator=torch.Generator().manual_seed(2))[:, 0]
    area_ratio = out.sum(dim=(1, 2)) / x[0, 0].sum()
    assert area_ratio.min() >= 0.81 - 0.03 and area_ratio.max() <= 1.21 + 0.03
    assert area_ratio.max() - area_ratio.min() > 0.25
    xs = torch.arange(64, dtype=torch.float32)
    cx = (out.sum(1) * xs).sum(1) / out.sum((1, 2))
    cy = (out.sum(2) * xs).sum(1) / out.sum((1, 2))
    assert (cx - 31.5).abs().max() <= 0.05 * 64 + 0.2
    assert (cy - 31.5).abs().max() <= 0.05 * 64 + 0.2


def test_random_crop_keeps_at_least_70_percent(off) -> None:
    preset = build_preset("mr", off("mr", p_crop=1.0))
    n = 64
    ramp_x = ((torch.arange(n) + 0.5) / n).expand(n, n)  # value = normalised x of the pixel
    ramp_y = ramp_x.T
    x = torch.stack([ramp_x, ramp_y]).unsqueeze(1)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out_x = preset.batched(x[:1].expand(100, 1, n, n), generator=g1)[:, 0]
    out_y = preset.batched(x[1:].expand(100, 1, n, n), generator=g2)[:, 0]  # same draws
    width = (out_x[:, n // 2, -1] - out_x[:, n // 2, 0]) * n / (n - 1)
    height = (out_y[:, -1, n // 2] - out_y[:, 0, n // 2]) * n / (n - 1)
    area = width * height
    assert area.min() >= 0.7 - 0.02 and area.max() <= 1.0 + 1e-4
    assert area.min() < 0.8  # the crop does happen


@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 7)])
def test_warp_matches_torch_affine_grid(shape: tuple[int, ...]) -> None:
    import torch.nn.functional as F

    torch.manual_seed(0)
    d = len(shape)
    x = torch.rand(3, 1, *shape)
    theta = torch.eye(d, d + 1) + 0.2 * torch.randn(3, d, d + 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    ref = F.grid_sample(x, grid, align_corners=False)
    assert torch.allclose(warp(x, theta), ref, atol=1e-5)
