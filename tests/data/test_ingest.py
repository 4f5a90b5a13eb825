"""``ingest`` end to end: pydicom's corpus, accounting, incremental runs, workers, synth cohorts."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
import torch.nn.functional as F
from pydicom import uid
from pydicom.pixels import get_decoder

from medcl.data import synth
from medcl.data.cache import cache_dir, load_cached
from medcl.data.ingest import ingest, log_path, rejects_path
from medcl.data.manifest import read_manifest
from medcl.data.pseudonym import PATH_MAP_NAME, PathMap
from medcl.data.readers.codecs import INSTALL_HINT
from medcl.errors import MedclError

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"


def _all_files(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file()}


def _real(out: Path, source_ids) -> list[str]:
    """Real paths of ``source_ids`` from the private map (the tests keep the secret next to out)."""
    real = PathMap(out.parent / PATH_MAP_NAME).load()
    return [real[s] for s in source_ids]


def _manifest_paths(out: Path) -> list[Path]:
    return [Path(p).resolve() for p in _real(out, read_manifest(out).df["source_id"])]


def _rejects(out: Path) -> pd.DataFrame:
    rej = pd.read_csv(rejects_path(out), dtype=str, keep_default_na=False)
    rej["resolved"] = [Path(p).resolve() for p in _real(out, rej["source_id"])]
    return rej


def _reject_paths(out: Path) -> list[Path]:
    rej = _rejects(out)
    assert (rej["reason"] != "").all()
    return list(rej["resolved"])


def _decodes_with_pydicom(path: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pydicom.dcmread(path).pixel_array  # noqa: B018 - the decode is the test
        except Exception:  # noqa: BLE001
            return False
    return True


def _unit(pixels: np.ndarray) -> np.ndarray:
    """The documented ``unit`` rule, written out: clip at the 0.5th/99.5th percentiles, scale."""
    lo, hi = np.percentile(pixels.astype(np.float64), [0.5, 99.5])
    return np.clip((pixels - lo) / (hi - lo), 0.0, 1.0)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "corpus.csv"
    report = ingest(CORPUS, out, secret=out.parent / "key", progress=False)
    return out, report


# the corpus, file by file ------------------------------------------------------------------------
#
# A fixed list of pydicom test files (all in pydicom 3.0's test files) with what ingest must make of
# each. Files in a compressed transfer syntax name the decoder that reads them: medcl's default
# install has them all (pylibjpeg and its back ends are dependencies), so none is skipped; a missing
# one fails the test with what to install. (Decoded pixels against uncompressed twins:
# tests/data/test_readers_codecs.py.)


@dataclass(frozen=True)
class CorpusImage:
    """A corpus file that must give manifest rows."""

    name: str
    modality: str
    rows: int
    cols: int
    frames: int = 1
    intensity: str = "unit"
    spacing: float | None = None  # PixelSpacing (column spacing), when the file has one
    # compressed files: (transfer syntax, decoder(s) that read it)
    codec: tuple[str, str] | None = None
    pillow_enough: bool = True  # False: Pillow is installed but cannot read these samples


PILLOW_JPEG = "Pillow (built in), pylibjpeg-libjpeg or gdcm"
PILLOW_J2K = "Pillow with OpenJPEG, pylibjpeg-openjpeg or gdcm"
LIBJPEG = "pylibjpeg-libjpeg or gdcm"

IMAGES = [
    CorpusImage("CT_small.dcm", "CT", 128, 128, intensity="hu", spacing=0.661468),
    CorpusImage("MR_small.dcm", "MR", 64, 64, spacing=0.3125),
    CorpusImage("MR_small_bigendian.dcm", "MR", 64, 64, spacing=0.3125),
    CorpusImage("MR_small_implicit.dcm", "MR", 64, 64, spacing=0.3125),
    CorpusImage("MR_small_RLE.dcm", "MR", 64, 64, spacing=0.3125),  # pydicom's own RLE decoder
    CorpusImage("ExplVR_BigEnd.dcm", "US", 60, 80),  # big-endian RGB
    CorpusImage("rtdose.dcm", "RTDOSE", 10, 10, frames=15, spacing=10.0),
    CorpusImage("SC_rgb_rle_2frame.dcm", "OT", 100, 100, frames=2, spacing=1.0),
    CorpusImage(
        "dicomdirtests/77654033/CR1/6154", "XR", 16, 16, spacing=0.1
    ),  # CR -> XR, MONOCHROME1
    CorpusImage("examples_overlay.dcm", "MR", 300, 484, spacing=0.72314),
    CorpusImage(
        "SC_rgb_jpeg_dcmtk.dcm",
        "OT",
        100,
        100,
        spacing=1.0,
        codec=(uid.JPEGBaseline8Bit, PILLOW_JPEG),
    ),
    CorpusImage(
        "examples_ybr_color.dcm",
        "US",
        240,
        320,
        frames=30,
        codec=(uid.JPEGBaseline8Bit, PILLOW_JPEG),
    ),
    CorpusImage(
        "MR_small_jp2klossless.dcm",
        "MR",
        64,
        64,
        spacing=0.3125,
        codec=(uid.JPEG2000Lossless, PILLOW_J2K),
    ),
    CorpusImage(
        "693_J2KI.dcm",
        "CT",
        512,
        512,
        intensity="hu",
        spacing=0.478516,
        codec=(uid.JPEG2000, PILLOW_J2K),
    ),
    CorpusImage(
        "MR_small_jpeg_ls_lossless.dcm",
        "MR",
        64,
        64,
        spacing=0.3125,
        codec=(uid.JPEGLSLossless, "pylibjpeg-libjpeg, pyjpegls or gdcm"),
    ),
    CorpusImage(
        "SC_rgb_jpeg_gdcm.dcm",
        "OT",
        100,
        100,
        spacing=1.0,
        codec=(uid.JPEGLosslessSV1, LIBJPEG),
    ),
    CorpusImage(
        "JPGExtended.dcm",  # 12-bit JPEG extended: Pillow reads 8-bit JPEG only
        "NM",
        1024,
        256,
        spacing=2.26,
        codec=(uid.JPEGExtended12Bit, LIBJPEG),
        pillow_enough=False,
    ),
]

#: Native (uncompressed) copies of one picture: MR_small in other encodings decodes identically.
MR_TWINS = ("MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm")
#: Lossless compressed twins of MR_small.
MR_LOSSLESS_TWINS = ("MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm")

NOT_RECOGNISED = "not a recognised image file (not DICOM, NIfTI, PNG, TIFF, JPEG or MedMNIST .npz)"
REJECTED = {
    "reportsi.dcm": "no pixel data: Basic Text SR Storage (not an image object)",
    "test-SR.dcm": "no pixel data: Comprehensive SR Storage (not an image object)",
    "rtplan.dcm": "no pixel data: RT Plan Storage (not an image object)",
    "rtstruct.dcm": "no pixel data: RT Structure Set Storage (not an image object)",
    "waveform_ecg.dcm": "no pixel data: 12-lead ECG Waveform Storage (not an image object)",
    "empty_charset_LEI.dcm": "no pixel data: object without SOP class (not an image object)",
    "priv_SQ.dcm": "no pixel data: MR Image Storage object whose PixelData element is missing "
    "(stripped or truncated file?)",
    "dicomdirtests/DICOMDIR": "no pixel data: DICOMDIR (media directory index)",
    "MR_truncated.dcm": "pixel data truncated: 8130 of 8192 bytes",
    "badVR.dcm": "image attribute(s) with an invalid value: NumberOfFrames",
    "zipMR.gz": "gzip-compressed file that is not a NIfTI image (decompress it first)",
    # its scan header is malformed (the corpus' JPGExtended.dcm is the repaired file)
    "JPEG-lossy.dcm": "JPEG Extended (Process 2 and 4): compressed pixel data failed to decode "
    "with pillow, pylibjpeg (corrupt stream?); gdcm (pip install python-gdcm) may read it",
    "README.txt": NOT_RECOGNISED,
    "crayons.icc": NOT_RECOGNISED,
    "test1.json": NOT_RECOGNISED,
}


def _missing_decoder(image: CorpusImage) -> str | None:
    """Why ``image``'s decoder is absent here (None when it can be decoded)."""
    if image.codec is None:
        return None
    ts, decoders = image.codec
    plugins = set(get_decoder(ts).available_plugins)
    if not image.pillow_enough:
        plugins.discard("pillow")
    if plugins:
        return None
    have = "only Pillow is installed" if not image.pillow_enough else "none is installed"
    return f"{image.name} ({uid.UID(ts).name}) needs {decoders}; {have}"


def _rows_of(out: Path, name: str) -> pd.DataFrame:
    df = read_manifest(out).df
    return df[[Path(p).resolve() == (CORPUS / name).resolve() for p in _real(out, df["source_id"])]]


def _reason_of(out: Path, name: str) -> str | None:
    rej = _rejects(out)
    hit = rej[rej["resolved"] == (CORPUS / name).resolve()]
    assert len(hit) <= 1, f"{name} rejected twice"
    return None if hit.empty else str(hit["reason"].iloc[0])


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_pydicom_corpus_image_in_manifest(corpus_run, image: CorpusImage):
    out, _ = corpus_run
    assert (CORPUS / image.name).is_file(), f"{image.name} is not in this pydicom's test files"
    missing = _missing_decoder(image)
    assert missing is None, f"{missing}: medcl's dependencies must decode it"
    rows = _rows_of(out, image.name)
    assert _reason_of(out, image.name) is None
    assert len(rows) == image.frames, f"{image.name}: one row per frame"
    assert rows["image_id"].is_unique
    assert (rows["modality"] == image.modality).all()
    assert (rows["intensity"] == image.intensity).all()
    assert (rows["dims"] == 2).all() and (rows["slices"] == 1).all()
    assert (rows["rows"] == image.rows).all() and (rows["cols"] == image.cols).all()
    if image.spacing is None:
        assert rows["spacing_x"].isna().all()
    else:
        np.testing.assert_allclose(rows["spacing_x"].astype(float), image.spacing, rtol=1e-5)
    for path in rows["cache_path"]:
        arr = load_cached(path)
        assert arr.dtype == np.float32 and arr.shape == (1, image.rows, image.cols)
        if image.intensity == "unit":  # the percentiles map to exactly 0 and 1 (clipped)
            assert arr.min() == 0.0 and arr.max() == 1.0


def _cached(out: Path, name: str) -> np.ndarray:
    (path,) = _rows_of(out, name)["cache_path"]
    return load_cached(path)[0]


def test_pydicom_corpus_cached_values_match_an_independent_decode(corpus_run):
    out, _ = corpus_run
    ct = pydicom.dcmread(CORPUS / "CT_small.dcm")
    hu = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    np.testing.assert_allclose(_cached(out, "CT_small.dcm"), hu, atol=1e-3)  # HU, not rescaled
    mr = _cached(out, "MR_small.dcm")
    ref = _unit(pydicom.dcmread(CORPUS / "MR_small.dcm").pixel_array)
    np.testing.assert_allclose(mr, ref, atol=1e-6)
    for twin in MR_TWINS:  # the same picture in another encoding gives the same cached array
        np.testing.assert_allclose(_cached(out, twin), mr, atol=1e-6, err_msg=twin)
    for twin in MR_LOSSLESS_TWINS:
        np.testing.assert_allclose(_cached(out, twin), mr, atol=1e-6, err_msg=twin)
    cr = "dicomdirtests/77654033/CR1/6154"  # MONOCHROME1: the lowest stored value is brightest
    ref = 1.0 - _unit(pydicom.dcmread(CORPUS / cr).pixel_array)
    np.testing.assert_allclose(_cached(out, cr), ref, atol=1e-6)


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_pydicom_corpus_file_rejected_with_reason(corpus_run, name: str):
    out, _ = corpus_run
    assert (CORPUS / name).is_file(), f"{name} is not in this pydicom's test files"
    assert _reason_of(out, name) == REJECTED[name]
    assert _rows_of(out, name).empty


def test_pydicom_corpus_every_file_accounted_for(corpus_run):
    out, report = corpus_run
    files = _all_files(CORPUS)
    in_manifest = set(_manifest_paths(out))
    rejects = _reject_paths(out)
    assert len(rejects) == len(set(rejects))  # a file is rejected once
    assert not in_manifest & set(rejects)
    assert in_manifest | set(rejects) == files
    assert report.files_seen == len(files)
    assert report.rejected == len(rejects) and sum(report.reasons.values()) == report.rejected
    assert report.rows == len(read_manifest(out).df)


def test_pydicom_corpus_every_decodable_file_is_in_the_manifest(corpus_run):
    out, _ = corpus_run
    decodable = {p for p in _all_files(CORPUS) if _decodes_with_pydicom(p)}
    native = {(CORPUS / i.name).resolve() for i in IMAGES if i.codec is None}
    assert native <= decodable  # the reference decode itself works
    missing = decodable - set(_manifest_paths(out))
    assert not missing, sorted(p.name for p in missing)


def test_pydicom_corpus_outputs(corpus_run):
    out, report = corpus_run
    m = read_manifest(out)
    assert m.df["image_id"].is_unique
    assert set(m.df["intensity"]) == {"hu", "unit"}
    assert (m.df.loc[m.df["modality"] == "CT", "intensity"] == "hu").all()
    assert (m.df.loc[m.df["modality"] != "CT", "intensity"] == "unit").all()
    for path, intensity in zip(m.df["cache_path"], m.df["intensity"], strict=True):
        arr = load_cached(path)
        assert arr.dtype == np.float32 and arr.ndim == 3 and arr.shape[0] == 1
        if intensity == "unit":
            assert 0 <= arr.min() and arr.max() <= 1
    log = log_path(out).read_text()
    assert "captured library warnings" in log and "rejected files by reason" in log
    assert "Traceback" not in log
    for reason, n in report.reasons.items():
        assert f"{n:6d}  {reason}" in log  # every reason and its count is logged
        if ": needs " in reason:  # a missing decoder always says how to install it
            assert INSTALL_HINT in reason, reason


def test_corpus_run_is_quiet(tmp_path, capfd):
    src = tmp_path / "src"
    src.mkdir()
    for name in (
        "badVR.dcm",
        "reportsi.dcm",
        "MR_truncated.dcm",
        "no_meta.dcm",
        "priv_SQ.dcm",
        "rtplan_truncated.dcm",
        "JPEG2000-embedded-sequence-delimiter.dcm",
        "empty_charset_LEI.dcm",
        "CT_small.dcm",
        "README.txt",
    ):
        (src / name).write_bytes((CORPUS / name).read_bytes())
    (src / "zero").write_bytes(b"")
    (src / "short").write_bytes((CORPUS / "CT_small.dcm").read_bytes()[:300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping ingest would raise here
        report = ingest(src, tmp_path / "m.csv", secret=tmp_path / "k", progress=False)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert report.files_seen == 12 and report.rows + report.rejected == 12
    assert report.reasons["empty file (0 bytes)"] == 1


def test_single_file_source_and_argument_errors(tmp_path):
    report = ingest(
        CORPUS / "CT_small.dcm", tmp_path / "m.csv", secret=tmp_path / "k", progress=False
    )
    assert (report.files_seen, report.rows) == (1, 1)
    with pytest.raises(MedclError, match="no such file"):
        ingest(tmp_path / "nope", tmp_path / "m.csv", secret=tmp_path / "k")
    with pytest.raises(MedclError, match="--dims"):
        ingest(CORPUS / "CT_small.dcm", tmp_path / "m.csv", dims=4, secret=tmp_path / "k")


def test_size_resizes_cache_and_spacing(tmp_path):
    ingest(
        CORPUS / "CT_small.dcm", tmp_path / "m.csv", size=32, secret=tmp_path / "k", progress=False
    )
    row = read_manifest(tmp_path / "m.csv").df.iloc[0]
    arr = load_cached(row["cache_path"])
    assert arr.shape == (1, 32, 32) and (row["rows"], row["cols"]) == (32, 32)
    assert row["spacing_x"] == pytest.approx(0.661468 * 4)
    # still Hounsfield units, shrunk 128 -> 32 by bilinear interpolation with antialiasing
    ds = pydicom.dcmread(CORPUS / "CT_small.dcm")
    hu = torch.from_numpy(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    ref = F.interpolate(hu[None, None].float(), size=(32, 32), mode="bilinear", antialias=True)
    np.testing.assert_allclose(arr[0], ref[0, 0].numpy(), atol=0.05)
    assert arr.mean() == pytest.approx(float(hu.mean()), abs=2.0)  # averaging keeps the mean


# incremental runs and workers --------------------------------------------------------------------


def _copy_some(dst: Path, names) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        (dst / Path(name).name).write_bytes((CORPUS / name).read_bytes())
    return dst


SOME = (
    "CT_small.dcm",
    "MR_small.dcm",
    "examples_ybr_color.dcm",
    "rtplan.dcm",
    "README.txt",
    "dicomdirtests/77654033/CR1/6154",
)


def test_incremental_rerun_skips_unchanged_and_redecodes_modified(tmp_path):
    src = _copy_some(tmp_path / "src", SOME)
    out, key = tmp_path / "m.csv", tmp_path / "k"
    first = ingest(src, out, secret=key, progress=False)
    before = read_manifest(out).df
    again = ingest(src, out, secret=key, progress=False)
    assert again.skipped_unchanged == first.files_seen == 6
    pd.testing.assert_frame_equal(read_manifest(out).df, before)
    # modify one file: different pixels, same path
    ds = pydicom.dcmread(src / "MR_small.dcm")
    arr = ds.pixel_array.copy()
    arr[:8] = 0
    ds.PixelData = arr.tobytes()
    ds.save_as(src / "MR_small.dcm")
    os.utime(src / "MR_small.dcm", ns=(1, 10**9))
    (src / "README.txt").unlink()
    third = ingest(src, out, secret=key, progress=False)
    assert third.files_seen == 5 and third.skipped_unchanged == 4
    after = read_manifest(out).df
    changed = after[[p.endswith("MR_small.dcm") for p in _real(out, after["source_id"])]].iloc[0]
    old = before[[p.endswith("MR_small.dcm") for p in _real(out, before["source_id"])]].iloc[0]
    assert changed["sha256"] != old["sha256"]
    assert load_cached(changed["cache_path"])[0, :8].max() == 0
    assert not Path(old["cache_path"]).exists()  # stale cache entries are pruned
    assert len(list(cache_dir(out).glob("*/*.npy"))) == after["cache_path"].nunique()


def test_settings_change_invalidates_reuse(tmp_path):
    src = _copy_some(tmp_path / "src", SOME[:2])
    ingest(src, tmp_path / "m.csv", secret=tmp_path / "k", progress=False)
    report = ingest(src, tmp_path / "m.csv", size=16, secret=tmp_path / "k", progress=False)
    assert report.skipped_unchanged == 0
    assert read_manifest(tmp_path / "m.csv").df["rows"].tolist() == [16, 16]


def test_two_workers_give_the_same_manifest(tmp_path):
    src = _copy_some(
        tmp_path / "src",
        SOME + ("SC_rgb_rle_2frame.dcm", "MR_truncated.dcm", "693_J2KI.dcm", "liver_1frame.dcm"),
    )
    a = ingest(src, tmp_path / "a.csv", workers=1, secret=tmp_path / "k", progress=False)
    b = ingest(src, tmp_path / "b.csv", workers=2, secret=tmp_path / "k", progress=False)
    assert (a.rows, a.rejected, a.reasons) == (b.rows, b.rejected, b.reasons)
    da, db = read_manifest(tmp_path / "a.csv").df, read_manifest(tmp_path / "b.csv").df
    pd.testing.assert_frame_equal(da.drop(columns="cache_path"), db.drop(columns="cache_path"))
    for pa, pb in zip(da["cache_path"], db["cache_path"], strict=True):
        np.testing.assert_array_equal(load_cached(pa), load_cached(pb))
    assert (
        rejects_path(tmp_path / "a.csv").read_text() == rejects_path(tmp_path / "b.csv").read_text()
    )


# synthetic cohorts -------------------------------------------------------------------------------


def test_synth_cohort_2d_labelled(tmp_path):
    summary = synth.generate_cohort(
        tmp_path / "cohort", patients=6, size=32, dims=2, progress=False
    )
    out = tmp_path / "m.csv"
    report = ingest(
        tmp_path / "cohort",
        out,
        labels=tmp_path / "cohort" / "labels.csv",
        secret=tmp_path / "k",
        progress=False,
    )
    m = read_manifest(out)
    assert report.rows == summary.files == len(m.df)
    assert (m.df["label"] != "").all()
    assert m.df["patient_key"].nunique() == 6
    assert set(m.classes) <= set(synth.CLASSES)
    labels = pd.read_csv(tmp_path / "cohort" / "labels.csv")
    expected = dict(zip(labels["path"], labels["label"], strict=True))
    base = (tmp_path / "cohort").resolve()
    got = {
        Path(p).resolve().relative_to(base).as_posix(): lab
        for p, lab in zip(_real(out, m.df["source_id"]), m.df["label"], strict=True)
    }
    assert got == expected


def test_synth_cohort_3d_ct_volumes(tmp_path):
    summary = synth.generate_cohort(
        tmp_path / "cohort", patients=2, size=16, dims=3, modality="ct", progress=False
    )
    report = ingest(
        tmp_path / "cohort",
        tmp_path / "m.csv",
        dims=3,
        labels=tmp_path / "cohort" / "labels.csv",
        secret=tmp_path / "k",
        progress=False,
    )
    m = read_manifest(tmp_path / "m.csv")
    assert report.rows == summary.images == len(m.df)
    assert (m.df["label"] != "").all() and (m.df["intensity"] == "hu").all()
    assert m.df["patient_key"].nunique() == 2
    vol = load_cached(m.df.loc[0, "cache_path"])
    assert vol.shape == (1, int(m.df.loc[0, "slices"]), 16, 16)
    assert vol.min() < -500  # air in HU
    again = ingest(
        tmp_path / "cohort",
        tmp_path / "m.csv",
        dims=3,
        labels=tmp_path / "cohort" / "labels.csv",
        secret=tmp_path / "k",
        progress=False,
    )
    assert again.skipped_unchanged == summary.files + 1  # + cohort.json; labels CSV not counted


def test_rerun_applies_new_labels_and_class_names_to_reused_rows(tmp_path):
    src = _copy_some(tmp_path / "src", SOME[:2])
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nCT_small.dcm,a\nMR_small.dcm,b\n")
    ingest(src, tmp_path / "m.csv", labels=labels, secret=tmp_path / "k", progress=False)
    labels.write_text("path,label\nCT_small.dcm,b\n")
    report = ingest(src, tmp_path / "m.csv", labels=labels, secret=tmp_path / "k", progress=False)
    assert report.skipped_unchanged == 2
    m = read_manifest(tmp_path / "m.csv")
    assert list(m.df["label"]) == ["b", ""] and m.classes == ["b"]
    report = ingest(src, tmp_path / "m.csv", secret=tmp_path / "k", progress=False)
    assert set(read_manifest(tmp_path / "m.csv").df["label"]) == {""}


# MedMNIST-layout arrays in bulk ------------------------------------------------------------------


def _array_file(path: Path, n: int = 11) -> Path:
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (n, 12, 10), dtype=np.uint8)
    images[3] = 7  # a constant image becomes 0
    np.savez(
        path,
        train_images=images,
        train_labels=rng.integers(0, 2, (n, 1)),
        train_patient_ids=np.arange(n) // 2,
        test_images=rng.integers(0, 256, (3, 12, 10), dtype=np.uint8),
    )
    return path


@pytest.mark.parametrize("workers", [1, 2])
def test_array_file_cached_in_shards_with_the_per_image_rule(
    tmp_path, ingest_secret, monkeypatch, workers
):
    from medcl.data import cache
    from medcl.data.ingest import decode

    monkeypatch.setattr(cache, "SHARD_ROWS", 4)  # 11 + 3 images: shards of 4, 4, 3 and 3 rows
    monkeypatch.setattr(decode, "BULK_BYTES", 0)  # workers=2: chunks spread over the pool
    f = _array_file(tmp_path / "a.npz")
    out = tmp_path / "out" / "m.csv"
    report = ingest(f, out, workers=workers, size=8, secret=ingest_secret, progress=False)
    assert report.rows == 14
    m = read_manifest(out)
    files = sorted(p.name for p in cache_dir(out).glob("*/*.npy"))
    assert len(files) == 4 and all("_c000000" in n for n in files)
    assert m.df["cache_path"].str.contains(r"\.npy#\d+$").all()
    with np.load(f) as z:
        raw = np.concatenate([z["train_images"], z["test_images"]]).astype(np.float64)
    for i, path in enumerate(m.df["cache_path"]):
        x = raw[i]
        lo, hi = np.percentile(x, [0.5, 99.5])  # the documented 'unit' rule, image by image
        unit = np.clip((x - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(x)
        want = F.interpolate(
            torch.from_numpy(unit)[None, None], size=(8, 8), mode="bilinear", antialias=True
        )[0]
        np.testing.assert_allclose(load_cached(path), want.numpy(), atol=1e-6)
    assert list(m.df["patient_key"].iloc[:4].duplicated()) == [False, True, False, True]
    assert (cache_dir(out) / "tmp-arrays").exists() is False
    # an unchanged re-run reuses the rows; a changed file replaces its shards
    assert ingest(f, out, workers=workers, size=8, secret=ingest_secret, progress=False).rows == 14
    np.savez(f, train_images=np.zeros((2, 12, 10), np.uint8))
    ingest(f, out, workers=workers, size=8, secret=ingest_secret, progress=False)
    assert len(list(cache_dir(out).glob("*/*.npy"))) == 1


def test_outputs_and_temporaries_inside_the_source_are_not_ingested(tmp_path):
    """A manifest written inside its source folder: a rerun sees neither the outputs nor the
    temporaries an interrupted write left (``.NAME.PID.tmp``), nor the path map's lock."""
    src = tmp_path / "src"
    synth.generate_cohort(src, patients=2, size=16, progress=False)
    out = src / "m.csv"
    first = ingest(src, out, secret=src / ".medcl" / "secret.key", progress=False)
    for stale in (".m.csv.99999.tmp", ".m.meta.json.4242.tmp", ".m.rejects.csv.7.tmp"):
        (src / stale).write_text("half-written")
    again = ingest(src, out, secret=src / ".medcl" / "secret.key", progress=False)
    assert again.files_seen == first.files_seen and again.rejected == first.rejected
    assert (src / ".medcl" / ".paths.json.lock").is_file()  # seen by the rerun, left out
    rejects = pd.read_csv(rejects_path(out), dtype=str, keep_default_na=False)
    assert not rejects["reason"].str.contains("tmp").any()
