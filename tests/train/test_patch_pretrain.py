"""3-D pretraining on random patches: the batch layout, the refusals, a tiny run end to end, and
``volume_mode: resize`` as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medcl.config import load_config
from medcl.data.dataset import CachedImages
from medcl.data.findings import encode_states
from medcl.data.manifest import Manifest, new_frame, read_manifest, write_manifest
from medcl.data.volumes import StoredVolumes
from medcl.errors import ConfigError, MedclError
from medcl.models.export import load_encoder
from medcl.train.datamodule import PretrainData
from medcl.train.patches import PatchViews, collate_patches
from medcl.train.pretrain import pretrain, resolve_inputs
from medcl.transforms.patches import VIEW_SHIFT
from tests.conftest import TINY_OVERRIDES


def make_volumes(root: Path, shape=(16, 16, 16), n_patients: int = 9, small: int = -1) -> Path:
    """3-D MR manifest: class = number of bright cubes; 6 train (3 labelled), 3 val patients,
    one volume each; patient ``small`` (if ≥ 0) gets a volume of depth 6."""
    rng = np.random.default_rng(0)
    cache = root / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(n_patients):
        cls = p % 3
        s = (6, *shape[1:]) if p == small else shape
        vol = rng.normal(0.3, 0.05, (1, *s)).astype(np.float32)
        for _ in range(cls):
            z, y, x = (int(rng.integers(0, n - 3)) for n in s)
            vol[0, z : z + 3, y : y + 3, x : x + 3] += 0.5
        f = cache / f"v{p}.npy"
        np.save(f, np.clip(vol, 0, 1))
        split = "train" if p < 6 else "val"
        rows.append(
            {
                "image_id": f"v{p}",
                "path": str(f),
                "patient_key": f"pk{p:02d}",
                "study_key": f"s{p}",
                "modality": "MR",
                "label": f"c{cls}" if (split == "val" or p < 3) else "",
                "split": split,
                "sha256": f"{p:064x}",
                "dims": 3,
                "rows": s[1],
                "cols": s[2],
                "slices": s[0],
                "cache_path": str(f),
                "intensity": "unit",
            }
        )
    return write_manifest(Manifest(new_frame(rows), ["c0", "c1", "c2"]), root / "split.csv")


PATCH = ["data.volume_mode=patches", "data.patch_size=8", "data.patches_per_volume=3"]


def _cfg(manifest, out, *extra):
    return load_config(
        None,
        [
            f"data.manifest={manifest}",
            f"out={out}",
            *TINY_OVERRIDES,
            "data.batch_size=4",
            "optim.epochs=1",
            "optim.max_steps=2",
            *extra,
        ],
    )


def test_config_keys_are_checked():
    cfg = load_config(None, [])
    assert cfg.data.volume_mode == "resize"  # today's behaviour is the default
    for override, key in [
        ("data.volume_mode=tiles", "data.volume_mode"),
        ("data.patch_size=0", "data.patch_size"),
        ("data.patches_per_volume=0", "data.patches_per_volume"),
        ("data.patch_overlap=1.0", "data.patch_overlap"),
        ("data.patch_overlap=-0.1", "data.patch_overlap"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
            load_config(None, [override])
        assert "\n" not in str(e.value)


def test_patch_views_give_k_regions_of_v_views_flattened_with_their_groups(tmp_path):
    m = read_manifest(make_volumes(tmp_path))
    train = m.subset(m.df["split"] == "train")
    vols = StoredVolumes(train)
    calls = []

    def per_sample(v):
        calls.append(tuple(v.shape))
        return v + 1.0

    ds = PatchViews(vols, 8, 3, 2, per_sample, torch.Generator().manual_seed(0))
    assert len(ds) == 6 and torch.equal(ds.groups, vols.groups)  # attributes pass through
    items = [ds[i] for i in (0, 4)]
    assert items[0][0].shape == (3, 2, 1, 8, 8, 8)
    assert calls == [(1, 8, 8, 8)] * 12  # the per-sample part ran once per view
    x, labels, groups, index = collate_patches(items)
    assert x.shape == (6, 2, 1, 8, 8, 8)
    assert labels.tolist() == [int(vols.labels[0])] * 3 + [int(vols.labels[4])] * 3
    assert groups.tolist() == [int(vols.groups[0])] * 3 + [int(vols.groups[4])] * 3
    assert index.tolist() == [0, 0, 0, 4, 4, 4]
    # the two views of a region are crops of this volume (found by explicit search over every
    # position) within 2m voxels of each other per axis
    vol = vols.volume(0)[0] + 1.0
    m_ = int(VIEW_SHIFT * 8)
    for r in range(3):
        za = _where(vol, items[0][0][r, 0, 0])
        zb = _where(vol, items[0][0][r, 1, 0])
        assert all(abs(u - w) <= 2 * m_ for u, w in zip(za, zb, strict=True))


def _where(vol, patch):
    for z, y, x in np.ndindex(*(n - 7 for n in vol.shape)):
        if torch.equal(vol[z : z + 8, y : y + 8, x : x + 8], patch):
            return z, y, x
    raise AssertionError("not a crop")


def test_patch_larger_than_a_volume_is_refused_before_training(tmp_path):
    man = make_volumes(tmp_path, small=2)
    cfg = _cfg(man, tmp_path / "run", *PATCH)
    with pytest.raises(
        MedclError, match=r"data\.patch_size=8 .*volume v2 \(stored shape 6×16×16\)"
    ):
        resolve_inputs(cfg)
    assert not (tmp_path / "run").exists()
    with pytest.raises(MedclError, match="data.volume_mode=patches needs 3-D"):
        from tests.conftest import make_manifest

        resolve_inputs(_cfg(make_manifest(tmp_path / "flat"), tmp_path / "run2", *PATCH))


def test_tiny_patch_pretraining_end_to_end(tmp_path):
    man = make_volumes(tmp_path / "data")
    out = tmp_path / "run"
    cfg = _cfg(man, out, *PATCH, "data.patch_overlap=0.5", "optim.epochs=2")
    r = pretrain(cfg, progress=False)
    assert r.steps == 2
    assert "val/knn_bacc" in r.metrics  # the monitor embedded volumes by grid patches
    enc, description = load_encoder(out)
    assert description.volume is not None and description.volume.patch_size == 8
    meta = torch.load(out / "encoder.pt", weights_only=True)["meta"]  # the keys on disk
    assert meta["image_size"] == 8 and meta["spatial_dims"] == 3
    assert meta["volume"] == {
        "mode": "patches",
        "patch_size": 8,
        "overlap": 0.5,
        "patches_per_volume": 3,
        "in_plane_size": 16,
    }
    assert enc(torch.rand(2, 1, 8, 8, 8)).shape == (2, enc.out_dim)


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_patch_batches_reach_the_module_as_b_times_k_samples(tmp_path, in_memory):
    """Held in memory or read from the cache files, the loader gives B·k cropped samples."""
    man = make_volumes(tmp_path)
    cfg = _cfg(man, tmp_path / "run", *PATCH, f"data.in_memory={in_memory}")
    manifest, preset, dims, _ = resolve_inputs(cfg)
    dm = PretrainData(cfg, manifest, preset, dims)
    dm.setup()
    x, labels, groups, index = next(iter(dm.train_dataloader()))
    b = cfg.data.batch_size
    assert x.shape == (b * 3, cfg.augment.views, 1, 8, 8, 8)
    assert labels.shape == groups.shape == index.shape == (b * 3,)
    assert (groups.reshape(b, 3) == groups.reshape(b, 3)[:, :1]).all()  # one group per volume
    vols = dm.train_set.volumes
    for i in range(len(vols)):  # the stored arrays, unresized
        ref = np.load(manifest.df.loc[manifest.df["split"] == "train", "cache_path"].iloc[i])
        assert torch.equal(vols.volume(i), torch.from_numpy(ref))


def test_resize_mode_is_unchanged(tmp_path):
    man = make_volumes(tmp_path)
    cfg = _cfg(man, tmp_path / "run")  # default volume_mode: resize
    manifest, preset, dims, _ = resolve_inputs(cfg)
    dm = PretrainData(cfg, manifest, preset, dims)
    dm.setup()
    assert not dm.patches and isinstance(dm.train_set, CachedImages)
    ref = CachedImages(manifest.subset(manifest.df["split"] == "train"), 16, 3)
    torch.testing.assert_close(dm.train_set.images, ref.images)
    x, *_ = next(iter(dm.train_dataloader()))
    assert x.shape[-3:] == (16, 16, 16)


class _WholeVolumes(torch.utils.data.Dataset):
    """Only items: PatchViews then crops the loaded volume (no shape/crop reader)."""

    def __init__(self, vols):
        self.vols = vols

    def __len__(self):
        return len(self.vols)

    def __getitem__(self, i):
        return self.vols[i]


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_cube_reads_equal_crops_of_the_whole_volume(tmp_path, in_memory):
    """Reading only the sampled cubes (memory-mapped when streamed) gives the crops of the
    loaded volume at the same corners."""
    m = read_manifest(make_volumes(tmp_path))
    vols = StoredVolumes(m, in_memory=in_memory)
    assert vols.shape(3) == (16, 16, 16)
    fast = PatchViews(vols, 8, 3, 2, generator=torch.Generator().manual_seed(5))
    slow = PatchViews(_WholeVolumes(vols), 8, 3, 2, generator=torch.Generator().manual_seed(5))
    for i in range(len(vols)):
        a, b = fast[i], slow[i]
        assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def make_multilabel_volumes(root: Path) -> Path:
    """:func:`make_volumes` with findings: ``cube`` (at least one bright cube) and ``pair`` (two);
    volume v1's ``pair`` is unknown."""
    m = read_manifest(make_volumes(root))
    df = m.df.copy()
    for i, row in df.iterrows():
        if row["label"]:
            n = int(row["label"][1:])
            states = [int(n >= 1), -1 if row["image_id"] == "v1" else int(n >= 2)]
            df.loc[i, "label"] = encode_states(states, ["cube", "pair"])
    return write_manifest(Manifest(df, ["cube", "pair"], {"task": "multilabel"}), root / "ml.csv")


def test_multilabel_patches_carry_the_finding_states(tmp_path):
    """Each of a volume's k regions carries the volume's (K,) findings; a tiny run trains and
    monitors per-finding kNN AUROC on grid-embedded volumes."""
    man = make_multilabel_volumes(tmp_path / "data")
    m = read_manifest(man)
    vols = StoredVolumes(m.subset(m.df["split"] == "train"))
    ds = PatchViews(vols, 8, 3, 2, generator=torch.Generator().manual_seed(0))
    _, labels, _, _ = collate_patches([ds[i] for i in (1, 2)])
    assert labels.tolist() == [[1, -1]] * 3 + [[1, 1]] * 3
    assert vols[1][1].tolist() == [1, -1]
    r = pretrain(_cfg(man, tmp_path / "run", *PATCH, "optim.epochs=2"), progress=False)
    assert r.steps == 2 and r.metrics["train/sup"] > 0
    assert 0.0 <= r.metrics["val/knn_macro_auroc"] <= 1.0
