"""``ingest`` end to end: pydicom's corpus, accounting, incremental runs, workers, synth cohorts."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from medcl.data.cache import cache_dir, load_cached
from medcl.data.ingest import ingest, log_path, rejects_path
from medcl.data.manifest import read_manifest
from medcl.errors import MedclError

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"


def _all_files(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file()}


def _manifest_paths(out: Path) -> list[Path]:
    return [Path(p).resolve() for p in read_manifest(out).df["path"]]


def _reject_paths(out: Path) -> list[Path]:
    rej = pd.read_csv(rejects_path(out), dtype=str, keep_default_na=False)
    assert (rej["reason"] != "").all()
    return [(out.parent / p).resolve() for p in rej["path"]]


def _decodes_with_pydicom(path: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pydicom.dcmread(path).pixel_array  # noqa: B018 - the decode is the test
        except Exception:  # noqa: BLE001
            return False
    return True


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "corpus.csv"
    report = ingest(CORPUS, out, secret=out.parent / "key", progress=False)
    return out, report


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
    assert report.rows == len(read_manifest(out).df) > 100


def test_pydicom_corpus_every_decodable_file_is_in_the_manifest(corpus_run):
    out, _ = corpus_run
    decodable = {p for p in _all_files(CORPUS) if _decodes_with_pydicom(p)}
    assert len(decodable) > 60
    missing = decodable - set(_manifest_paths(out))
    assert not missing, sorted(p.name for p in missing)


def test_pydicom_corpus_outputs(corpus_run):
    out, report = corpus_run
    m = read_manifest(out)
    assert m.df["image_id"].is_unique
    assert set(m.df["intensity"]) == {"hu", "unit"}
    assert (m.df.loc[m.df["modality"] == "CT", "intensity"] == "hu").all()
    for path, intensity in zip(m.df["cache_path"][:40], m.df["intensity"][:40], strict=True):
        arr = load_cached(path)
        assert arr.dtype == np.float32 and arr.ndim == 3 and arr.shape[0] == 1
        if intensity == "unit":
            assert 0 <= arr.min() and arr.max() <= 1
    log = log_path(out).read_text()
    assert "captured library warnings" in log and "rejected files by reason" in log
    assert "Traceback" not in log
    assert any("needs" in r and "medcl[codecs]" in r for r in report.reasons) or all(
        "needs" not in r for r in report.reasons
    )


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
    assert -1100 < arr.min() and arr.max() < 3000  # still Hounsfield units


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
    changed = after[after["path"].str.endswith("MR_small.dcm")].iloc[0]
    old = before[before["path"].str.endswith("MR_small.dcm")].iloc[0]
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

synth = pytest.importorskip("medcl.data.synth")


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
        for p, lab in zip(m.df["path"], m.df["label"], strict=True)
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
