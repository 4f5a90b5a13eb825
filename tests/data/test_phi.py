"""No identifying header value reaches any file ingest writes, or the console.

DICOM files carry unique marker strings in every protected attribute; some files are broken in ways
that make libraries complain (invalid values, truncated pixel data, a header cut short, an object
without pixels). After 2-D and 3-D ingests, every byte ingest wrote (manifest, sidecar, rejects,
log, cache arrays, incremental state), every file and folder name it made and the captured
console output are searched for each marker.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from medcl.data.ingest import ingest
from medcl.data.pseudonym import PathMap

ROOT_UID = "1.2.826.0.1.3680043.99.4242"
MARKERS = {
    "PatientName": "ZQXMARKERNAME^ZQXMARKERGIVEN",
    "PatientID": "ZQXMARKERPID",
    "PatientBirthDate": "19170923",
    "InstitutionName": "ZQXMARKERINSTITUTION",
    "InstitutionAddress": "ZQXMARKERSTREET",
    "ReferringPhysicianName": "ZQXMARKERDOCTOR",
    "PerformingPhysicianName": "ZQXMARKERPERFORMER",
    "AccessionNumber": "ZQXMARKERACC",
    "StudyDate": "19180111",
    "SeriesDate": "19180112",
    "AcquisitionDate": "19180113",
    "OtherPatientIDs": "ZQXMARKEROTHERID",
    "StudyID": "ZQXMARKERSTUDYID",
}
DATE_FORMS = ("1917-09-23", "1918-01-11", "23.09.1917", "11.01.1918")


def _needles() -> list[bytes]:
    values = []
    for v in MARKERS.values():
        values.extend(v.split("^"))
    values.extend(DATE_FORMS)
    values.extend(["ZQXMARKERBADDATE", "ZQXMARKERFRM", "ZQXMARKERNIFTI", ROOT_UID])
    return [v.encode() for v in values]


def _plant(ds: pydicom.Dataset, n: int, series: int = 1) -> None:
    for key, value in MARKERS.items():
        setattr(ds, key, value)
    ds.StudyInstanceUID = f"{ROOT_UID}.1"
    ds.SeriesInstanceUID = f"{ROOT_UID}.2.{series}"
    ds.SOPInstanceUID = f"{ROOT_UID}.3.{series}.{n}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.FrameOfReferenceUID = f"{ROOT_UID}.4"


@pytest.fixture
def phi_source(tmp_path, dicom_writer) -> Path:
    src = tmp_path / "src"
    # a CT series (valid in 2-D and 3-D)
    for k in range(4):
        p = dicom_writer(
            src / "a" / f"s{k}.dcm",
            np.full((8, 8), 10 * k, np.int16),
            modality="CT",
            slope=1,
            intercept=-1024,
            position=(0, 0, 2.0 * k),
        )
        ds = pydicom.dcmread(p)
        _plant(ds, k)
        ds.save_as(p)
    good = src / "a" / "s0.dcm"
    # a multi-frame MR, an invalid date, an invalid NumberOfFrames
    p = dicom_writer(src / "b" / "mf.dcm", np.zeros((2, 8, 8), np.uint16))
    ds = pydicom.dcmread(p)
    _plant(ds, 1, series=2)
    ds.save_as(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns (quoting the value) about the bad date
        ds.PatientBirthDate = "ZQXMARKERBADDATE"
        ds.SOPInstanceUID = f"{ROOT_UID}.3.9.9"
        ds.save_as(src / "b" / "baddate.dcm")
    ds.PatientBirthDate = MARKERS["PatientBirthDate"]
    ds.NumberOfFrames = "999999999999"  # then patched: pydicom refuses to write the bad value
    ds.save_as(src / "b" / "badframes.dcm")
    raw = (src / "b" / "badframes.dcm").read_bytes().replace(b"999999999999", b"ZQXMARKERFRM")
    (src / "b" / "badframes.dcm").write_bytes(raw)
    # truncated pixel data, header cut inside the PHI, an object without pixels
    data = good.read_bytes()
    (src / "c").mkdir()
    (src / "c" / "truncated.dcm").write_bytes(data[:-40])
    cut = data.index(b"ZQXMARKERINSTITUTION") + 5
    (src / "c" / "cut_header.dcm").write_bytes(data[:cut])
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.SOPClassUID = pydicom.uid.BasicTextSRStorage
    ds.save_as(src / "c" / "report.dcm")
    # a NIfTI whose description holds a marker
    img = nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.eye(4))
    img.header["descrip"] = b"ZQXMARKERNIFTI"
    nib.save(img, src / "d.nii.gz")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na/s0.dcm,x\nb/mf.dcm,y\n")
    return src


def _written_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.mark.parametrize("dims, workers", [(2, 1), (3, 1), (2, 2)])
def test_no_marker_in_any_output(tmp_path, phi_source, capfd, dims, workers):
    out_dir = tmp_path / "out"
    report = ingest(
        phi_source,
        out_dir / "manifest.csv",
        labels=tmp_path / "labels.csv",
        dims=dims,
        workers=workers,
        secret=tmp_path / "secret" / "key",
        progress=True,
    )
    # the broken files really took the paths that make libraries complain
    real = PathMap.beside(tmp_path / "secret" / "key").load()
    rejected = {
        Path(p).relative_to(phi_source).as_posix()
        for p in pd.read_csv(out_dir / "manifest.rejects.csv")["source_id"].map(real)
    }
    broken = {"b/badframes.dcm", "c/cut_header.dcm", "c/report.dcm", "c/truncated.dcm"}
    multi_frame = {"b/baddate.dcm", "b/mf.dcm"}  # not stackable into a volume in 3-D
    assert rejected == (broken | multi_frame if dims == 3 else broken)
    assert report.rows > 0 and report.rejected == len(rejected)
    written = _written_files(out_dir)
    names = {p.name for p in written}
    assert {
        "manifest.csv",
        "manifest.meta.json",
        "manifest.rejects.csv",
        "manifest.ingest.log",
        "state.json",
    } <= names
    assert any(p.suffix == ".npy" for p in written)
    console = capfd.readouterr()
    haystacks = [(str(p), p.read_bytes().lower()) for p in written]
    # file and folder names too
    haystacks += [
        (f"name {p}", str(p.relative_to(out_dir)).encode().lower()) for p in out_dir.rglob("*")
    ]
    haystacks.append(("console", (console.out + console.err).encode().lower()))
    for needle in _needles():
        for where, data in haystacks:
            assert needle.lower() not in data, f"{needle!r} found in {where}"
    assert "Traceback" not in console.err


def test_markers_really_are_in_the_sources(phi_source):
    blob = b"".join(p.read_bytes() for p in _written_files(phi_source))
    assert b"ZQXMARKERPID" in blob and b"19170923" in blob and ROOT_UID.encode() in blob
