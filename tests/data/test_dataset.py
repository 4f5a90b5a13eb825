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


def test_patient_groups_do_not_depend_on_the_pseudonymous_keys(tiny_manifest):
    # Another project secret gives other patient keys for the same files: the group numbers (and
    # with them patient-grouped batches and the patient bootstrap) must stay the same.
    m = read_manifest(tiny_manifest)
    other = m.df.copy()
    keys = sorted(other["patient_key"].unique())
    renamed = {k: f"zz{len(keys) - i:04d}" for i, k in enumerate(keys)}  # reverses the key order
    other["patient_key"] = other["patient_key"].map(renamed)
    a = CachedImages(m, image_size=16).groups.numpy()
    b = CachedImages(type(m)(other, m.classes), image_size=16).groups.numpy()
    assert (a == b).all()
    # still one group per patient
    assert len(set(zip(a, m.df["patient_key"], strict=True))) == len(keys) == a.max() + 1
