"""MultiViewAugment shapes and independence; seeded views of one image; the preview PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medcl.errors import ConfigError
from medcl.transforms import MultiViewAugment, build_preset, original_and_views, preview_grid


@pytest.mark.parametrize("dims", [2, 3])
def test_multiview_shapes_and_independent_views(dims: int) -> None:
    preset = build_preset("mr", dims=dims)
    size = (24,) * dims
    mv = MultiViewAugment(preset, n_views=3)
    x = torch.rand(4, 1, *size)
    out = mv(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 1, *size)
    assert not torch.allclose(out[:, 0], out[:, 1])
    pre = torch.stack([preset.sample_views(x[i], 3, seed=i) for i in range(4)])  # dataset side
    out = mv(pre, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 1, *size) and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("dims", [2, 3])
def test_multiview_keeps_each_prepared_view_in_its_place(dims: int, off) -> None:
    # batched part off: every output view is its own input view, normalised (no mixing of
    # samples or views in the reshapes)
    preset = build_preset("mr", off("mr"), dims=dims)
    mv = MultiViewAugment(preset, n_views=3)
    pre = torch.rand(4, 3, 1, *(12,) * dims) * 1.4 - 0.2
    assert torch.equal(mv(pre), pre.clamp(0, 1))
    single = torch.rand(2, 1, *(12,) * dims)
    assert torch.equal(mv(single), single.unsqueeze(1).expand(-1, 3, *single.shape[1:]))


def test_multiview_rejects_bad_inputs() -> None:
    mv = MultiViewAugment(build_preset("xr"), n_views=2)
    with pytest.raises(ValueError, match="views"):
        mv(torch.rand(2, 3, 1, 8, 8))
    with pytest.raises(ValueError, match="expects"):
        mv(torch.rand(8, 8))
    with pytest.raises(ConfigError):
        MultiViewAugment(build_preset("xr"), n_views=0)


def test_preview_grid_writes_png_of_expected_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.normal(40, 300, (40, 50)).astype(np.float32), np.zeros((1, 64, 64))]
    preset = build_preset("ct")
    out = preview_grid(images, preset, n_views=3, out_png=tmp_path / "sub" / "g.png", tile=32)
    assert out.exists()
    with Image.open(out) as im:
        assert im.size == (2 + 4 * (32 + 2), 2 + 2 * (32 + 2)) and im.mode == "L"
        a = np.asarray(im)
    original, view = a[2:34, 2:34], a[2:34, 36:68]
    assert not np.array_equal(original, view)
    again = preview_grid(images, preset, n_views=3, out_png=tmp_path / "g2.png", tile=32)
    assert np.array_equal(np.asarray(Image.open(again)), a)  # seeded


def test_preview_grid_3d_and_errors(tmp_path: Path) -> None:
    preset = build_preset("mr", dims=3)
    out = preview_grid([np.random.rand(8, 16, 16)], preset, 2, tmp_path / "v.png", tile=16)
    with Image.open(out) as im:
        assert im.size == (2 + 3 * 18, 2 + 18)
    with pytest.raises(ConfigError):
        preview_grid([np.zeros((8, 8))], build_preset("mr"), 0, tmp_path / "x.png")
    with pytest.raises(Exception, match="shape"):
        preview_grid([np.zeros((2, 8, 8))], build_preset("mr"), 1, tmp_path / "x.png")


def test_original_and_views_is_the_training_path_with_the_documented_seeds() -> None:
    # MR has per-sample artifacts: both the loader-side and the device-side draws are seeded
    preset = build_preset("mr", {"p_anisotropy": 1.0, "p_spike": 1.0})
    multi = MultiViewAugment(preset, 3)
    x = torch.rand(1, 24, 24, generator=torch.Generator().manual_seed(0))
    got = original_and_views(x, preset, multi, seed=2, index=5)
    assert got.shape == (4, 1, 24, 24)
    torch.testing.assert_close(got[0], torch.as_tensor(preset.normalize(x)))
    # by hand: sample_views seeded with seed * 1_000_003 + index * V, the batched part with a
    # generator seeded with seed * 1_000_003 + index
    views = preset.sample_views(x, 3, seed=2 * 1_000_003 + 5 * 3)
    g = torch.Generator().manual_seed(2 * 1_000_003 + 5)
    torch.testing.assert_close(got[1:], multi(views.unsqueeze(0), generator=g)[0])
    torch.testing.assert_close(original_and_views(x, preset, multi, 2, 5), got)
    assert not torch.allclose(original_and_views(x, preset, multi, 2, 6)[1:], got[1:])
