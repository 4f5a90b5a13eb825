"""Patch geometry of 3-D volumes: grid cover, random regions and their views, aggregation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medcl.errors import MedclError
from medcl.transforms.patches import (
    VIEW_SHIFT,
    aggregate_patches,
    check_fits,
    crop,
    grid_boxes,
    grid_starts,
    region_views,
)


@pytest.mark.parametrize("shape", [(16, 16, 16), (16, 13, 9), (8, 11, 23)])
@pytest.mark.parametrize("patch", [4, 8])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.9])
def test_grid_covers_every_voxel_inside_the_volume(shape, patch, overlap):
    boxes = grid_boxes(shape, patch, overlap)
    cover = np.zeros(shape, dtype=int)
    for b in boxes:
        assert all(0 <= s and s + patch <= n for s, n in zip(b, shape, strict=True)), b
        cover[tuple(slice(s, s + patch) for s in b)] += 1
    assert (cover >= 1).all()  # every voxel is in some patch
    assert len(set(boxes)) == len(boxes)
    # along each axis: starts at 0, ends flush, no step larger than the stride
    stride = max(1, int(patch * (1 - overlap)))
    for n in shape:
        starts = grid_starts(n, patch, overlap)
        assert starts[0] == 0 and starts[-1] == n - patch
        assert all(0 < b - a <= stride for a, b in itertools.pairwise(starts))


def test_grid_without_overlap_tiles_a_divisible_volume_exactly_once():
    shape, patch = (16, 8, 24), 8
    boxes = grid_boxes(shape, patch, 0.0)
    expected = [(z, y, x) for z in range(0, 16, 8) for y in range(0, 8, 8) for x in range(0, 24, 8)]
    assert boxes == expected
    cover = np.zeros(shape, dtype=int)
    for b in boxes:
        cover[tuple(slice(s, s + patch) for s in b)] += 1
    assert (cover == 1).all()


def test_grid_refuses_bad_arguments():
    with pytest.raises(ValueError, match="exceeds"):
        grid_starts(7, 8)
    with pytest.raises(ValueError, match="overlap"):
        grid_starts(16, 8, 1.0)
    assert grid_starts(8, 8, 0.5) == [0]


def test_check_fits_names_the_key_and_the_volume():
    check_fits((8, 9, 10), 8)
    with pytest.raises(MedclError, match=r"data\.patch_size=8 .* volume v7 \(shape 16×7×16\)"):
        check_fits((16, 7, 16), 8, "volume v7")


def _coded_volume(shape):
    """Voxel value = its flat index, so a crop tells where it was taken."""
    return torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(1, *shape)


def test_region_views_k_regions_of_overlapping_views_from_the_volume():
    shape, patch, k, v = (20, 16, 18), 8, 5, 3
    x = _coded_volume(shape)
    g = torch.Generator().manual_seed(0)
    m = int(VIEW_SHIFT * patch)
    for _ in range(20):
        crops, regions, boxes = region_views(x, patch, k, v, g)
        assert crops.shape == (k, v, 1, patch, patch, patch)
        assert len(regions) == k and all(len(b) == v for b in boxes)
        for r, (region, views) in enumerate(zip(regions, boxes, strict=True)):
            for j, b in enumerate(views):
                for s, s0, n in zip(b, region, shape, strict=True):
                    assert 0 <= s <= n - patch and abs(s - s0) <= m
                # the crop holds exactly the voxels of its box (explicit index arithmetic)
                z, y, xx = b
                first = (z * shape[1] + y) * shape[2] + xx
                assert crops[r, j, 0, 0, 0, 0] == first
                ref = x[0, z : z + patch, y : y + patch, xx : xx + patch]
                assert torch.equal(crops[r, j, 0], ref)
            # any two views of one region overlap by at least P - 2m voxels per axis
            for a, b in itertools.combinations(views, 2):
                for sa, sb in zip(a, b, strict=True):
                    assert patch - abs(sa - sb) >= patch - 2 * m


def test_regions_spread_over_the_volume():
    """Region corners are drawn over every admissible start (uniformly: each is hit)."""
    x = torch.zeros(1, 10, 8, 8)
    g = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(200):
        _, regions, _ = region_views(x, 8, 1, 2, g)
        seen.add(regions[0])
    assert seen == {(z, 0, 0) for z in range(3)}


def test_region_views_refuses_a_patch_larger_than_the_volume():
    with pytest.raises(MedclError, match="data.patch_size"):
        region_views(torch.zeros(1, 16, 6, 16), 8, 2, 2)


def _encoder(feat=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8**3, feat, generator=g)
    return lambda p: torch.tanh(p.flatten(1) @ w / 50)  # (n, 1, 8, 8, 8) -> (n, F), nonlinear


def test_aggregation_equals_an_explicit_loop_over_patches():
    enc = _encoder()
    vol = torch.rand(1, 16, 16, 24, generator=torch.Generator().manual_seed(2))
    # no overlap: the patches of an explicit triple loop
    ref = torch.stack(
        [
            enc(vol[None, :, z : z + 8, y : y + 8, x : x + 8])[0]
            for z in range(0, 16, 8)
            for y in range(0, 16, 8)
            for x in range(0, 24, 8)
        ]
    ).mean(0)
    got = aggregate_patches(enc, vol, 8, 0.0, batch_size=5)  # batches of 5 over 12 patches
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # with overlap, one patch at a time over explicit starts (stride 4; last flush with the end)
    odd = torch.rand(1, 13, 10, 9, generator=torch.Generator().manual_seed(3))
    starts = {13: [0, 4, 5], 10: [0, 2], 9: [0, 1]}
    ref = torch.stack(
        [
            enc(odd[None, :, z : z + 8, y : y + 8, x : x + 8])[0]
            for z in starts[13]
            for y in starts[10]
            for x in starts[9]
        ]
    ).mean(0)
    got = aggregate_patches(enc, odd, 8, 0.5, batch_size=4)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_crop_is_the_box():
    x = _coded_volume((10, 10, 10))
    assert torch.equal(crop(x, (1, 2, 3), 4), x[:, 1:5, 2:6, 3:7])
