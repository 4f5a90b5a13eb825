"""Near-duplicates across splits: the perceptual hash against an explicit computation, and the
leak check on a phantom cohort with planted copies (re-exported under another patient id,
re-windowed, resized): every planted copy across splits found, no distinct image flagged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from medcl.cli.main import main
from medcl.data.ingest import ingest
from medcl.data.leaks import (
    drop_leaks,
    find_leaks,
    hamming,
    leak_report_path,
    packed,
    phash,
    read_leak_report,
)
from medcl.data.manifest import meta_path, read_manifest, write_manifest
from medcl.data.split import split_manifest
from medcl.data.synth import generate_cohort


def _reference_phash(image: np.ndarray, k: int = 16) -> np.ndarray:
    """pHash by its definition, for an image whose side is a multiple of 4k: block means, an
    explicit DCT-II basis (orthonormal), the k × k lowest frequencies without the constant term
    against their median."""
    n = 4 * k
    b = image.shape[0] // n
    small = image.reshape(n, b, n, b).mean(axis=(1, 3))
    x = np.arange(n)
    basis = np.array([np.cos(np.pi * (2 * x + 1) * u / (2 * n)) for u in range(n)])
    basis *= np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    coeffs = (basis @ small @ basis.T)[:k, :k].ravel()[1:]
    return coeffs > np.median(coeffs)


def test_phash_matches_its_definition():
    rng = np.random.default_rng(0)
    for _ in range(3):
        image = rng.random((128, 128)).cumsum(axis=0).cumsum(axis=1)  # smooth, like anatomy
        assert np.array_equal(phash(image), _reference_phash(image))


def test_phash_ignores_intensity_rescaling_and_resizing():
    rng = np.random.default_rng(1)
    image = rng.random((96, 96)).cumsum(axis=0).cumsum(axis=1)
    base = packed(phash(image)[None])
    rewindowed = packed(phash(0.4 * image + 120.0)[None])
    resized = np.asarray(Image.fromarray(image.astype(np.float32)).resize((64, 64)))
    other = rng.random((96, 96)).cumsum(axis=0).cumsum(axis=1)
    assert hamming(base, rewindowed)[0, 0] == 0
    assert hamming(base, packed(phash(resized)[None]))[0, 0] <= 6
    assert hamming(base, packed(phash(other)[None]))[0, 0] > 40


# (source image, kind of copy): each copy is filed under a new patient id
PLANTS = [
    (0, "re-exported"),
    (5, "re-exported"),
    (9, "re-windowed"),
    (14, "re-windowed"),
    (20, "resized"),
    (27, "resized"),
]


def _plant(cohort, files: list, index: int, kind: str, k: int) -> str:
    ds = pydicom.dcmread(files[index])
    pixels = ds.pixel_array
    if kind == "re-windowed":  # other stored values: a linear rescale of the same image
        pixels = (pixels.astype(np.float64) * 0.55 + 300).astype(pixels.dtype)
    elif kind == "resized":
        size = 48 if k % 2 else 96
        img = Image.fromarray(pixels.astype(np.float32)).resize((size, size), Image.BILINEAR)
        pixels = np.clip(np.asarray(img), 0, np.iinfo(pixels.dtype).max).astype(pixels.dtype)
        ds.Rows, ds.Columns = size, size
        ds.PixelSpacing = [float(s) * 64 / size for s in ds.PixelSpacing]
    ds.PixelData = pixels.tobytes()
    ds.PatientID = f"COPY{k:03d}"
    ds.PatientName = f"COPY^{k:03d}"
    for uid in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, uid, pydicom.uid.generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    rel = f"COPY{k:03d}/ST01/SE01/IM0001.dcm"
    (cohort / rel).parent.mkdir(parents=True)
    ds.save_as(cohort / rel)
    return rel


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A 30-patient phantom cohort with six planted copies, ingested and split; each copy's
    patient moved to a split other than its source's (the leak under test)."""
    root = tmp_path_factory.mktemp("leaks")
    cohort = root / "cohort"
    generate_cohort(cohort, patients=30, size=64, seed=0, progress=False)
    labels = pd.read_csv(cohort / "labels.csv", dtype=str)
    files = [cohort / p for p in labels["path"]]
    sources = {}
    for k, (index, kind) in enumerate(PLANTS):
        rel = _plant(cohort, files, index, kind, k)
        sources[rel] = (labels["path"][index], kind)
        labels.loc[len(labels)] = [rel, labels["label"][index]]
    labels.to_csv(cohort / "labels.csv", index=False)
    secret = root / "private" / "secret.key"
    ingest(cohort, root / "m.csv", labels=cohort / "labels.csv", secret=secret, progress=False)
    m = split_manifest(read_manifest(root / "m.csv"), val=0.25, test=0.25, seed=0)
    from medcl.data.pseudonym import PathMap

    real = {v: k for k, v in PathMap.beside(secret).load().items()}
    sid = {rel: real[str(cohort / rel)] for rel in [*sources, *(s for s, _ in sources.values())]}
    df = m.df
    row = {rel: df.index[df["source_id"] == s][0] for rel, s in sid.items()}
    expected = {}
    for rel, (src, kind) in sources.items():
        src_split = df.at[row[src], "split"]
        other = {"train": "test", "val": "train", "test": "val"}[src_split]
        df.loc[df["patient_key"] == df.at[row[rel], "patient_key"], "split"] = other
        expected[frozenset((df.at[row[rel], "image_id"], df.at[row[src], "image_id"]))] = kind
    split = write_manifest(m, root / "split.csv")
    return root, read_manifest(split), expected


def test_every_planted_copy_across_splits_is_found_and_nothing_else(planted):
    root, m, expected = planted
    report = find_leaks(m)
    got = {
        frozenset((a, b)): bits
        for a, b, bits in report.pairs[["image_id_a", "image_id_b", "hash_bits"]].itertuples(
            index=False
        )
    }  # noqa: E501
    assert set(got) == set(expected), report.table()
    assert {kind for kind in expected.values()} == {"re-exported", "re-windowed", "resized"}
    assert report.hashed == len(m)
    order = {"train": 0, "val": 1, "test": 2}
    splits = zip(report.pairs.split_a, report.pairs.split_b, strict=True)
    assert all(order[a] < order[b] for a, b in splits)
    # the margin: the closest two distinct images of different patients
    from medcl.data.cache import load_cached

    df = m.df
    codes = packed(np.stack([phash(load_cached(p)) for p in df["cache_path"]]))
    d = hamming(codes, codes)
    planted_ids = {i for pair in expected for i in pair}
    distinct = df["patient_key"].to_numpy()[:, None] != df["patient_key"].to_numpy()[None, :]
    ids = df["image_id"].to_numpy()
    copy = np.isin(ids, list(planted_ids))
    closest = d[distinct & ~(copy[:, None] & copy[None, :])].min()
    assert closest > report.max_bits
    print(f"\n{report.summary()}\n{report.table()}\nclosest distinct pair: {closest} bits")


def test_embeddings_confirm_the_hash_pairs(planted):
    """An encoder stand-in (the 8 × 8 average image, centred): every pair gets its cosine
    distance; pairs closer than max_cosine are added even with the hash threshold at 0."""
    root, m, expected = planted
    from medcl.data.cache import load_cached
    from medcl.data.leaks import _area_resize, plane

    def embed(rows):
        feats = [_area_resize(plane(load_cached(p)), 8).ravel() for p in rows.df["cache_path"]]
        feats = np.stack(feats)
        return feats - feats.mean(axis=1, keepdims=True)

    both = find_leaks(m, embed=embed, max_cosine=0.01)
    hashed = both.pairs[both.pairs["found_by"].str.contains("hash")]
    assert {frozenset(p) for p in hashed[["image_id_a", "image_id_b"]].to_numpy()} == set(expected)
    assert (hashed["cosine"] < 0.01).all()
    by_embedding = find_leaks(m, max_bits=0, embed=embed, max_cosine=0.01)
    pairs = {frozenset(p) for p in by_embedding.pairs[["image_id_a", "image_id_b"]].to_numpy()}
    assert set(expected) <= pairs


def test_split_cli_reports_and_drops_the_later_copies(planted, tmp_path, capsys):
    """`medcl split --drop-leaks` on the planted cohort's ingest manifest: the report lists the
    pairs by pseudonymous id with their distance, the later split's copies leave the manifest
    and the sidecar lists them."""
    root, _, _ = planted
    out = tmp_path / "s.csv"
    assert main(["split", str(root / "m.csv"), "--out", str(out), "--val", "0.25",
                 "--test", "0.25", "--drop-leaks"]) == 0  # fmt: skip
    console = capsys.readouterr().out
    report = read_leak_report(out)
    assert report is not None and leak_report_path(out).is_file()
    assert "leak check:" in console
    split = read_manifest(out)
    if len(report):
        assert "--drop-leaks: removed" in console
        assert not set(report["image_id_b"]) & set(split.df["image_id"])
        assert set(report["image_id_a"]) <= set(split.df["image_id"])
        sidecar = json.loads(meta_path(out).read_text())
        assert {r["image_id_b"] for r in sidecar["dropped_leaks"]} == set(report["image_id_b"])
    text = leak_report_path(out).read_text() + console
    assert "COPY" not in text and str(root) not in text  # no patient id, no path


def test_drop_leaks_removes_exactly_the_later_copies(planted):
    _, m, expected = planted
    report = find_leaks(m)
    kept, dropped = drop_leaks(m, report)
    assert len(dropped) == len(expected) and len(kept) == len(m) - len(expected)
    assert find_leaks(kept).pairs.empty
