"""Tests for the brain cohort (medcl.data.synth.brain): files, determinism, atrophy, PHI."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage

from medcl.cli.main import main
from medcl.data.ingest.phi import date_spellings
from medcl.data.manifest import read_manifest
from medcl.data.synth import SynthSummary, generate_cohort
from medcl.data.synth.brain import (
    CLASSES,
    NILEARN_MISSING,
    generate_brain_cohort,
    patient_brain,
    template,
)
from medcl.data.synth.brain import cohort as brain_cohort
from medcl.data.synth.brain.anatomy import (
    CORTEX_SD_MM,
    BrainAnatomy,
    tissue_fractions,
    to_template,
)
from medcl.errors import MedclError
from tests.data.test_synth import _files

needs_nilearn = pytest.mark.skipif(
    importlib.util.find_spec("nilearn") is None, reason="the brain cohort needs nilearn"
)
SIZE = 32
PATIENTS = 6
SEED = 3
PATH_RE = re.compile(r"^P\d{4}/ST\d{2}/SE01/IM0001\.dcm$")
# header values whose whole text must not reach any output (names also by their parts)
WHOLE_VALUES = (
    "PatientName PatientID AccessionNumber InstitutionName ReferringPhysicianName OperatorsName "
    "PatientAddress"
).split()


def _labels(root: Path) -> dict[str, str]:
    with open(root / "labels.csv", encoding="utf-8", newline="") as fh:
        return {r["path"]: r["label"] for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    out = tmp_path_factory.mktemp("brain") / "c"
    return generate_brain_cohort(out, patients=PATIENTS, seed=SEED, size=SIZE, progress=False)


@needs_nilearn
def test_files_are_mr_dicom_with_labels_and_record(cohort: SynthSummary) -> None:
    root = cohort.out_dir
    files = _files(root)
    labels = _labels(root)
    assert sorted(labels) == files and len(files) == cohort.files == cohort.images
    per_patient: dict[str, set[str]] = {}
    for rel in files:
        assert PATH_RE.match(rel), rel
        per_patient.setdefault(rel.split("/")[0], set()).add(labels[rel])
        ds = pydicom.dcmread(root / rel)
        assert ds.SOPClassUID == MRImageStorage and ds.Modality == "MR"
        assert ds.BodyPartExamined == "HEAD"
        arr = ds.pixel_array
        assert arr.shape == (SIZE, SIZE) and arr.dtype == np.uint16 and arr.max() <= 4095
        corners = np.concatenate([arr[:2, :2].ravel(), arr[-2:, -2:].ravel()]).mean()
        assert corners < 0.15 * arr[SIZE // 2 - 3 : SIZE // 2 + 3, 4:-4].mean(), rel  # air
    assert len(per_patient) == PATIENTS
    assert all(len(v) == 1 for v in per_patient.values())  # one grade per patient
    assert all(3 <= sum(f.startswith(p) for f in files) <= 5 for p in per_patient)
    record = json.loads((root / "cohort.json").read_text(encoding="utf-8"))
    counts = {c: sum(next(iter(v)) == c for v in per_patient.values()) for c in CLASSES}
    assert record["class_counts"] == counts == cohort.class_counts
    assert record["classes"] == list(CLASSES) and record["generator"] == "medcl.synth.brain"
    assert (record["modality"], record["dims"], record["size"]) == ("mr", 2, SIZE)
    assert record["template_licence"].startswith("unknown")


@needs_nilearn
def test_same_seed_same_bytes_and_patients_independent_of_cohort_size(
    cohort: SynthSummary, tmp_path: Path
) -> None:
    small = generate_brain_cohort(tmp_path / "s", patients=2, seed=SEED, size=SIZE, progress=False)
    files = _files(small.out_dir)
    assert files and set(files) <= set(_files(cohort.out_dir))
    for rel in files:
        assert (small.out_dir / rel).read_bytes() == (cohort.out_dir / rel).read_bytes(), rel
    other = generate_brain_cohort(
        tmp_path / "o", patients=1, seed=SEED + 1, size=SIZE, progress=False
    )
    for rel in set(_files(other.out_dir)) & set(files):
        a = pydicom.dcmread(other.out_dir / rel).pixel_array
        assert not np.array_equal(a, pydicom.dcmread(small.out_dir / rel).pixel_array), rel


@needs_nilearn
@pytest.mark.slow
def test_workers_write_the_same_bytes(cohort: SynthSummary, tmp_path: Path) -> None:
    par = generate_brain_cohort(
        tmp_path / "w", patients=3, seed=SEED, size=SIZE, progress=False, workers=2
    )
    for rel in _files(par.out_dir):
        assert (par.out_dir / rel).read_bytes() == (cohort.out_dir / rel).read_bytes(), rel


@needs_nilearn
def test_studies_share_anatomy_and_grade_but_not_acquisition(
    cohort: SynthSummary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = cohort.out_dir
    labels = _labels(root)
    for p in sorted({rel.split("/")[0] for rel in labels}):
        studies = [rel for rel in _files(root) if rel.startswith(p + "/")]
        ds = [pydicom.dcmread(root / rel) for rel in studies]
        assert len({labels[rel] for rel in studies}) == 1
        assert len({d.PatientID for d in ds}) == 1
        assert len({d.StudyInstanceUID for d in ds}) == len(ds)
        assert len({float(d.PixelSpacing[0]) for d in ds}) == len(ds)  # field of view
        assert len({float(d.SliceThickness) for d in ds}) == len(ds)
        for a, b in zip(ds, ds[1:], strict=False):
            assert not np.array_equal(a.pixel_array, b.pixel_array)
    # every acquisition of a patient images one and the same brain, that of patient_brain
    seen: list[tuple[BrainAnatomy, int]] = []
    real = brain_cohort.acquire_slice

    def spy(maps, anat, size, rng):
        seen.append((anat, int(rng.bit_generator.state["state"]["state"])))
        return real(maps, anat, size, rng)

    monkeypatch.setattr(brain_cohort, "acquire_slice", spy)
    generate_brain_cohort(tmp_path / "one", patients=1, seed=SEED, size=16, progress=False)
    expected = patient_brain(SEED, 0)
    assert len(seen) >= 3
    for anat, _ in seen:
        assert (anat.grade, anat.head_scale, anat.z_severity) == (
            expected.grade,
            expected.head_scale,
            expected.z_severity,
        )
        np.testing.assert_array_equal(anat.warp, expected.warp)
    assert len({state for _, state in seen}) == len(seen)  # each study its own draws


def _slice_points(z: float, step: float = 2.0) -> np.ndarray:
    xs = np.arange(-90.0, 90.0 + step, step)
    ys = np.arange(-125.0, 90.0 + step, step)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, z)], axis=1)


@needs_nilearn
def test_atrophy_grows_with_grade_at_fixed_intracranial_volume() -> None:
    maps = template.load_template()
    pts = _slice_points(18.0)
    for index in range(4):
        base = patient_brain(0, index)
        # within 10 mm of the template's lateral ventricles, wherever this brain puts them
        near = maps.sample("ventricle_distance", to_template(base, pts)) <= 10.0
        ventricular, elsewhere, intracranial = [], [], []
        for grade in range(3):
            f = tissue_fractions(maps, replace(base, grade=grade), pts)
            ventricular.append(f["csf"][near].sum())
            elsewhere.append(f["csf"][~near].sum())
            intracranial.append((f["csf"] + f["gm"] + f["wm"]).sum())
        assert ventricular[0] < ventricular[1] < ventricular[2], (index, ventricular)
        assert elsewhere[0] < elsewhere[1] < elsewhere[2], (index, elsewhere)  # sulci widen
        # the ventricles enlarge ex vacuo, beyond the global loss (about 1.6x from it alone)
        assert ventricular[2] > 2.2 * ventricular[0], (index, ventricular)
        # brain tissue shrinks by what CSF gains: the intracranial space is unchanged
        np.testing.assert_allclose(intracranial, intracranial[0], rtol=1e-6)


@needs_nilearn
def test_cortical_atrophy_is_an_erosion_of_the_template_tissue() -> None:
    """Independent reference: scipy's binary erosion of nilearn's own tissue maps by a ball."""
    from nilearn.datasets import (
        load_mni152_brain_mask,
        load_mni152_gm_template,
        load_mni152_wm_template,
    )
    from scipy import ndimage

    maps = template.load_template()
    mask_img = load_mni152_brain_mask(resolution=1)
    k = int(round(18.0 - mask_img.affine[2, 3]))
    slab = slice(k - 4, k + 5)

    def data(img) -> np.ndarray:
        return np.asarray(img.dataobj, dtype=np.float32)[:, :, slab]

    gm, wm = (
        data(load_mni152_gm_template(resolution=1)),
        data(load_mni152_wm_template(resolution=1)),
    )
    tissue = (data(mask_img) > 0.5) & (gm + wm >= 0.5)
    i, j = np.meshgrid(np.arange(tissue.shape[0]), np.arange(tissue.shape[1]), indexing="ij")
    pts = np.stack([i.ravel(), j.ravel(), np.full(i.size, 4)], axis=1) + mask_img.affine[:3, 3]
    pts[:, 2] += slab.start
    identity = BrainAnatomy(
        grade=0,
        z_severity=0.0,
        z_cortex=0.0,
        z_ventricle=0.0,
        head_scale=(1.0, 1.0, 1.0),
        warp=np.zeros((3, 2, 2, 2)),
        skull_mm=5.0,
        scalp_mm=5.0,
    )
    for depth in (0.0, 2.0, 3.0):
        anat = replace(identity, z_cortex=depth / CORTEX_SD_MM)
        assert anat.cortical_depth_mm == pytest.approx(depth) and anat.ventricular_depth_mm == 0
        f = tissue_fractions(maps, anat, pts)
        ours = (f["gm"] + f["wm"] > 0.5).reshape(i.shape)
        r = int(np.floor(depth))
        o = np.arange(-r, r + 1)
        ball = (o[:, None, None] ** 2 + o[None, :, None] ** 2 + o[None, None, :] ** 2) <= depth**2
        ref = ndimage.binary_erosion(tissue, structure=ball, border_value=1)[:, :, 4]
        assert ours.sum() == pytest.approx(ref.sum(), rel=0.003), depth
        assert np.mean(ours != ref) < 0.001, depth


@needs_nilearn
def test_ingest_and_split_leave_no_phi(
    cohort: SynthSummary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    root = cohort.out_dir
    monkeypatch.setenv("MEDCL_SECRET_FILE", str(tmp_path / "private" / "secret.key"))
    out = tmp_path / "out"
    m, s = out / "m.csv", out / "s.csv"
    assert main(["ingest", str(root), "--out", str(m), "--labels", str(root / "labels.csv")]) == 0
    assert main(["split", str(m), "--out", str(s), "--val", "0.3", "--test", "0.3"]) == 0
    console = capsys.readouterr()
    manifest = read_manifest(m)
    assert len(manifest.df) == cohort.files and (manifest.df["label"] != "").all()
    assert manifest.df["patient_key"].nunique() == PATIENTS
    assert set(manifest.classes) <= set(CLASSES)
    needles: set[str] = set()
    for rel in _files(root):
        ds = pydicom.dcmread(root / rel, stop_before_pixels=True)
        needles |= {p for p in str(ds.PatientName).split("^") if len(p) >= 3}
        needles |= {str(ds[k].value) for k in WHOLE_VALUES}
        needles |= {*date_spellings(ds.PatientBirthDate), *date_spellings(ds.StudyDate)}
    assert any(n.startswith("MRN") for n in needles) and len(needles) > 20
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".npy" for p in written)
    haystacks = [(p.name, p.read_bytes().lower()) for p in written]
    haystacks.append(("console", (console.out + console.err).encode().lower()))
    for needle in needles:
        for where, data in haystacks:
            assert needle.lower().encode() not in data, f"{needle!r} in {where}"


@needs_nilearn
def test_brain_and_phantom_cohorts_have_distinct_patients(tmp_path: Path) -> None:
    brain = generate_brain_cohort(tmp_path / "b", patients=2, seed=0, size=16, progress=False)
    phantom = generate_cohort(tmp_path / "p", patients=2, seed=0, size=16, progress=False)

    def ids(root: Path) -> set[str]:
        return {
            str(pydicom.dcmread(root / rel, stop_before_pixels=True).PatientID)
            for rel in _files(root)
        }

    assert not ids(brain.out_dir) & ids(phantom.out_dir)


def test_missing_nilearn_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "nilearn", None)  # import nilearn raises ImportError
    monkeypatch.setitem(sys.modules, "nilearn.datasets", None)
    monkeypatch.setattr(template, "_load_template", template._load_template.__wrapped__)
    with pytest.raises(MedclError) as info:
        generate_brain_cohort(tmp_path / "x", patients=1, progress=False)
    assert str(info.value) == NILEARN_MISSING
    assert not (tmp_path / "x").exists()
    assert main(["synth", "--cohort", "brain", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"medcl synth: error: {NILEARN_MISSING}"


def test_importing_medcl_does_not_need_nilearn() -> None:
    code = (
        "import sys; sys.modules['nilearn'] = None; "
        "import medcl, medcl.data.synth, medcl.data.synth.brain, medcl.cli.main, medcl.demo; "
        "print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--modality", "ct"], "the brain cohort is MR only"),
        (["--dims", "3"], "the brain cohort is 2-D"),
        (["--size", "8"], "size must be an integer >= 16"),
    ],
)
def test_cli_refuses_what_the_brain_cohort_cannot_do(
    flags: list[str], message: str, tmp_path: Path, capsys
) -> None:
    argv = ["synth", "--cohort", "brain", "--out", str(tmp_path / "c"), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


@needs_nilearn
def test_cli_writes_a_brain_cohort(tmp_path: Path, capsys) -> None:
    argv = ["synth", "--cohort", "brain", "--out", str(tmp_path / "c"), "--patients", "2"]
    assert main([*argv, "--size", "16"]) == 0
    assert "DICOM files (2 patients" in capsys.readouterr().out
    assert _files(tmp_path / "c") and (tmp_path / "c" / "labels.csv").is_file()
