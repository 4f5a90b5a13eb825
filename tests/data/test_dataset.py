"""Cached datasets over a manifest."""

from __future__ import annotations

from medcl.data.dataset import CachedImages
from medcl.data.manifest import read_manifest


def test_cached_images(tiny_manifest):
    m = read_manifest(tiny_manifest)
    ds = CachedImages(m, image_size=16)
    x, label, group, idx = ds[0]
    assert x.shape == (1, 16, 16) and idx == 0
    assert ds.labels.tolist()[:3] == [0, 0, 0]
    assert ds.groups.max().item() == 11  # 12 patients
    assert (ds.labels == -1).sum() > 0
