"""Orchestration: a cohort's arguments → patients → files, ``labels.csv`` and ``cohort.json``.

Layout: ``P0001/ST01/SE01/IM0001.dcm``. Every patient depends only on ``(seed, index)``
(:func:`patient_rngs`), so patients can be written by several processes in any order with the
same bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from medcl.data.synth.acquire import acquire
from medcl.data.synth.anatomy import Anatomy, redraw_distractors, sample_anatomy
from medcl.data.synth.dicom import dicom_uid, write_instance
from medcl.data.synth.folder import (
    PatientResult,
    check_common_args,
    check_out_dir,
    is_int,
    prepare_out_dir,
    write_labels,
    write_patients,
    write_record,
)
from medcl.data.synth.geometry import pixel_grid
from medcl.data.synth.multilabel import (
    FINDINGS,
    FindingsAnatomy,
    redraw_findings_distractors,
    sample_findings_anatomy,
)
from medcl.data.synth.phi import sample_phi
from medcl.data.synth.spec import (
    CLASSES,
    COHORT_FILE,
    GENERATOR,
    GENERATOR_VERSION,
    LABELS_FILE,
    MODALITIES,
)
from medcl.errors import MedclError

TASKS = ("multiclass", "multilabel")
"""``task``: the lesion-count classes (default) or three independent findings
(:mod:`medcl.data.synth.multilabel`)."""


@dataclass
class SynthSummary:
    """What :func:`generate_cohort` wrote.

    Attributes:
        out_dir: The cohort folder.
        patients: Number of patients.
        images: Number of images: 2D images, or image series (volumes) when ``dims`` is 3.
        files: Number of DICOM files written (one per 2D image or per slice).
        class_counts: Number of *patients* per class name (every class is a key); multi-label:
            per finding, the patients with it.
        modality: ``"mr"``, ``"ct"`` or ``"xr"``.
        dims: 2 or 3.
        size: Rows and columns of every image.
        seed: The seed the cohort was generated from.
        task: ``multiclass`` (one class per patient) or ``multilabel`` (findings).
    """

    out_dir: Path
    patients: int
    images: int
    files: int
    class_counts: dict[str, int]
    modality: str
    dims: int
    size: int
    seed: int
    task: str = "multiclass"


def generate_cohort(
    out_dir: str | os.PathLike[str],
    patients: int = 300,
    seed: int = 0,
    modality: str = "mr",
    size: int = 64,
    dims: int = 2,
    progress: bool = True,
    workers: int = 1,
    task: str = "multiclass",
) -> SynthSummary:
    """Write a labelled phantom cohort of DICOM studies (the model: :mod:`medcl.data.synth`).

    Args:
        out_dir: Folder to write into. It is created if missing; it must be empty or hold a cohort
            written earlier by this function (which is then replaced).
        patients: Number of patients (at least 1).
        seed: Non-negative seed; the same arguments give byte-identical files.
        modality: ``"mr"`` (uint16 magnitude), ``"ct"`` (int16, Hounsfield units after the
            modality LUT) or ``"xr"`` (uint16 projection radiograph, 2D only).
        size: Rows and columns of every image (16 to 1024).
        dims: 2 for single images (3-5 studies per patient) or 3 for volumes (one study with two
            series of ``max(8, size // 2)`` slices per patient, one file per slice).
        progress: Show a tqdm progress bar on stderr.
        workers: Processes writing patients in parallel (0 = one per CPU core). Every patient
            depends only on ``(seed, index)``, so the files are byte-identical for any number.
        task: ``"multiclass"`` (default: the lesion-count classes :data:`CLASSES`) or
            ``"multilabel"`` (the findings :data:`~medcl.data.synth.multilabel.FINDINGS`,
            independent per patient; :mod:`medcl.data.synth.multilabel`).

    Returns:
        A :class:`SynthSummary`; the same information (no PHI) is written to ``cohort.json``.
        ``labels.csv`` holds one ``path,label`` row per DICOM file (multi-label:
        ``path,lesion,nodule,vessel`` with 1 or 0 per finding), paths relative to ``out_dir``
        with forward slashes.

    Raises:
        MedclError: An argument is out of range, or ``out_dir`` is unusable.
    """
    out = Path(out_dir)
    _check_args(out, patients, seed, modality, size, dims)
    if task not in TASKS:
        raise MedclError(f"synth: unknown task {task!r}; choose one of {', '.join(TASKS)}")
    patients, seed, size, dims = int(patients), int(seed), int(size), int(dims)
    prepare_out_dir(out)

    width = max(4, len(str(patients)))
    options = {"modality": modality, "size": size, "dims": dims, "task": task}
    job = partial(_generate_patient, out, width=width, seed=seed, **options)
    names = FINDINGS if task == "multilabel" else CLASSES
    counts, image_counts, rows = write_patients(job, patients, workers, progress, names)
    n_images = len({r[0].rsplit("/", 1)[0] for r in rows})  # one image per series folder

    header = ("path", *FINDINGS) if task == "multilabel" else ("path", "label")
    write_labels(out / LABELS_FILE, rows, header)

    summary = SynthSummary(
        out_dir=out,
        patients=patients,
        images=n_images,
        files=len(rows),
        class_counts=counts,
        modality=modality,
        dims=dims,
        size=size,
        seed=seed,
        task=task,
    )
    _write_record(out / COHORT_FILE, summary, image_counts)
    return summary


def patient_anatomy(seed: int, index: int) -> Anatomy:
    """The phantom of patient ``index`` (0-based) in the cohort of ``seed``."""
    return sample_anatomy(patient_rngs(seed, index)[0])


def patient_rngs(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for a patient's anatomy, metadata (PHI, counts) and acquisitions.

    Seeded with ``SeedSequence([seed, index])``: a patient does not depend on how many other
    patients are generated, nor on the modality, size or dimensionality.
    """
    children = np.random.SeedSequence([seed, index]).spawn(3)
    return tuple(np.random.default_rng(c) for c in children)


def _write_record(path: Path, summary: SynthSummary, image_counts: dict[str, int]) -> None:
    """``cohort.json``: what was generated, with which arguments (no PHI)."""
    record = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "patients": summary.patients,
        "images": summary.images,
        "files": summary.files,
        "class_counts": summary.class_counts,
        "image_class_counts": image_counts,
        "classes": list(FINDINGS if summary.task == "multilabel" else CLASSES),
        "modality": summary.modality,
        "dims": summary.dims,
        "size": summary.size,
        "seed": summary.seed,
        "labels": LABELS_FILE,
        "layout": "P<patient>/ST<study>/SE<series>/IM<instance>.dcm",
    }
    if summary.task == "multilabel":  # a single-label record stays as it was
        record["task"] = "multilabel"
        record["findings"] = list(FINDINGS)
    write_record(path, record)


def _generate_patient(
    out_dir: Path,
    index: int,
    *,
    width: int,
    seed: int,
    modality: str,
    size: int,
    dims: int,
    task: str = "multiclass",
) -> PatientResult:
    """Write one patient's files; return (label index or findings, images, labels.csv rows)."""
    anat_rng, meta_rng, acq_rng = patient_rngs(seed, index)
    multilabel = task == "multilabel"
    anat = sample_findings_anatomy(anat_rng) if multilabel else sample_anatomy(anat_rng)
    redraw = redraw_findings_distractors if multilabel else redraw_distractors
    n_images = int(meta_rng.integers(3, 6))
    findings = anat.findings if isinstance(anat, FindingsAnatomy) else ()
    label = tuple(map(str, findings)) if multilabel else (CLASSES[anat.label],)
    fov = float(meta_rng.uniform(320.0, 400.0))
    spacing = fov / size
    px = 2.0 / size

    if dims == 2:
        layout = [(j, 0) for j in range(n_images)]  # (study, series)
        n_slices = None
    else:
        layout = [(0, 0), (0, 1)]
        n_slices = max(8, size // 2)
    phi = sample_phi(meta_rng, index, seed, 1 + max(s for s, _ in layout))
    table = [float(meta_rng.uniform(-200.0, 200.0)) for _ in layout]

    pid = f"P{index + 1:0{width}d}"
    key: tuple = (GENERATOR_VERSION, seed, modality, size, dims, index)
    if multilabel:  # other images, other UIDs
        key = (*key, "multilabel")
    grid = pixel_grid(size, n_slices)
    rows: list[tuple[str, ...]] = []
    for k, (study, series) in enumerate(layout):
        stored, info = acquire(redraw(anat, acq_rng), modality, grid, px, acq_rng)
        folder = out_dir / pid / f"ST{study + 1:02d}" / f"SE{series + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        uids = {
            "study": dicom_uid(*key, "study", study),
            "series": dicom_uid(*key, "series", study, series),
            "frame": dicom_uid(*key, "frame", study, series),
        }
        orientation, positions, thickness = _slice_geometry(
            modality, fov, spacing, n_slices, table[k], acq_rng
        )
        images = stored.reshape((-1, size, size))
        for m, pos in enumerate(positions):
            uids["sop"] = dicom_uid(*key, "sop", study, series, m)
            name = f"IM{m + 1:04d}.dcm"
            geometry = {
                "spacing": spacing,
                "thickness": thickness,
                "position": pos,
                "orientation": orientation,
            }
            write_instance(
                folder / name, images[m], modality, uids, phi, study, series, m, geometry, info
            )
            rows.append((f"{pid}/ST{study + 1:02d}/SE{series + 1:02d}/{name}", *label))
    return (findings if multilabel else anat.label), len(layout), rows


def _slice_geometry(
    modality: str,
    fov: float,
    spacing: float,
    n_slices: int | None,
    table_z: float,
    rng: np.random.Generator,
) -> tuple[tuple[float, ...], list[tuple[float, float, float]], float]:
    """Orientation, the position of every slice, and the slice thickness of one series (mm)."""
    x0 = -fov / 2 + spacing / 2
    if modality == "xr":
        return (1.0, 0.0, 0.0, 0.0, 0.0, -1.0), [(x0, 0.0, fov / 2 - spacing / 2)], spacing
    orientation = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    if n_slices is None:
        thickness = float(rng.uniform(3.0, 6.0))
        return orientation, [(x0, x0, table_z)], thickness
    thickness = fov / n_slices  # the volume spans the in-plane field of view in z
    return orientation, [(x0, x0, table_z + s * thickness) for s in range(n_slices)], thickness


def _check_args(
    out_dir: Path, patients: int, seed: int, modality: str, size: int, dims: int
) -> None:
    check_common_args(out_dir, patients, seed, size)
    if modality not in MODALITIES:
        raise MedclError(
            f"synth: unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}"
        )
    if dims not in (2, 3) or not is_int(dims):
        raise MedclError(f"synth: dims must be 2 or 3, got {dims!r}")
    if dims == 3 and modality == "xr":
        raise MedclError("synth: xr is a projection modality; use dims 2 (volumes need mr or ct)")
    check_out_dir(out_dir)
