"""The multi-label phantom (``generate_cohort(task="multilabel")``, medcl.data.synth.multilabel)
and the guard that the default cohort's files did not change."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from medcl.cli.main import main
from medcl.data.synth import FINDINGS, generate_cohort
from medcl.data.synth.cohort import patient_anatomy, patient_rngs
from medcl.data.synth.geometry import ellipse_rho, pixel_grid, polyline_distance
from medcl.data.synth.multilabel import (
    FINDING_PRIORS,
    redraw_findings_distractors,
    sample_findings_anatomy,
)
from medcl.data.synth.render import render_tomographic
from medcl.errors import MedclError
from tests.data.test_synth import TISSUE

DEFAULT_DIGEST = "99e93c9cf9f519a0a899bda86c039d7814fb823d6b8826b9de9cc363c598599c"
"""sha256 over every file (relative path, then bytes) of the default cohorts in
:func:`_default_digest`, computed with the generator before the multi-label variant was added."""


def _default_digest(base: Path) -> str:
    h = hashlib.sha256()
    for modality, dims in (("mr", 2), ("ct", 2), ("xr", 2), ("ct", 3)):
        out = base / f"{modality}{dims}"
        generate_cohort(
            out, patients=2, seed=7, modality=modality, size=16, dims=dims, progress=False
        )
        for p in sorted(out.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(out).as_posix().encode())
                h.update(p.read_bytes())
    return h.hexdigest()


def test_the_default_cohort_is_byte_identical_to_before(tmp_path: Path) -> None:
    assert _default_digest(tmp_path) == DEFAULT_DIGEST


def _anatomy(seed: int, index: int):
    return sample_findings_anatomy(patient_rngs(seed, index)[0])


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ml")
    out = {}
    for name, modality, dims in (
        ("mr", "mr", 2),
        ("ct", "ct", 2),
        ("xr", "xr", 2),
        ("ct3", "ct", 3),
    ):
        out[name] = generate_cohort(
            base / name,
            patients=6 if dims == 2 else 2,
            seed=4,
            modality=modality,
            size=32,
            dims=dims,
            task="multilabel",
            progress=False,
        ).out_dir
    return out


@pytest.mark.parametrize("name", ["mr", "ct", "xr", "ct3"])
def test_labels_csv_has_a_column_per_finding_constant_per_patient(cohorts, name) -> None:
    root = cohorts[name]
    text = (root / "labels.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "path,lesion,nodule,vessel"
    rows = _rows(root)
    assert {r["path"] for r in rows} == {
        p.relative_to(root).as_posix() for p in root.rglob("*.dcm")
    }
    per_patient: dict[str, set[tuple[str, ...]]] = {}
    for r in rows:
        assert {r[f] for f in FINDINGS} <= {"0", "1"}
        per_patient.setdefault(r["path"][:5], set()).add(tuple(r[f] for f in FINDINGS))
    assert all(len(v) == 1 for v in per_patient.values())
    # each patient's findings are those of its phantom
    for pid, (states,) in per_patient.items():
        anat = _anatomy(4, int(pid[1:]) - 1)
        assert states == tuple(str(f) for f in anat.findings), pid
    record = json.loads((root / "cohort.json").read_text(encoding="utf-8"))
    assert record["task"] == "multilabel"
    assert record["findings"] == record["classes"] == list(FINDINGS)
    counts = {f: sum(s[k] == "1" for (s,) in per_patient.values()) for k, f in enumerate(FINDINGS)}
    assert record["class_counts"] == counts
    assert record["files"] == len(rows)


def test_findings_do_not_depend_on_modality_and_uids_differ_from_the_default(
    cohorts, tmp_path
) -> None:
    def by_patient(root: Path) -> dict[str, tuple[str, ...]]:
        return {r["path"][:5]: tuple(r[f] for f in FINDINGS) for r in _rows(root)}

    assert by_patient(cohorts["mr"]) == by_patient(cohorts["ct"]) == by_patient(cohorts["xr"])
    default = generate_cohort(tmp_path / "d", patients=1, seed=4, size=32, progress=False).out_dir
    rel = "P0001/ST01/SE01/IM0001.dcm"
    a = pydicom.dcmread(cohorts["mr"] / rel, stop_before_pixels=True)
    b = pydicom.dcmread(default / rel, stop_before_pixels=True)
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.StudyInstanceUID != b.StudyInstanceUID
    assert a.PatientID == b.PatientID  # the same fake patient


def test_prevalences_are_independent_and_near_their_priors() -> None:
    n = 400
    y = np.array([_anatomy(0, i).findings for i in range(n)], dtype=float)
    for k, p in enumerate(FINDING_PRIORS):
        assert 0.3 <= p <= 0.5
        assert abs(y[:, k].sum() - n * p) < 4 * math.sqrt(n * p * (1 - p)), (k, y[:, k].mean())
    # independence: every pair's joint frequency near the product of the marginals
    for a in range(3):
        for b in range(a + 1, 3):
            joint = (y[:, a] * y[:, b]).mean()
            expected = FINDING_PRIORS[a] * FINDING_PRIORS[b]
            assert abs(joint - expected) < 4 * math.sqrt(expected * (1 - expected) / n), (a, b)


def _blobs(anat, without, size: int = 64) -> tuple[int, int, np.ndarray]:
    """Connected regions (and their pixels) that differ between ``anat`` and ``without``."""
    grid = pixel_grid(size, None)
    a = render_tomographic(anat, grid, 2.0 / size, TISSUE)
    b = render_tomographic(without, grid, 2.0 / size, TISSUE)
    diff = (np.abs(a - b) > 0.05).reshape(size, size)
    labels, n = ndimage.label(diff)
    return n, int(diff.sum()), labels


def test_each_finding_is_visible_where_it_belongs_at_64_px() -> None:
    # White-box, per acquisition: render with and without each finding's structure under a fixed
    # contrast; a present finding must change the image (lesions: one region each; nodule: one
    # region outside the organ; vessel: at least 6 pixels around the dilated stretch, reaching a
    # pixel beyond the vessel's own width),
    # an absent one has no structure, and no acquisition has a nodule that is not the finding.
    seen = np.zeros(3, int)
    grid = pixel_grid(64, None)
    for index in range(30):
        anat = _anatomy(0, index)
        view = redraw_findings_distractors(anat, np.random.default_rng([index, 9]))
        lesion, nodule, vessel = anat.findings
        seen += anat.findings
        assert bool(anat.lesions) == bool(lesion)
        n, _, _ = _blobs(view, replace(view, lesions=[]))
        assert n == len(anat.lesions), index
        assert (anat.nodule is not None) == bool(nodule)
        assert view.nodules == ([anat.nodule] if nodule else [])
        if nodule:
            n, _, labels = _blobs(view, replace(view, nodules=[]))
            assert n == 1, index
            organ_rho = [ellipse_rho(anat.organ, p) for p in grid[labels.ravel() > 0]]
            assert min(organ_rho) > 1.0, index
        assert (anat.dilation is not None) == bool(vessel)
        assert view.vessels[0] is anat.main_vessel
        if vessel:
            assert view.vessels[1] is anat.dilation
            others = [v for v in view.vessels if v is not anat.dilation]
            _, area, labels = _blobs(view, replace(view, vessels=others))
            # what changed lies around the dilated stretch and reaches beyond the vessel's width
            dist = polyline_distance(anat.dilation.points, grid[labels.ravel() > 0], 1.0)
            assert area >= 6 and dist.max() < anat.dilation.radius + 2.0 / 64, (index, area)
            assert dist.max() > anat.main_vessel.radius + 2.0 / 64, index
            # the dilation lies on the vessel and clear of every lesion
            on = np.min(
                np.linalg.norm(anat.main_vessel.points[:, None] - anat.dilation.points, axis=2)
            )
            assert on < 1e-9
            for les in anat.lesions:
                gap = np.min(np.linalg.norm(anat.dilation.points[:, :2] - les.center[:2], axis=1))
                assert gap > les.radius + anat.dilation.radius, index
    assert (seen > 0).all()


def test_findings_persist_and_distractor_vessels_change() -> None:
    anats = [_anatomy(1, i) for i in range(10)]
    views = [
        [redraw_findings_distractors(anat, np.random.default_rng([i, s])) for s in (1, 2)]
        for i, anat in enumerate(anats)
    ]
    for anat, pair in zip(anats, views, strict=True):
        assert all(v.lesions is anat.lesions and v.findings == anat.findings for v in pair)
        assert all(v.vessels[0] is anat.main_vessel for v in pair)
    changed = sum(
        len(a.vessels) != len(b.vessels)
        or not np.allclose(a.vessels[-1].points, b.vessels[-1].points)
        for a, b in views
    )
    assert changed >= 9


def test_default_anatomy_is_not_the_multilabel_one() -> None:
    # the default path still draws the single-label phantom (a class index, distractor nodules)
    anat = patient_anatomy(0, 0)
    assert not hasattr(anat, "findings") and anat.label in (0, 1, 2)


def test_cli_task_flag(tmp_path, capsys) -> None:
    out = tmp_path / "c"
    args = ["synth", "--out", str(out), "--patients", "2", "--size", "16"]
    assert main([*args, "--task", "multilabel"]) == 0
    assert "lesion" in capsys.readouterr().out
    assert (out / "labels.csv").read_text().startswith("path,lesion,nodule,vessel\n")
    assert main([*args, "--cohort", "brain", "--task", "multilabel"]) != 0
    assert "drop --task" in capsys.readouterr().err
    with pytest.raises(MedclError, match="unknown task"):
        generate_cohort(tmp_path / "x", patients=1, size=16, task="multi", progress=False)
