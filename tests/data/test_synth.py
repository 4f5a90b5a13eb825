"""Tests for the phantom cohort generator (medcl.data.synth)."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from medcl.data.synth import CLASSES, SynthSummary, generate_cohort
from medcl.errors import MedclError

SIZE = 32
PATIENTS = 6
SOP_CLASS = {
    "mr": MRImageStorage,
    "ct": CTImageStorage,
    "xr": DigitalXRayImageStorageForPresentation,
}
PATH_RE = re.compile(r"^P\d{4}/ST\d{2}/SE\d{2}/IM\d{4}\.dcm$")
PHI_FIELDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "InstitutionName",
    "ReferringPhysicianName",
    "AccessionNumber",
)


TISSUE = {
    "air": 0.0,
    "fat": 0.9,
    "soft": 0.35,
    "organ": 0.5,
    "kidney": 0.4,
    "marrow": 0.6,
    "cortex": 0.04,
    "delta": 0.5,
    "lesion_gain": 1.0,
    "texture": 0.0,
}
"""A fixed tissue table (no texture) for white-box renderings of the phantom."""


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.dcm"))


def _labels(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SynthSummary]:
    base = tmp_path_factory.mktemp("synth")
    out = {}
    for modality in ("mr", "ct", "xr"):
        out[modality] = generate_cohort(
            base / modality, patients=PATIENTS, seed=3, modality=modality, size=SIZE, progress=False
        )
    out["mr3"] = generate_cohort(
        base / "mr3", patients=2, seed=3, modality="mr", size=SIZE, dims=3, progress=False
    )
    out["ct3"] = generate_cohort(
        base / "ct3", patients=2, seed=3, modality="ct", size=SIZE, dims=3, progress=False
    )
    return out


@pytest.mark.parametrize("modality", ["mr", "ct", "xr"])
def test_files_are_valid_dicom(cohorts: dict[str, SynthSummary], modality: str) -> None:
    summary = cohorts[modality]
    root = summary.out_dir
    files = _files(root)
    assert len(files) == summary.files == summary.images
    per_patient: dict[str, int] = {}
    for rel in files:
        assert PATH_RE.match(rel), rel
        per_patient[rel.split("/")[0]] = per_patient.get(rel.split("/")[0], 0) + 1
        ds = pydicom.dcmread(root / rel)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == SOP_CLASS[modality]
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        arr = ds.pixel_array
        assert arr.shape == (SIZE, SIZE)
        assert arr.dtype == (np.int16 if modality == "ct" else np.uint16)
        assert arr.std() > 0
        assert len(ds.PixelSpacing) == 2 and float(ds.PixelSpacing[0]) > 0
        assert len(ds.ImageOrientationPatient) == 6 and len(ds.ImagePositionPatient) == 3
        assert ds.InstanceNumber == 1
        if modality != "xr":
            assert float(ds.SliceThickness) > 0
    assert len(per_patient) == PATIENTS
    assert all(3 <= n <= 5 for n in per_patient.values()), per_patient


def test_mr_background_dark_and_body_bright(cohorts: dict[str, SynthSummary]) -> None:
    root = cohorts["mr"].out_dir
    for rel in _files(root):
        a = pydicom.dcmread(root / rel).pixel_array.astype(float)
        corners = np.concatenate([a[:3, :3].ravel(), a[:3, -3:].ravel(), a[-3:, :3].ravel()])
        centre = a[SIZE // 2 - 4 : SIZE // 2 + 4, SIZE // 2 - 4 : SIZE // 2 + 4]
        assert corners.mean() < 0.1 * centre.mean(), rel


def test_ct_values_are_hounsfield_units(cohorts: dict[str, SynthSummary]) -> None:
    root = cohorts["ct"].out_dir
    for rel in _files(root):
        ds = pydicom.dcmread(root / rel)
        assert float(ds.RescaleIntercept) == -1024.0 and float(ds.RescaleSlope) == 1.0
        hu = _hu(ds)
        assert hu.min() >= -1024.0
        assert hu.max() < 1100.0
        corners = np.concatenate([hu[:2, :2].ravel(), hu[:2, -2:].ravel(), hu[-2:, -2:].ravel()])
        assert -1040.0 < corners.mean() < -960.0, rel  # air
        body = hu[hu > -500.0]
        assert 15.0 < np.median(body) < 75.0, rel  # soft tissue dominates the body
        assert np.mean((body > -150.0) & (body < -50.0)) > 0.02, rel  # some fat
        assert hu.max() > 250.0, rel  # bone


def test_ct_3d_has_hounsfield_units(cohorts: dict[str, SynthSummary]) -> None:
    root = cohorts["ct3"].out_dir
    vol = np.stack(
        [
            _hu(pydicom.dcmread(root / rel))
            for rel in _files(root)
            if rel.startswith("P0001/ST01/SE01/")
        ]
    )
    assert vol.shape == (max(8, SIZE // 2), SIZE, SIZE)
    assert vol.min() >= -1024.0 and vol.max() < 1100.0
    assert 15.0 < np.median(vol[vol > -500.0]) < 75.0


def test_xr_is_bright_where_attenuating(cohorts: dict[str, SynthSummary]) -> None:
    root = cohorts["xr"].out_dir
    for rel in _files(root):
        a = pydicom.dcmread(root / rel).pixel_array.astype(float)
        # Left and right edges are outside the trunk (air); the spine runs down the middle.
        assert a[:, :2].mean() < 0.3 * a[:, SIZE // 2 - 3 : SIZE // 2 + 3].mean(), rel


@pytest.mark.parametrize("name", ["mr", "ct", "xr", "mr3"])
def test_labels_cover_every_file(cohorts: dict[str, SynthSummary], name: str) -> None:
    summary = cohorts[name]
    root = summary.out_dir
    header = (root / "labels.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "path,label"
    rows = _labels(root)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths))
    assert set(paths) == set(_files(root))
    assert all("\\" not in p for p in paths)
    assert {r["label"] for r in rows} <= set(CLASSES)
    by_patient: dict[str, set[str]] = {}
    for r in rows:
        by_patient.setdefault(r["path"].split("/")[0], set()).add(r["label"])
    assert all(len(v) == 1 for v in by_patient.values())  # one label per patient
    counts = {c: sum(1 for v in by_patient.values() if c in v) for c in CLASSES}
    assert summary.class_counts == counts
    record = json.loads((root / "cohort.json").read_text(encoding="utf-8"))
    assert record["class_counts"] == counts
    assert record["files"] == len(rows) == summary.files
    assert (record["modality"], record["size"], record["seed"]) == (summary.modality, SIZE, 3)


def test_labels_do_not_depend_on_modality(cohorts: dict[str, SynthSummary]) -> None:
    def per_patient(root: Path) -> dict[str, str]:
        return {r["path"].split("/")[0]: r["label"] for r in _labels(root)}

    mr = per_patient(cohorts["mr"].out_dir)
    assert mr == per_patient(cohorts["ct"].out_dir) == per_patient(cohorts["xr"].out_dir)


def test_class_priors_are_imbalanced(tmp_path: Path) -> None:
    from medcl.data.synth import CLASS_PRIORS

    n = 150
    summary = generate_cohort(tmp_path / "c", patients=n, seed=0, size=16, progress=False)
    counts = summary.class_counts
    assert sum(counts.values()) == n
    assert CLASS_PRIORS[0] > CLASS_PRIORS[1] > CLASS_PRIORS[2] > 0.15  # imbalanced, none rare
    for cls, p in zip(counts, CLASS_PRIORS, strict=True):  # binomial counts within 4 sd
        assert abs(counts[cls] - n * p) < 4 * math.sqrt(n * p * (1 - p)), (cls, counts)


def test_fake_phi_present_and_varied(cohorts: dict[str, SynthSummary]) -> None:
    root = cohorts["mr"].out_dir
    names, ids, accessions = {}, {}, set()
    study_dates: dict[str, set[str]] = {}
    for rel in _files(root):
        ds = pydicom.dcmread(root / rel)
        for field in PHI_FIELDS:
            assert str(ds.get(field, "")).strip(), (rel, field)
        patient = rel.split("/")[0]
        names.setdefault(patient, set()).add(str(ds.PatientName))
        ids.setdefault(patient, set()).add(ds.PatientID)
        assert re.fullmatch(r"MRN\d{7}", ds.PatientID)
        assert re.fullmatch(r"[A-Z]+\^[A-Z]+", str(ds.PatientName))
        assert ds.PatientBirthDate < ds.StudyDate
        accessions.add(ds.AccessionNumber)
        study_dates.setdefault(patient, set()).add(ds.StudyDate)
    assert all(len(v) == 1 for v in names.values()) and all(len(v) == 1 for v in ids.values())
    assert len({next(iter(v)) for v in ids.values()}) == PATIENTS  # unique patient ids
    assert len({next(iter(v)) for v in names.values()}) > 1
    assert len(accessions) == len(_files(root))  # one study per image in 2D
    assert all(len(v) >= 3 for v in study_dates.values())


def test_no_phi_in_paths_or_sidecars(cohorts: dict[str, SynthSummary]) -> None:
    for name in ("mr", "mr3"):
        root = cohorts[name].out_dir
        sidecars = (
            (root / "labels.csv").read_text(encoding="utf-8")
            + (root / "cohort.json").read_text(encoding="utf-8")
        ).upper()
        for rel in _files(root):
            ds = pydicom.dcmread(root / rel, stop_before_pixels=True)
            secrets = [
                ds.PatientID,
                ds.AccessionNumber,
                ds.PatientBirthDate,
                *str(ds.PatientName).split("^"),
            ]
            for s in secrets:
                assert s and s.upper() not in rel.upper(), (rel, s)
                assert s.upper() not in sidecars, s


def test_same_seed_same_bytes_different_seed_different_pixels(tmp_path: Path) -> None:
    kw = {"patients": 3, "size": SIZE, "progress": False}
    a = generate_cohort(tmp_path / "a", seed=11, **kw).out_dir
    b = generate_cohort(tmp_path / "b", seed=11, **kw).out_dir
    c = generate_cohort(tmp_path / "c", seed=12, **kw).out_dir
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and "labels.csv" in files_a and "cohort.json" in files_a
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for rel in set(_files(a)) & set(_files(c)):
        da, dc = pydicom.dcmread(a / rel), pydicom.dcmread(c / rel)
        assert not np.array_equal(da.pixel_array, dc.pixel_array), rel
        assert da.SOPInstanceUID != dc.SOPInstanceUID


def test_patients_do_not_depend_on_cohort_size(tmp_path: Path) -> None:
    small = generate_cohort(tmp_path / "s", patients=2, seed=5, size=SIZE, progress=False).out_dir
    large = generate_cohort(tmp_path / "l", patients=4, seed=5, size=SIZE, progress=False).out_dir
    files = _files(small)
    assert files and set(files) <= set(_files(large))
    for rel in files:
        assert (small / rel).read_bytes() == (large / rel).read_bytes(), rel


def test_uids_unique_and_consistent(cohorts: dict[str, SynthSummary]) -> None:
    root = cohorts["mr3"].out_dir
    sops, series, studies = set(), {}, {}
    for rel in _files(root):
        ds = pydicom.dcmread(root / rel, stop_before_pixels=True)
        sops.add(ds.SOPInstanceUID)
        series.setdefault(rel.rsplit("/", 1)[0], set()).add(ds.SeriesInstanceUID)
        studies.setdefault(rel.split("/")[0], set()).add(ds.StudyInstanceUID)
    assert len(sops) == len(_files(root))
    assert all(len(v) == 1 for v in series.values())
    assert len({next(iter(v)) for v in series.values()}) == len(series) == 4  # 2 patients x 2
    assert all(len(v) == 1 for v in studies.values())


@pytest.mark.parametrize("name", ["mr3", "ct3"])
def test_3d_slices_along_normal_with_constant_spacing(
    cohorts: dict[str, SynthSummary], name: str
) -> None:
    summary = cohorts[name]
    root = summary.out_dir
    assert summary.dims == 3 and summary.images == 4
    n_slices = max(8, SIZE // 2)
    assert summary.files == 4 * n_slices
    by_series: dict[str, list[pydicom.Dataset]] = {}
    for rel in _files(root):
        by_series.setdefault(rel.rsplit("/", 1)[0], []).append(
            pydicom.dcmread(root / rel, stop_before_pixels=True)
        )
    assert len(by_series) == 4
    for key, slices in by_series.items():
        assert len(slices) == n_slices, key
        slices.sort(key=lambda d: int(d.InstanceNumber))
        assert [int(d.InstanceNumber) for d in slices] == list(range(1, n_slices + 1))
        iop = np.array([float(v) for v in slices[0].ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        assert np.isclose(np.linalg.norm(normal), 1.0)
        pos = np.array([[float(v) for v in d.ImagePositionPatient] for d in slices])
        steps = np.diff(pos, axis=0)
        along = steps @ normal
        assert np.allclose(steps, along[:, None] * normal[None, :], atol=1e-3)  # no in-plane drift
        assert np.allclose(along, along[0], atol=1e-3) and along[0] > 0
        assert np.isclose(along[0], float(slices[0].SliceThickness), rtol=1e-4)
        assert all(
            list(d.ImageOrientationPatient) == list(slices[0].ImageOrientationPatient)
            for d in slices
        )


def test_3d_slices_differ_along_z(cohorts: dict[str, SynthSummary]) -> None:
    # The volume is not a stack of copies: slices differ along z.
    root = cohorts["mr3"].out_dir
    vol = np.stack(
        [
            pydicom.dcmread(root / rel).pixel_array.astype(float)
            for rel in _files(root)
            if rel.startswith("P0001/ST01/SE01/")
        ]
    )
    assert vol.shape[0] == max(8, SIZE // 2)
    assert np.abs(vol[0] - vol[vol.shape[0] // 2]).mean() > 0.05 * vol.mean()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patients": 0}, "patients"),
        ({"modality": "pet"}, "modality"),
        ({"size": 8}, "size"),
        ({"dims": 4}, "dims"),
        ({"seed": -1}, "seed"),
        ({"modality": "xr", "dims": 3}, "xr"),
    ],
)
def test_bad_arguments_raise_medcl_error(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(MedclError, match=match) as info:
        generate_cohort(tmp_path / "out", progress=False, **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_refuses_foreign_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(MedclError, match="not empty"):
        generate_cohort(out, patients=1, size=16, progress=False)
    assert (out / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_refuses_file_as_out_dir(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(MedclError):
        generate_cohort(target, patients=1, size=16, progress=False)


def test_rerun_replaces_previous_cohort(tmp_path: Path) -> None:
    out = tmp_path / "c"
    generate_cohort(out, patients=3, size=16, progress=False)
    summary = generate_cohort(out, patients=1, size=16, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["P0001", "cohort.json", "labels.csv"]
    assert len(_files(out)) == summary.files == len(_labels(out))
    (out / "extra.txt").write_text("x", encoding="utf-8")
    with pytest.raises(MedclError, match="mix"):
        generate_cohort(out, patients=1, size=16, progress=False)


def test_label_is_the_number_of_lesions_visible_in_the_organ() -> None:
    # White-box: render each phantom with and without its lesions under a fixed contrast and count
    # the connected regions that differ. The label must be that count (0, 1 or 2-4).
    from dataclasses import replace

    from scipy import ndimage

    from medcl.data.synth.cohort import patient_anatomy
    from medcl.data.synth.geometry import pixel_grid
    from medcl.data.synth.render import render_tomographic

    size = 64
    grid = pixel_grid(size, None)
    tissue = TISSUE
    seen = set()
    for index in range(40):
        anat = patient_anatomy(0, index)
        with_lesions = render_tomographic(anat, grid, 2.0 / size, tissue)
        without = render_tomographic(replace(anat, lesions=[]), grid, 2.0 / size, tissue)
        diff = np.abs(with_lesions - without).reshape(size, size) > 0.05
        _, blobs = ndimage.label(diff)
        assert blobs == len(anat.lesions), index
        expected = {0: {0}, 1: {1}, 2: {2, 3, 4}}[anat.label]
        assert blobs in expected, (index, anat.label, blobs)
        seen.add(anat.label)
    assert seen == {0, 1, 2}


def test_distractors_change_between_acquisitions_findings_do_not() -> None:
    # Vessels and nodules are drawn per acquisition; lesions and the gross anatomy are the
    # patient's. Every redrawn vessel must still pass clear of every lesion (checked on a dense
    # resampling of its centre line, independently of the generator's own distance helper).
    from medcl.data.synth.anatomy import redraw_distractors
    from medcl.data.synth.cohort import patient_anatomy
    from medcl.data.synth.geometry import ellipse_rho

    changed = 0
    for index in range(20):
        anat = patient_anatomy(0, index)
        a = redraw_distractors(anat, np.random.default_rng([index, 1]))
        b = redraw_distractors(anat, np.random.default_rng([index, 2]))
        for view in (a, b):
            assert view.lesions is anat.lesions and view.organ is anat.organ
            assert view.kidneys is anat.kidneys and view.label == anat.label
            assert len(view.vessels) <= 4 and len(view.nodules) <= 2
            for v in view.vessels:
                seg = v.points[:, :2]
                t = np.linspace(0.0, 1.0, 50)[:, None]
                dense = np.concatenate(
                    [seg[i] + t * (seg[i + 1] - seg[i]) for i in range(len(seg) - 1)]
                )
                for les in anat.lesions:
                    gap = np.min(np.linalg.norm(dense - les.center[:2], axis=1))
                    assert gap > les.radius + v.radius + 0.03 - 1e-6, (index, gap)
            for nod in view.nodules:
                assert ellipse_rho(anat.organ, nod.center) > 1.0
        first = a.vessels[0].points if a.vessels else None
        second = b.vessels[0].points if b.vessels else None
        if first is not None and second is not None and not np.allclose(first, second):
            changed += 1
    assert changed >= 18
