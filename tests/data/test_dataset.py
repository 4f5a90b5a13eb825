"""Datasets over a manifest: in memory and streamed (packed cache), the auto choice, memory."""

from __future__ import annotations

import gc
import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from medcl.data.dataset import CachedImages, StreamedImages, open_images
from medcl.data.manifest import Manifest, new_frame, read_manifest
from medcl.errors import MedclError


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


def _reference(path: str, size: int) -> torch.Tensor:
    """The resize written out: bilinear, antialiased when shrinking, from the .npy itself."""
    x = torch.from_numpy(np.load(path))[None]
    return F.interpolate(
        x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )[0]


def test_streamed_and_in_memory_give_the_same_items(tiny_manifest):
    m = read_manifest(tiny_manifest)
    mem = CachedImages(m, 16)
    lazy = StreamedImages(m, 16)
    assert lazy.packed is not None and lazy.packed.is_file() and lazy.built
    assert len(lazy) == len(mem) == len(m)
    for i in (0, 5, len(m) - 1):
        a, b = mem[i], lazy[i]
        assert torch.allclose(a[0], b[0], atol=1e-6)
        assert torch.allclose(b[0], _reference(m.df["cache_path"][i], 16), atol=1e-5)
        assert a[1:] == b[1:]
    assert torch.allclose(mem.images, lazy.batch(), atol=1e-6)
    # .images of a streamed set reads what is indexed: a row, a slice, a list of rows
    stack = lazy.images
    assert len(stack) == len(m) and stack.shape == mem.images.shape
    assert torch.allclose(stack[3], mem.images[3], atol=1e-6)
    assert torch.allclose(stack[-1], mem.images[-1], atol=1e-6)
    assert torch.allclose(stack[4:9], mem.images[4:9], atol=1e-6)
    assert torch.allclose(stack[[9, 1]], mem.images[[9, 1]], atol=1e-6)
    assert torch.allclose(stack.materialise(), mem.images, atol=1e-6)
    assert torch.equal(mem.labels, lazy.labels) and torch.equal(mem.groups, lazy.groups)
    assert lazy.image_ids == mem.image_ids and lazy.modality == mem.modality == "MR"
    # a DataLoader batch (read through __getitems__) matches item by item, in sampler order
    order = [7, 2, 3, 4, 30, 0]
    loader = DataLoader(lazy, batch_sampler=[order])
    x, labels, groups, idx = next(iter(loader))
    assert idx.tolist() == order
    assert torch.allclose(x, mem.images[order], atol=1e-6)
    assert labels.tolist() == mem.labels[order].tolist()


def test_packed_file_reused_and_rebuilt_when_rows_change(tiny_manifest):
    m = read_manifest(tiny_manifest)
    first = StreamedImages(m, 16)
    stamp = first.packed.stat().st_mtime_ns
    again = StreamedImages(m, 16)
    assert again.packed == first.packed and not again.built
    assert again.packed.stat().st_mtime_ns == stamp
    fewer = m.subset(m.df["split"] == "train")
    other = StreamedImages(fewer, 16)
    assert other.built and other.packed != first.packed
    x = torch.stack([other[i][0] for i in range(len(other))])
    assert torch.allclose(x, CachedImages(fewer, 16).images, atol=1e-6)
    # another image size is another packed file
    assert StreamedImages(m, 8).packed.parent.name == "8"


def test_auto_holds_in_memory_under_the_budget_and_streams_over_it(tiny_manifest, caplog, capsys):
    m = read_manifest(tiny_manifest)  # 36 images at 16² = 36 KiB
    with caplog.at_level(logging.INFO, logger="medcl.data.dataset"):
        small = open_images(m, 16, in_memory="auto", memory_budget_mb=1)
        big = open_images(m, 16, in_memory="auto", memory_budget_mb=0.01)
        forced = open_images(m, 16, in_memory=True, memory_budget_mb=0.01)
    assert isinstance(small, CachedImages) and isinstance(forced, CachedImages)
    assert isinstance(big, StreamedImages)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "held in memory" in lines[0] and "under the 1 MB budget" in lines[0]
    assert "streamed" in lines[1] and "over the 0.01 MB budget" in lines[1]
    assert "in_memory=true" in lines[2]
    assert capsys.readouterr().err == ""  # quiet unless it is a console run
    open_images(m, 16, memory_budget_mb=0.01, progress=True)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("images: 36 rows") and "streamed" in line and "over the" in line
    with pytest.raises(MedclError, match="in_memory"):
        open_images(m, 16, in_memory="sometimes")


def _shard_manifest(root: Path, n: int, size: int = 8) -> Manifest:
    """``n`` tiny images as rows of one shard file (``cache_path`` = ``shard.npy#i``)."""
    rng = np.random.default_rng(n)
    shard = root / "ab" / f"ab{n}_train_c0000000.npy"
    shard.parent.mkdir(parents=True, exist_ok=True)
    np.save(shard, rng.random((n, 1, size, size), dtype=np.float32))
    rows = [
        {
            "image_id": f"i{i}",
            "source_id": "s",
            "patient_key": f"p{i}",
            "study_key": f"p{i}",
            "modality": "OT",
            "split": "train",
            "sha256": f"{i:064x}",
            "dims": 2,
            "rows": size,
            "cols": size,
            "slices": 1,
            "cache_path": f"{shard}#{i}",
        }
        for i in range(n)
    ]
    return Manifest(new_frame(rows), [])


def _iteration_peak(ds) -> int:
    """Peak traced bytes while reading every item once (through a DataLoader and by index)."""
    gc.collect()
    tracemalloc.start()
    try:
        for batch in DataLoader(ds, batch_size=64, shuffle=True):
            del batch
        for i in range(len(ds)):
            ds[i]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streamed_memory_does_not_grow_with_the_number_of_images(tmp_path):
    small = StreamedImages(_shard_manifest(tmp_path / "a.cache", 500), 8)
    large = StreamedImages(_shard_manifest(tmp_path / "b.cache", 2000), 8)
    assert large.packed.parent.parent.parent == tmp_path / "b.cache"
    peak_small, peak_large = _iteration_peak(small), _iteration_peak(large)
    # 2000 images of 8² float32 are 500 KiB: holding them would show; reading must not
    assert peak_large < 256 * 1024
    assert peak_large < 1.5 * peak_small + 64 * 1024


def _resident_bytes() -> int:
    """This process's resident set size (Linux ``/proc``), which sees torch's allocator too."""
    import os

    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _live_tensor_bytes() -> int:
    """Bytes held by the tensors the garbage collector can reach."""
    import warnings

    gc.collect()
    with warnings.catch_warnings():  # isinstance() on deprecated torch objects warns
        warnings.simplefilter("ignore")
        tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
    return sum(t.untyped_storage().nbytes() for t in tensors if t.device.type == "cpu")


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="needs Linux /proc")
def test_streamed_reading_holds_no_tensors(tmp_path):
    """Tracemalloc does not see tensors (torch allocates outside Python): here the resident
    memory and the live tensors are measured while 3000 images of 64² (47 MiB) stream through a
    DataLoader and by index; a dataset that kept what it read would grow by about that much."""
    ds = StreamedImages(_shard_manifest(tmp_path / "m.cache", 3000, size=64), 64)
    total = 3000 * 64 * 64 * 4
    for batch in DataLoader(ds, batch_size=64):  # warm up: allocator pools, lazy imports
        del batch
        break
    rss0, live0 = _resident_bytes(), _live_tensor_bytes()
    for _ in range(2):
        for batch in DataLoader(ds, batch_size=64, shuffle=True):
            del batch
    for i in range(len(ds)):
        ds[i]
    growth, live = _resident_bytes() - rss0, _live_tensor_bytes() - live0
    assert live < total / 20, f"{live / 2**20:.1f} MiB of tensors stay alive after reading"
    assert growth < total / 3, f"resident memory grew by {growth / 2**20:.1f} MiB"


def test_shard_rows_read_like_files(tmp_path):
    m = _shard_manifest(tmp_path / "c.cache", 20)
    stored = np.load(str(m.df["cache_path"][0]).split("#")[0])
    mem = CachedImages(m, None)
    assert torch.equal(mem.images, torch.from_numpy(stored))
    lazy = StreamedImages(m, None)
    assert lazy.packed is None
    assert torch.equal(lazy[13][0], torch.from_numpy(stored[13]))


def test_no_resize_keeps_native_shapes(tmp_path):
    shapes = [(1, 6, 9, 10), (1, 4, 5, 7)]
    rows = []
    for i, shape in enumerate(shapes):
        f = tmp_path / "cache" / f"v{i}.npy"
        f.parent.mkdir(exist_ok=True)
        np.save(f, np.full(shape, i, dtype=np.float32))
        rows.append(
            {
                "image_id": f"v{i}",
                "source_id": "s",
                "patient_key": f"p{i}",
                "study_key": "s",
                "modality": "CT",
                "sha256": f"{i:064x}",
                "dims": 3,
                "rows": shape[2],
                "cols": shape[3],
                "slices": shape[1],
                "cache_path": str(f),
            }
        )
    m = Manifest(new_frame(rows), [])
    for ds in (open_images(m, None, 3, in_memory=False), open_images(m, None, 3, in_memory=True)):
        assert [tuple(ds[i][0].shape) for i in range(2)] == shapes
        assert ds[1][0].max() == 1
    with pytest.raises(MedclError, match="differ in shape"):
        _ = open_images(m, None, 3, in_memory=True).images
    assert open_images(m, 4, 3, in_memory=False)[1][0].shape == (1, 4, 4, 4)
