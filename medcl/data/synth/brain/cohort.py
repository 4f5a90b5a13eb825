"""Orchestration: the brain cohort's arguments → patients → DICOM files, labels, summary.

Layout and side files are the phantom's (:mod:`medcl.data.synth.cohort`):
``P0001/ST01/SE01/IM0001.dcm`` (3-5 studies of one single-image series per patient),
``labels.csv`` and ``cohort.json``. Every patient depends only on ``(seed, index)``
(:func:`patient_rngs`), so patients can be written by several processes with the same bytes.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from medcl.data.synth.brain.acquire import acquire_slice
from medcl.data.synth.brain.anatomy import CLASSES, BrainAnatomy, sample_brain_anatomy
from medcl.data.synth.brain.template import TEMPLATE, load_template
from medcl.data.synth.cohort import SynthSummary
from medcl.data.synth.dicom import dicom_uid, write_instance
from medcl.data.synth.folder import (
    PatientResult,
    check_common_args,
    check_out_dir,
    prepare_out_dir,
    write_labels,
    write_patients,
    write_record,
)
from medcl.data.synth.phi import sample_phi
from medcl.data.synth.spec import COHORT_FILE, LABELS_FILE

GENERATOR = "medcl.synth.brain"
"""The ``generator`` recorded in ``cohort.json``."""

GENERATOR_VERSION = 1
"""Changes whenever the same arguments (and the same template) would give different files."""

STREAM = 21
"""Appended to ``(seed, index)`` in the patients' seed sequence: a brain patient's draws are not a
phantom patient's of the same seed and index."""

PHI_INDEX_OFFSET = 4_500_000
"""Added to the patient index for the fake PHI: record and accession numbers differ from those of
a phantom cohort with the same seed (both are distinct for every index below 9 million), so the
two cohorts can be ingested together."""


def generate_brain_cohort(
    out_dir: str | os.PathLike[str],
    patients: int = 300,
    seed: int = 0,
    size: int = 64,
    progress: bool = True,
    workers: int = 1,
) -> SynthSummary:
    """Write a labelled brain-atrophy cohort of 2-D MR DICOM studies (model: :mod:`..brain`).

    Args:
        out_dir: A new or empty folder, or one holding a cohort from ``medcl synth`` (replaced).
        patients: How many patients (>= 1), each with 3-5 studies of one image.
        seed: Seed (>= 0). Equal arguments and the same nilearn template give equal bytes.
        size: Image rows and columns, from 16 to 1024.
        progress: Whether to show a progress bar (stderr).
        workers: Parallel processes, 0 for one per CPU core; each derives the template's maps
            once (a few seconds). The files are the same for any number.

    Returns:
        A :class:`~medcl.data.synth.SynthSummary` (modality ``"mr"``, dims 2); the same
        information, the template and the versions are written to ``cohort.json`` (no PHI).

    Raises:
        MedclError: An argument is out of range, ``out_dir`` is unusable, or nilearn is missing.
    """
    out = Path(out_dir)
    check_common_args(out, patients, seed, size)
    check_out_dir(out)
    patients, seed, size = int(patients), int(seed), int(size)
    maps = load_template()  # fails before anything is written when nilearn is missing
    prepare_out_dir(out)

    width = max(4, len(str(patients)))
    job = partial(_generate_patient, out, width=width, seed=seed, size=size)
    counts, image_counts, rows = write_patients(job, patients, workers, progress, CLASSES)
    write_labels(out / LABELS_FILE, rows)
    summary = SynthSummary(
        out_dir=out,
        patients=patients,
        images=len(rows),
        files=len(rows),
        class_counts=counts,
        modality="mr",
        dims=2,
        size=size,
        seed=seed,
    )
    write_record(
        out / COHORT_FILE,
        {
            "generator": GENERATOR,
            "generator_version": GENERATOR_VERSION,
            "cohort": "brain",
            "patients": patients,
            "images": len(rows),
            "files": len(rows),
            "class_counts": counts,
            "image_class_counts": image_counts,
            "classes": list(CLASSES),
            "modality": "mr",
            "dims": 2,
            "size": size,
            "seed": seed,
            "labels": LABELS_FILE,
            "layout": "P<patient>/ST<study>/SE<series>/IM<instance>.dcm",
            "template": TEMPLATE,
            "template_licence": "unknown (nilearn's description); generated at run time, "
            "no derived image is distributed with medcl",
            "nilearn": maps.nilearn_version,
        },
    )
    return summary


def patient_rngs(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for a patient's anatomy, metadata (PHI, studies) and acquisitions."""
    children = np.random.SeedSequence([seed, index, STREAM]).spawn(3)
    return tuple(np.random.default_rng(c) for c in children)


def patient_brain(seed: int, index: int) -> BrainAnatomy:
    """The brain of patient ``index`` (0-based) in the brain cohort of ``seed``."""
    return sample_brain_anatomy(patient_rngs(seed, index)[0])


def _generate_patient(
    out_dir: Path, index: int, *, width: int, seed: int, size: int
) -> PatientResult:
    """Write one patient's studies; return (label index, images, [(relative path, label)])."""
    maps = load_template()
    anat_rng, meta_rng, acq_rng = patient_rngs(seed, index)
    anat = sample_brain_anatomy(anat_rng)
    n_studies = int(meta_rng.integers(3, 6))
    phi = sample_phi(meta_rng, index + PHI_INDEX_OFFSET, seed, n_studies)
    tables = meta_rng.uniform(-200.0, 200.0, n_studies)
    pid = f"P{index + 1:0{width}d}"
    key = (GENERATOR, GENERATOR_VERSION, seed, size, index)
    label = CLASSES[anat.grade]
    rows: list[tuple[str, str]] = []
    for study in range(n_studies):
        pixels, info = acquire_slice(maps, anat, size, acq_rng)
        info["model_name"] = f"medcl-synth-brain v{GENERATOR_VERSION}"
        folder = out_dir / pid / f"ST{study + 1:02d}" / "SE01"
        folder.mkdir(parents=True, exist_ok=True)
        uids = {
            "study": dicom_uid(*key, "study", study),
            "series": dicom_uid(*key, "series", study, 0),
            "frame": dicom_uid(*key, "frame", study, 0),
            "sop": dicom_uid(*key, "sop", study, 0, 0),
        }
        spacing = info["fov_mm"] / size
        corner = -info["fov_mm"] / 2 + spacing / 2
        geometry = {
            "spacing": spacing,
            "thickness": info["thickness_mm"],
            "position": (corner, corner, float(tables[study]) + info["slice_z_mm"]),
            "orientation": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        }
        write_instance(folder / "IM0001.dcm", pixels, "mr", uids, phi, study, 0, 0, geometry, info)
        rows.append((f"{pid}/ST{study + 1:02d}/SE01/IM0001.dcm", label))
    return anat.grade, n_studies, rows
