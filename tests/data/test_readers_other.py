"""NIfTI, PNG/TIFF/JPEG and MedMNIST readers (through ``ingest`` where labels matter)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path
from PIL import Image

from medcl.data.cache import load_cached
from medcl.data.dataset import CachedImages
from medcl.data.ingest import ingest
from medcl.data.manifest import read_manifest
from medcl.data.pseudonym import Pseudonymizer, load_or_create_secret
from medcl.data.readers import ReadContext, Source, Unreadable, read, sniff
from medcl.errors import MedclError

NIB_DATA = Path(data_path)
CTX = ReadContext(Pseudonymizer(b"k" * 32))


def _read(path: Path, dims: int = 2):
    return list(read(Source.load(path, path.name), ReadContext(CTX.pseudonymize, dims)))


# NIfTI -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, rows_2d, rows_3d",
    [
        ("anatomical.nii", 25, 1),  # (33, 41, 25)
        ("standard.nii.gz", 7, 1),  # (4, 5, 7)
        ("example4d.nii.gz", 48, 2),  # (128, 96, 24, 2): 2 volumes
        ("example_nifti2.nii.gz", 24, 2),  # NIfTI-2, (32, 20, 12, 2)
    ],
)
def test_nifti_row_counts(name, rows_2d, rows_3d):
    rows = _read(NIB_DATA / name)
    assert len(rows) == rows_2d
    assert len({r.image_base for r in rows}) == rows_2d
    assert len({r.patient_key for r in rows}) == 1
    volumes = _read(NIB_DATA / name, dims=3)
    assert len(volumes) == rows_3d and volumes[0].array.ndim == 3


def test_nifti_shapes_follow_canonical_axial_layout():
    img = nib.load(NIB_DATA / "anatomical.nii")  # (33, 41, 25), LAS
    rows = _read(NIB_DATA / "anatomical.nii")
    assert rows[0].array.shape == (41, 33)  # (y, x): rows anterior→posterior, cols right→left
    zooms = nib.as_closest_canonical(img).header.get_zooms()
    assert rows[0].spacing[:2] == (pytest.approx(zooms[0]), pytest.approx(zooms[1]))


def test_nifti_orientation_is_canonicalised(tmp_path):
    data = np.zeros((4, 5, 3), dtype=np.float32)
    data[0, 1, 2] = 1  # a marker voxel
    ras = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    # the same volume stored with x flipped (LAS): the reader must undo the flip
    las_affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    las_affine[0, 3] = 6.0
    las = nib.Nifti1Image(data[::-1].copy(), las_affine)
    nib.save(ras, tmp_path / "ras.nii")
    nib.save(las, tmp_path / "las.nii.gz")
    a = _read(tmp_path / "ras.nii", dims=3)[0].array
    b = _read(tmp_path / "las.nii.gz", dims=3)[0].array
    np.testing.assert_array_equal(a, b)
    # (z, y reversed, x reversed): marker at z=2, y=1 -> row 3, x=0 -> col 3
    assert a[2, 3, 3] == 1


def test_nifti_pair_and_cifti_have_reasons():
    with pytest.raises(Unreadable, match="CIFTI"):
        _read(NIB_DATA / "row_major.dconn.nii")
    with pytest.raises(Unreadable, match="pair"):
        sniff(Source.load(NIB_DATA / "nifti1.hdr", "nifti1.hdr"))


# PNG / TIFF / JPEG -------------------------------------------------------------------------------


def test_16_bit_png_keeps_more_than_256_levels(tmp_path, ingest_secret):
    ramp = (np.arange(64 * 64, dtype=np.uint32) * 13 % 65536).astype(np.uint16).reshape(64, 64)
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(ramp).save(src / "a.png")
    assert Image.open(src / "a.png").mode.startswith("I")
    ingest(src, tmp_path / "m.csv", secret=ingest_secret, progress=False)
    df = read_manifest(tmp_path / "m.csv").df
    cached = load_cached(df.loc[0, "cache_path"])
    assert cached.shape == (1, 64, 64) and cached.dtype == np.float32
    assert len(np.unique(cached)) > 256
    lo, hi = np.percentile(ramp.astype(np.float64), [0.5, 99.5])  # the documented 'unit' rule
    np.testing.assert_allclose(cached[0], np.clip((ramp - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_16_bit_tiff_and_rgb_jpeg(tmp_path):
    ramp = np.arange(1000, dtype=np.uint16).reshape(25, 40) * 60
    Image.fromarray(ramp).save(tmp_path / "t.tif")
    (row,) = _read(tmp_path / "t.tif")
    assert len(np.unique(row.array)) == 1000
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "p.jpg", quality=100)
    (row,) = _read(tmp_path / "p.jpg")
    assert abs(row.array.mean() - 0.587 * 200) < 3


def test_class_folders_label_images(tmp_path, ingest_secret):
    for cls, n in (("benign", 2), ("malignant", 3)):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(
                tmp_path / "src" / cls / f"{i}.png"
            )
    report = ingest(tmp_path / "src", tmp_path / "m.csv", secret=ingest_secret, progress=False)
    m = read_manifest(tmp_path / "m.csv")
    assert report.rows == 5 and m.classes == ["benign", "malignant"]
    assert sorted(m.df["label"]) == ["benign"] * 2 + ["malignant"] * 3
    assert m.df["patient_key"].nunique() == 5  # no patient ids: one per path


def test_class_folder_rule_needs_every_image_in_a_first_level_folder(tmp_path, ingest_secret):
    (tmp_path / "src" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "src" / "a" / "1.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "src" / "2.png")
    ingest(tmp_path / "src", tmp_path / "m.csv", secret=ingest_secret, progress=False)
    assert set(read_manifest(tmp_path / "m.csv").df["label"]) == {""}


def test_labels_csv_with_patient_column(tmp_path, ingest_secret):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(src / f"{i}.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,patient\n0.png,x,p1\n1.png,y,p1\n./2.png,x,p2\n")
    ingest(
        src,
        tmp_path / "m.csv",
        labels=labels,
        classes=["x", "y"],
        secret=ingest_secret,
        progress=False,
    )
    m = read_manifest(tmp_path / "m.csv")
    assert list(m.df["label"]) == ["x", "y", "x"] and m.classes == ["x", "y"]
    assert m.df["patient_key"].nunique() == 2


def test_labels_outside_classes_and_unmatched_paths_are_errors(tmp_path, ingest_secret):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "a.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na.png,zebra\n")
    with pytest.raises(MedclError, match="zebra"):
        ingest(
            src,
            tmp_path / "m.csv",
            labels=labels,
            classes=["x"],
            secret=ingest_secret,
            progress=False,
        )
    labels.write_text("path,label\nsrc/a.png,x\n")
    with pytest.raises(MedclError, match="relative to SOURCE"):
        ingest(src, tmp_path / "m.csv", labels=labels, secret=ingest_secret, progress=False)


# MedMNIST ----------------------------------------------------------------------------------------


def _medmnist(path: Path, n=(5, 2, 3), shape=(28, 28), label_cols=1, classes=3) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n, strict=True):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, classes, (k, label_cols), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return path


def test_medmnist_npz_rows_labels_and_splits(tmp_path, ingest_secret):
    f = _medmnist(tmp_path / "pneumoniamnist.npz")
    report = ingest(f, tmp_path / "m.csv", secret=ingest_secret, progress=False)
    m = read_manifest(tmp_path / "m.csv")
    data = np.load(f)
    assert report.rows == 10 and report.rejected == 0
    assert list(m.df["split"]) == ["train"] * 5 + ["val"] * 2 + ["test"] * 3
    expected = [str(int(v)) for s in ("train", "val", "test") for v in data[f"{s}_labels"][:, 0]]
    assert list(m.df["label"]) == expected
    assert m.classes == [str(i) for i in range(max(map(int, expected)) + 1)]
    assert m.df["patient_key"].nunique() == 10  # each image is its own patient
    assert "no patient identifiers" in " ".join(m.extra["ingest"]["notes"])
    first = load_cached(m.df.loc[0, "cache_path"])
    assert first.shape == (1, 28, 28)


def test_medmnist_class_names_and_colour(tmp_path, ingest_secret):
    f = _medmnist(tmp_path / "blood.npz", shape=(28, 28, 3), classes=2)
    ingest(f, tmp_path / "m.csv", classes=["neg", "pos"], secret=ingest_secret, progress=False)
    m = read_manifest(tmp_path / "m.csv")
    assert set(m.df["label"]) <= {"neg", "pos"} and m.classes == ["neg", "pos"]


def test_medmnist_3d_volumes(tmp_path, ingest_secret):
    f = _medmnist(tmp_path / "organ3d.npz", n=(2, 1, 1), shape=(8, 28, 28))
    assert ingest(f, tmp_path / "a.csv", dims=3, secret=ingest_secret, progress=False).rows == 4
    assert ingest(f, tmp_path / "b.csv", dims=2, secret=ingest_secret, progress=False).rows == 32


def test_multi_label_npz_refused_as_multiclass_in_one_line(tmp_path, ingest_secret):
    # N×K labels are a multi-label task (tests/data/test_ingest_multilabel.py); asked to read
    # them as one class per image, ingest refuses in one line
    f = _medmnist(tmp_path / "chestmnist.npz", label_cols=14, classes=2)
    with pytest.raises(MedclError) as info:
        ingest(f, tmp_path / "m.csv", secret=ingest_secret, progress=False, task="multiclass")
    message = str(info.value)
    assert "multi-label" in message and "N×K" in message and "\n" not in message


def test_other_archives_rejected_with_reason(tmp_path, ingest_secret):
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "weights.npz", a=np.zeros(3))
    np.save(src / "x.npy", np.zeros(3))
    shutil.copy(NIB_DATA / "analyze.hdr", src / "analyze.hdr")
    report = ingest(src, tmp_path / "m.csv", secret=ingest_secret, progress=False)
    assert report.rows == 0 and report.rejected == 3
    text = " ".join(report.reasons)
    assert "MedMNIST" in text and ".npy" in text and "Analyze" in text


def test_medmnist_rerun_with_class_names_reuses_rows(tmp_path, ingest_secret):
    f = _medmnist(tmp_path / "derma.npz", classes=3)
    names = ["a", "b", "c"]
    first = ingest(f, tmp_path / "m.csv", classes=names, secret=ingest_secret, progress=False)
    labels = list(read_manifest(tmp_path / "m.csv").df["label"])
    again = ingest(f, tmp_path / "m.csv", classes=names, secret=ingest_secret, progress=False)
    assert again.skipped_unchanged == first.files_seen == 1
    assert list(read_manifest(tmp_path / "m.csv").df["label"]) == labels
    assert set(labels) <= set(names)


def _with_ids(path: Path, ids: dict[str, list], name: str = "patient_ids") -> Path:
    rng = np.random.default_rng(1)
    arrays = {}
    for split, values in ids.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (len(values), 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (len(values), 1), dtype=np.uint8)
        arrays[f"{split}_{name}"] = np.asarray(values)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("name", ["patient_ids", "groups"])
def test_npz_patient_ids_key_the_patients(tmp_path, ingest_secret, name):
    ids = {"train": ["A7", "B2", "A7", "C9"], "test": ["D1", "D1"]}
    f = _with_ids(tmp_path / "org.npz", ids, name)
    ingest(f, tmp_path / "m.csv", secret=ingest_secret, progress=False)
    m = read_manifest(tmp_path / "m.csv")
    pz = Pseudonymizer(load_or_create_secret(ingest_secret))
    # the keyed hash a DICOM PatientID gets; rows of one id share it, other ids differ
    assert list(m.df["patient_key"]) == [pz("patient", i) for i in ids["train"] + ids["test"]]
    assert m.df["patient_key"].nunique() == 4
    assert not any(v in m.df.to_csv() for v in ("A7", "B2", "C9", "D1"))
    notes = " ".join(m.extra["ingest"]["notes"])
    assert "keyed hash of that id" in notes and "own patient" not in notes
    # the patient-aware parts see one group per patient
    ds = CachedImages(m.subset(m.df["split"] == "train"), 8)
    g = ds.groups.tolist()
    assert g[0] == g[2] and len(set(g)) == 3


def test_npz_integer_patient_ids(tmp_path, ingest_secret):
    f = _with_ids(tmp_path / "n.npz", {"train": [3, 3, 4], "val": [5]})
    ingest(f, tmp_path / "m.csv", secret=ingest_secret, progress=False)
    pz = Pseudonymizer(load_or_create_secret(ingest_secret))
    keys = list(read_manifest(tmp_path / "m.csv").df["patient_key"])
    assert keys == [pz("patient", s) for s in ("3", "3", "4", "5")]


def test_npz_patient_in_two_splits_refused_without_quoting_the_id(tmp_path, ingest_secret):
    f = _with_ids(
        tmp_path / "leak.npz", {"train": ["P-0001", "Doe^Jane"], "val": ["Q", "Doe^Jane"]}
    )
    with pytest.raises(MedclError) as info:
        ingest(f, tmp_path / "m.csv", secret=ingest_secret, progress=False)
    message = str(info.value)
    assert "leak.npz" in message and "val_patient_ids[1]" in message
    assert "train_patient_ids[1]" in message and "one split" in message
    assert "Doe" not in message and "\n" not in message
    assert not (tmp_path / "m.csv").exists()


def test_npz_bad_patient_ids_rejected_with_reason(tmp_path, ingest_secret):
    src = tmp_path / "src"
    src.mkdir()
    _with_ids(src / "short.npz", {"train": ["a", "b"]})
    with np.load(src / "short.npz") as z:
        arrays = dict(z)
    arrays["train_patient_ids"] = arrays["train_patient_ids"][:1]
    np.savez(src / "short.npz", **arrays)
    _with_ids(src / "empty.npz", {"train": ["a", " "]})
    report = ingest(src, tmp_path / "m.csv", secret=ingest_secret, progress=False)
    assert report.rows == 0 and report.rejected == 2
    assert sorted(report.reasons) == [
        "train_patient_ids does not hold one patient id per image",
        "train_patient_ids[1] is empty (every image needs a patient id)",
    ]
