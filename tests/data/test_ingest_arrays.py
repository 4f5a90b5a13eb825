"""Array files (MedMNIST ``.npz``) in chunks: rows by column, any number of workers, same bytes."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from medcl.data import cache
from medcl.data.cache import cache_dir
from medcl.data.ingest import decode, ingest
from medcl.data.ingest.rowblock import RowBlock
from medcl.data.pseudonym import Pseudonymizer, load_or_create_secret
from medcl.data.readers import ReadContext, Source
from medcl.data.readers import npz as npz_reader

SHARD = 128
"""Images per chunk in these tests (several chunks per split)."""


def _images_file(path: Path, volumes: bool = False, compressed: bool = False) -> Path:
    """Three splits, patient ids (3 images each), labels; ``volumes``: (N, 3, H, W) images;
    ``compressed``: ``np.savez_compressed`` (the workers read temporary copies of the images)."""
    rng = np.random.default_rng(11)
    sizes = {"train": 1000, "val": 150, "test": 170}
    arrays = {}
    first = 0
    for split, n in sizes.items():
        shape = (n, 3, 9, 7) if volumes else (n, 9, 7)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 5, (n, 1))
        arrays[f"{split}_patient_ids"] = (first + np.arange(n)) // 3
        first += n + 3
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("volumes", "compressed"),
    [(False, False), (True, False), (False, True)],
    ids=["images", "volumes", "compressed"],
)
def test_array_file_with_one_and_two_workers_gives_the_same_bytes(
    tmp_path, ingest_secret, monkeypatch, volumes, compressed
):
    """workers=1 (chunks inline) and workers=2 (chunks in the pool, blocks of columns sent back):
    the manifest, its sidecar, the rejects and the state are the same byte for byte, and the
    state's rows are the ones the per-image reader gives."""
    monkeypatch.setattr(cache, "SHARD_ROWS", SHARD)
    monkeypatch.setattr(decode, "BULK_BYTES", 0)  # workers=2: the chunks go to the pool
    src = tmp_path / "src"
    src.mkdir()
    f = _images_file(src / "a.npz", volumes, compressed)
    outs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}" / "m.csv"
        report = ingest(src, out, workers=workers, secret=ingest_secret, progress=False)
        assert report.rows == 1320 * (3 if volumes else 1)
        outs[workers] = out
    one, two = outs[1], outs[2]
    for name in ("m.csv", "m.meta.json", "m.rejects.csv", "m.cache/state.json"):
        assert (one.parent / name).read_bytes() == (two.parent / name).read_bytes(), name
    shards = sorted(p.name for p in cache_dir(one).glob("*/*.npy"))
    assert shards == sorted(p.name for p in cache_dir(two).glob("*/*.npy"))
    assert len(shards) > 10  # several chunks per split ran
    # the state's rows, field by field, are what the image-by-image reader says
    pz = Pseudonymizer(load_or_create_secret(ingest_secret))
    state = json.loads((one.parent / "m.cache" / "state.json").read_text())
    (record,) = state["files"].values()
    got = record["rows"]
    source = Source.load(f, "a.npz")
    want = list(npz_reader.read(source, ReadContext(pz, 2)))
    assert len(got) == len(want)
    per = 3 if volumes else 1
    starts: dict[str, int] = {}
    for row, d in zip(got, want, strict=True):
        image = int(d.suffix[len(d.split) + 1 :][:6])
        start = image - image % (SHARD // per)
        first = starts.setdefault(f"{d.split}{start}", row["order"])
        assert row == {
            "image_base": d.image_base,
            "order": d.order,
            "path": pz("source", "a.npz"),
            "patient_key": d.patient_key,
            "study_key": d.study_key,
            "modality": "OT",
            "sha256": source.sha256,
            "dims": 2,
            "rows": 9,
            "cols": 7,
            "slices": 1,
            "spacing_x": None,
            "spacing_y": None,
            "spacing_z": None,
            "cache_key": f"{source.sha256}_{d.split}_c{start:07d}#{d.order - first}",
            "intensity": "unit",
            "split": d.split,
            "label": d.label,
            "family": "npz",
            "members": [],
            "patient_ids": True,
        }


def _block() -> RowBlock:
    return RowBlock(
        3,
        ("a", "b%s", "c", "d", "e", "f"),
        {"a": ["x", 'é"\\%s', "\x00"], "c": [1, 2, 3], "e": [True, None, 2.5]},
        {"b%s": "k%d", "d": [], "f": None},
    )


def test_row_block_json_is_the_text_of_its_rows_as_dicts():
    b = _block()
    rows = list(b)
    assert rows[1] == {"a": 'é"\\%s', "b%s": "k%d", "c": 2, "d": [], "e": None, "f": None}
    assert b.to_json() == json.dumps(rows, separators=(",", ":"))
    only = RowBlock(2, ("p", "q"), {}, {"p": "%", "q": 1})
    assert only.to_json() == json.dumps(list(only), separators=(",", ":"))
    assert RowBlock(0, ("p",), {"p": []}, {}).to_json() == "[]"
    rows[0]["d"].append(1)  # a shared list is copied for each row
    assert list(b)[0]["d"] == []


def test_row_block_rendered_text_is_used_only_for_its_value():
    """A worker renders the rows' text with the value the state will give a field; the block
    with that value set writes that text, any other change renders again."""
    a = RowBlock(2, ("p", "o"), {"o": [0, 1]}, {"p": "file.npz"}).render_as("p", "sid")
    b = RowBlock(1, ("p", "o"), {"o": [2]}, {"p": "file.npz"}).render_as("p", "sid")
    both = pickle.loads(pickle.dumps(RowBlock.concat([a, b])))
    want = '[{"p":"sid","o":0},{"p":"sid","o":1},{"p":"sid","o":2}]'
    assert both.with_field("p", "sid", per_row=False).to_json() == want
    assert both.with_field("p", "sid", per_row=False).exact is not None
    assert both.with_field("p", "other", per_row=False).exact is None
    assert both.to_json() == want.replace("sid", "file.npz")
    assert both.with_field("o", [5, 6, 7], per_row=True).with_field("p", "sid", False).exact is None


def test_row_block_concat_select_map_and_pickle():
    a = RowBlock(2, ("p", "o", "s"), {"o": [0, 1]}, {"p": "f", "s": "train"})
    b = RowBlock(1, ("p", "o", "s"), {"o": [2]}, {"p": "f", "s": "val"})
    both = RowBlock.concat([a, b])
    assert both.constants == {"p": "f"} and both.columns["s"] == ["train", "train", "val"]
    assert list(both) == list(a) + list(b)
    mixed = RowBlock.concat([a, RowBlock(1, ("p", "o", "s"), {"o": [9]}, {"p": "f", "s": True})])
    assert mixed.columns["s"][-1] is True  # True and 1 are not merged into one constant
    picked = both.select(("o", "x"), default="-")
    assert list(picked)[2] == {"o": 2, "x": "-"}
    assert both.mapped("s", str.upper).counts("s") == {"TRAIN": 2, "VAL": 1}
    assert both.mapped("p", str.upper).constants["p"] == "F"
    assert pickle.loads(pickle.dumps(both)) == both
    with pytest.raises(ValueError):
        RowBlock(2, ("p",), {"p": [1]}, {})


def test_stored_arrays_are_views_of_the_file(tmp_path):
    f = _images_file(tmp_path / "a.npz")
    data = f.read_bytes()
    stored = npz_reader.stored_arrays(data)
    with np.load(f) as z:
        assert sorted(stored) == sorted(z.files)
        for name, (view, at) in stored.items():
            np.testing.assert_array_equal(view, z[name])
            assert view.base is not None  # no copy
            np.testing.assert_array_equal(at.map(str(f)), z[name])
    assert (
        npz_reader.stored_arrays(_images_file(tmp_path / "c.npz", compressed=True).read_bytes())
        == {}
    )


def test_array_file_changed_while_read_is_rejected(tmp_path, ingest_secret, monkeypatch):
    """The workers map the images from the source file: a file whose size or time changed since
    it was listed gives a reason, not rows of mixed content."""
    from medcl.data.ingest import arrays

    monkeypatch.setattr(decode, "BULK_BYTES", 0)
    monkeypatch.setattr(cache, "SHARD_ROWS", SHARD)
    src = tmp_path / "src"
    src.mkdir()
    f = _images_file(src / "a.npz")
    real = arrays.chunks_of

    def touching(*args):  # the file is touched once the chunks are planned
        yield from real(*args)
        os.utime(f, ns=(1, 10**9))

    monkeypatch.setattr(arrays, "chunks_of", touching)
    report = ingest(src, tmp_path / "m.csv", workers=2, secret=ingest_secret, progress=False)
    assert report.rows == 0 and report.reasons == {arrays.CHANGED_REASON: 1}


def test_shard_keys_are_the_keys_they_stand_for():
    from medcl.data.ingest.rowblock import ShardKeys

    keys = ShardKeys([("ab1_train_c0000000", 3), ("cd2_val_c0000000", 0), ("ef3_val_c0000005", 2)])
    want = [f"ab1_train_c0000000#{j}" for j in range(3)] + [
        "ef3_val_c0000005#0",
        "ef3_val_c0000005#1",
    ]
    assert list(keys) == want and len(keys) == 5
    assert [keys[i] for i in range(-5, 5)] == want + want
    assert keys[1:3] == want[1:3]
    with pytest.raises(IndexError):
        keys[5]
    assert keys.refs("/c") == [cache.cache_ref("/c", k) for k in want]
    assert keys.shards() == {"ab1_train_c0000000", "ef3_val_c0000005"}
    assert pickle.loads(pickle.dumps(keys)) == keys
    a = RowBlock(3, ("k", "p"), {"k": ShardKeys([("s", 3)])}, {"p": 1})
    b = RowBlock(1, ("k", "p"), {"k": ShardKeys([("t", 1)])}, {"p": 1})
    both = RowBlock.concat([a, b])
    assert isinstance(both.columns["k"], ShardKeys) and both.column("k") == ShardKeys(
        [("s", 3), ("t", 1)]
    )
    assert both.to_json() == json.dumps(list(both), separators=(",", ":"))
    mixed = RowBlock.concat([a, RowBlock(1, ("k", "p"), {"k": ["x#0"]}, {"p": 1})])
    assert mixed.columns["k"] == ["s#0", "s#1", "s#2", "x#0"]
