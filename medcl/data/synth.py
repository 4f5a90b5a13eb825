"""Phantom cohort: a generated, labelled set of real DICOM studies.

medcl cannot download data, so its default data set is generated. :func:`generate_cohort` writes
a cohort of synthetic patients as DICOM files (MR, CT or projection X-ray), a ``labels.csv`` and a
``cohort.json`` summary. The files are ordinary DICOM Part 10 files that exercise the same code
paths as clinical exports: modality LUTs, pixel spacing, slice geometry, and fake protected health
information (PHI) in the headers for the de-identification code to remove.

Generative model
----------------
Every patient is a small 3D anatomical phantom in normalised coordinates (the field of view spans
``[-1, 1]`` in x and y, and z for volumes). It is drawn once per patient and reused for all of that
patient's images, so lesions sit at the same anatomical position in every image of a patient:

* **Body**: an elliptic, slowly tapering cylinder with a subcutaneous fat layer of varying
  thickness; a vertebral body (cortical rim around marrow, a cylinder along z) posterior; up to two
  small posterolateral organs ("kidneys").
* **Organ**: a rotated ellipsoid of varying size and position inside the body with a smooth tissue
  texture (a Gaussian-filtered random field in anatomical coordinates).
* **Distractors** present in every class: 2-4 elongated, curved vessels inside the organ
  (quadratic Bezier tubes, bright or dark) and 0-2 small round nodules in the body *outside* the
  organ. They are drawn anew for every acquisition (the imaged slab and the bowel differ between
  studies), so they vary between a patient's images while the findings persist. Kidneys and
  nodules are kept clear of the organ's outline, lesions clear of the organ's outline, the spine,
  the vessels and each other, so the count is unambiguous in every image.
* **Findings**: the class is the number of small round focal lesions (spheres) inside the organ:
  ``normal`` (none), ``single_lesion`` (one) or ``multiple_lesions`` (two to four). The class
  priors are about 45 / 33 / 22 %. Lesion polarity (brighter or darker than the organ) and
  contrast vary per patient and lie in the same range as the vessels', so neither the mean
  intensity nor the presence of a bright or dark structure gives the label away: telling the
  classes apart needs shape (round versus elongated), location (inside versus outside the organ)
  and counting.

Each *image* is one acquisition of the phantom with its own pose (rotation, shift, scale), tissue
contrast, intensity drift, noise, tissue texture, vessels and nodules. What repeats across a
patient's images is the gross anatomy and the findings; this is the structure that patient-aware
contrastive pretraining (same-patient positives) can learn from unlabelled images:

* ``mr``: magnitude image (uint16) with a T1- or T2-like tissue weighting, a smooth multiplicative
  bias field and Rician noise (magnitude of a complex signal with Gaussian noise in both channels).
* ``ct``: Hounsfield units (air -1000, fat about -100, soft tissue 30-60, marrow 150-300, cortical
  bone about 700; lesions and vessels 20-60 HU from the organ), Gaussian noise and a small offset
  drift, stored as int16 with ``RescaleIntercept`` -1024.
* ``xr``: a projection radiograph (uint16): the analytic line integral of attenuation through the
  phantom's ellipsoids, spheres and tubes, with bright bones (spine and ribs), an anode-heel-like
  intensity gradient, a display gamma and Gaussian noise.

Layout: ``P0001/ST01/SE01/IM0001.dcm``. In 2D each patient has 3-5 studies of one single-image
series, all showing the phantom's z = 0 section with every lesion, vessel and nodule brought into
that plane, so a 2D image always shows all of the patient's findings. In 3D (``mr`` and ``ct``
only) each patient has one study with two series of ``max(8, size // 2)`` axial slices, one file
per slice, positioned along the slice normal at constant spacing. Folder and file names carry no
PHI.

Determinism: all randomness comes from :func:`numpy.random.default_rng` seeded with
``SeedSequence([seed, patient_index])``, and UIDs are derived from the seed with
:func:`pydicom.uid.generate_uid` and ``entropy_srcs``, so the same arguments give byte-identical
files, and a patient does not depend on how many other patients are generated. Anatomy and labels
depend only on the seed and the patient index, not on the modality, size or dimensionality.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, timedelta
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    PYDICOM_ROOT_UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from scipy import ndimage

from medcl.errors import MedclError

__all__ = ["CLASSES", "MODALITIES", "SynthSummary", "generate_cohort"]

CLASSES: tuple[str, ...] = ("normal", "single_lesion", "multiple_lesions")
"""Class names, in label-index order."""

MODALITIES: tuple[str, ...] = ("mr", "ct", "xr")
"""Supported modality flavours."""

CLASS_PRIORS: tuple[float, ...] = (0.45, 0.33, 0.22)
"""Probability of each class in :data:`CLASSES` for a patient."""

GENERATOR = "medcl.synth"
GENERATOR_VERSION = 3
LABELS_FILE = "labels.csv"
COHORT_FILE = "cohort.json"

_MIN_SIZE = 16
_IMPLEMENTATION_VERSION = "MEDCL_SYNTH_1"
_PATIENT_DIR = re.compile(r"^P\d{4,}$")

# Fake PHI vocabularies. Invented combinations; any resemblance to a real person is a coincidence.
_FEMALE = tuple(
    "JANE MARY ANNA LINDA SUSAN KAREN EMMA OLIVIA SOFIA MARIA ELENA HANNA GRACE CHLOE NORA ALICE "
    "AMINA YUKI".split()
)
_MALE = tuple(
    "JOHN JAMES ROBERT MICHAEL DAVID PETER THOMAS LUCAS NOAH OMAR IVAN KENJI LIAM PAUL ADAM SAMUEL "
    "MATEO RAVI".split()
)
_SURNAMES = tuple(
    "DOE ROE SMITH JOHNSON GARCIA MUELLER ROSSI DUBOIS NOVAK TANAKA KIM SILVA OKAFOR NGUYEN "
    "KOWALSKI HANSEN EVANS MORENO PETROV COHEN SINGH BAKER LINDQVIST MORI".split()
)
_INSTITUTIONS = (
    "ST ELSEWHERE GENERAL HOSPITAL",
    "RIVERSIDE MEDICAL CENTER",
    "NORTHGATE CLINIC",
    "LAKEVIEW UNIVERSITY HOSPITAL",
    "MERCY REGIONAL IMAGING",
    "HILLCREST HEALTH",
)
_CITIES = ("SPRINGFIELD", "RIVERTON", "LAKESIDE", "FAIRVIEW", "MILLBROOK", "OAKDALE")
_STREETS = ("MAIN ST", "ELM ST", "OAK AVE", "PARK RD", "LAKE DR", "HILL ST", "MILL LN")


@dataclass
class SynthSummary:
    """What :func:`generate_cohort` wrote.

    Attributes:
        out_dir: The cohort folder.
        patients: Number of patients.
        images: Number of images: 2D images, or image series (volumes) when ``dims`` is 3.
        files: Number of DICOM files written (one per 2D image or per slice).
        class_counts: Number of *patients* per class name (every class is a key).
        modality: ``"mr"``, ``"ct"`` or ``"xr"``.
        dims: 2 or 3.
        size: Rows and columns of every image.
        seed: The seed the cohort was generated from.
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


# --------------------------------------------------------------------------------------------------
# Anatomy (drawn once per patient, in normalised anatomical coordinates)
# --------------------------------------------------------------------------------------------------


@dataclass
class _Ellipsoid:
    center: np.ndarray  # (3,)
    axes: np.ndarray  # (3,) semi-axes along the rotated x, y and z
    angle: float  # rotation about z, radians


@dataclass
class _Tube:
    points: np.ndarray  # (K, 3) polyline through the centre
    radius: float
    sign: float  # +1 brighter / more attenuating than the surroundings, -1 darker
    contrast: float  # relative contrast magnitude in [0, 1]


@dataclass
class _Sphere:
    center: np.ndarray  # (3,)
    radius: float
    sign: float
    contrast: float


@dataclass
class _Anatomy:
    label: int
    body: _Ellipsoid
    fat_inner: float  # inner body surface as a fraction of the outer one
    organ: _Ellipsoid
    kidneys: list[_Ellipsoid]
    spine: _Sphere  # a cylinder along z; its radius is the cortical (outer) radius
    vessels: list[_Tube]
    nodules: list[_Sphere]  # round distractors outside the organ
    lesions: list[_Sphere]  # the findings: inside the organ
    ribs: list[_Tube]  # projection (xr) only
    texture_seed: int


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, k: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, k)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _ellipsoid_point(e: _Ellipsoid, u: np.ndarray) -> np.ndarray:
    """Map a point of the unit ball to the ellipsoid ``e``."""
    c, s = math.cos(e.angle), math.sin(e.angle)
    v = u * e.axes
    return e.center + np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]])


def _ellipse_rho(e: _Ellipsoid, p: np.ndarray) -> float:
    """Normalised in-plane radius of ``p`` in the z = 0 section of ``e`` (1 on its outline)."""
    c, s = math.cos(e.angle), math.sin(e.angle)
    d = p[:2] - e.center[:2]
    x, y = c * d[0] + s * d[1], -s * d[0] + c * d[1]
    return math.hypot(x / e.axes[0], y / e.axes[1])


def _ellipse_outline(e: _Ellipsoid, n: int = 24) -> np.ndarray:
    """Points on the z = 0 outline of an ellipsoid."""
    a = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    u = np.stack([np.cos(a), np.sin(a), np.zeros(n)], axis=1)
    return np.array([_ellipsoid_point(e, v) for v in u])


def _kidney_fits(kidney: _Ellipsoid, organ: _Ellipsoid, body: _Ellipsoid, fat_inner: float) -> bool:
    """Whether a kidney lies clear of the organ and inside the body wall."""
    rim = _ellipse_outline(kidney)
    return all(_ellipse_rho(organ, q) > 1 + 0.06 / min(organ.axes[:2]) for q in rim) and all(
        _ellipse_rho(body, q) < fat_inner - 0.04 / min(body.axes[:2]) for q in rim
    )


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Draw one patient's phantom. Uses only ``rng``, so it is the same for every modality."""
    label = int(rng.choice(len(CLASSES), p=CLASS_PRIORS))

    # The gross anatomy of this standardised single-organ protocol varies little between
    # patients; what tells two patients apart is in the organ: vessels, nodules, findings.
    body = _Ellipsoid(
        center=np.array([rng.normal(0, 0.01), rng.normal(0, 0.01), 0.0]),
        axes=np.array([rng.uniform(0.8, 0.84), rng.uniform(0.63, 0.67), rng.uniform(2.0, 3.0)]),
        angle=float(rng.normal(0, 0.02)),
    )
    fat_inner = float(rng.uniform(0.88, 0.9))
    bx, by = body.axes[0], body.axes[1]

    organ = _Ellipsoid(
        center=body.center
        + np.array([rng.uniform(-0.03, 0.03) * bx, rng.uniform(-0.12, -0.08) * by, 0.0]),
        axes=np.array(
            [rng.uniform(0.55, 0.59) * bx, rng.uniform(0.6, 0.64) * by, rng.uniform(0.6, 0.75)]
        ),
        angle=float(rng.uniform(-0.1, 0.1)),
    )

    spine_r = float(rng.uniform(0.085, 0.11))
    spine = _Sphere(
        center=body.center + np.array([rng.normal(0, 0.02), by * fat_inner - spine_r * 1.6, 0.0]),
        radius=spine_r,
        sign=1.0,
        contrast=1.0,
    )

    # Kidneys: posterolateral, clear of the organ (a round blob on the organ's edge would read as a
    # finding) and inside the body wall; a kidney with no room is left out.
    kidneys = []
    for side in (-1.0, 1.0):
        for _ in range(30):
            kidney = _Ellipsoid(
                center=body.center
                + np.array([side * rng.uniform(0.4, 0.6) * bx, rng.uniform(0.15, 0.45) * by, 0.0]),
                axes=np.array(
                    [rng.uniform(0.08, 0.12), rng.uniform(0.12, 0.17), rng.uniform(0.25, 0.35)]
                ),
                angle=float(side * rng.uniform(0.2, 0.6)),
            )
            if _kidney_fits(kidney, organ, body, fat_inner):
                kidneys.append(kidney)
                break

    # Findings: the patient's lesion polarity and contrast are shared by all of their lesions.
    # Lesions lie inside the organ, clear of its outline, of the spine and of each other (a gap of
    # at least 0.12, about 4 pixels at 64 px). A crowded draw is restarted with smaller lesions
    # (radius down to 0.08), then, rarely, with a slightly larger organ.
    n_lesions = (0, 1, int(rng.integers(2, 5)))[label]
    polarity = float(rng.choice([-1.0, 1.0]))
    strength = float(rng.uniform(0.3, 0.55))
    lesions: list[_Sphere] = []
    shrink, grown = 1.0, 0
    while len(lesions) < n_lesions:
        lesions = []
        for _ in range(200):
            r = float(rng.uniform(0.1, 0.13)) * shrink
            angle, radial = rng.uniform(0, 2 * math.pi), 0.8 * math.sqrt(rng.uniform())
            u = np.array(
                [radial * math.cos(angle), radial * math.sin(angle), rng.uniform(-0.45, 0.45)]
            )
            # Inside the organ in 3D too, so that no slice of a volume clips a lesion.
            if np.linalg.norm(u) > 1 - (r + 0.03) / min(organ.axes):
                continue
            p = _ellipsoid_point(organ, u)
            if np.hypot(*(p[:2] - spine.center[:2])) < spine.radius * 1.2 + r + 0.03:
                continue
            if any(np.hypot(*(p[:2] - q.center[:2])) < r + q.radius + 0.12 for q in lesions):
                continue
            jitter = float(rng.uniform(0.9, 1.1))
            lesions.append(_Sphere(p, r, polarity, min(strength * jitter, 0.7)))
            if len(lesions) == n_lesions:
                break
        if shrink > 0.08 / 0.1:
            shrink *= 0.97
        else:
            organ.axes[:2] *= 1.02
            grown += 1
    if grown:
        kidneys = [k for k in kidneys if _kidney_fits(k, organ, body, fat_inner)]

    vessels = _sample_vessels(rng, organ, lesions)
    nodules = _sample_nodules(rng, body, fat_inner, organ, spine, kidneys)

    # Ribs (projection only): gently curved bands across the image.
    ribs = []
    y0 = rng.uniform(-0.95, -0.75)
    gap = rng.uniform(0.2, 0.26)
    for i in range(int(rng.integers(4, 7))):
        y = y0 + i * gap
        for side in (-1.0, 1.0):
            inner = np.array([side * 0.12, y, 0.0])
            bend = np.array([side * 0.55, y - 0.12, 0.0])
            outer = np.array([side * 0.95, y + rng.uniform(0.05, 0.2), 0.0])
            ribs.append(
                _Tube(_bezier(inner, bend, outer), float(rng.uniform(0.022, 0.03)), 1.0, 1.0)
            )

    return _Anatomy(
        label,
        body,
        fat_inner,
        organ,
        kidneys,
        spine,
        vessels,
        nodules,
        lesions,
        ribs,
        int(rng.integers(0, 2**31 - 1)),
    )


def _sample_vessels(
    rng: np.random.Generator, organ: _Ellipsoid, lesions: list[_Sphere]
) -> list[_Tube]:
    """2-4 vessels in the organ, clear of the lesions (see the comment inside)."""
    # Vessels: thin and long, never round; either crossing the organ from its surface inwards or
    # arching along its periphery. A vessel must pass clear of the lesions (a lesion on a vessel
    # reads as a branch point), else it is redrawn; one that cannot be placed is left out.
    vessels = []
    for _ in range(int(rng.integers(2, 5))):
        for attempt in range(60):
            a0 = rng.uniform(0, 2 * math.pi)
            z = rng.uniform(-0.5, 0.5, 3)
            if rng.uniform() < 0.5 - attempt / 60:  # crossing
                a1 = a0 + math.pi + rng.uniform(-1.2, 1.2)
                r0, r1 = 0.95, rng.uniform(0.2, 0.6)
                am, rm = (a0 + a1) / 2 + rng.uniform(-0.5, 0.5), rng.uniform(0.0, 0.5)
            else:  # peripheral arc
                a1 = a0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.9, 1.8)
                r0, r1 = 0.95, rng.uniform(0.65, 0.85)
                am, rm = (a0 + a1) / 2, rng.uniform(0.8, 0.95)
            ctrl = [
                np.array([r * math.cos(a), r * math.sin(a), zz])
                for r, a, zz in ((r0, a0, z[0]), (rm, am, z[1]), (r1, a1, z[2]))
            ]
            pts = _bezier(*(_ellipsoid_point(organ, q) for q in ctrl))
            radius = float(rng.uniform(0.016, 0.026))
            if all(
                _polyline_distance(pts, les.center[None, :2], 10.0)[0] > les.radius + radius + 0.03
                for les in lesions
            ):
                sign = float(rng.choice([-1.0, 1.0]))
                vessels.append(_Tube(pts, radius, sign, float(rng.uniform(0.2, 0.5))))
                break

    return vessels


def _sample_nodules(
    rng: np.random.Generator,
    body: _Ellipsoid,
    fat_inner: float,
    organ: _Ellipsoid,
    spine: _Sphere,
    kidneys: list[_Ellipsoid],
) -> list[_Sphere]:
    """0-2 round distractors in the body outside the organ (see the comment inside)."""
    bx, by = body.axes[0], body.axes[1]
    # Round distractors outside the organ but inside the body (lymph nodes, bowel loops), clear of
    # the organ's outline, the kidneys and the spine.
    nodules: list[_Sphere] = []
    n_nodules = int(rng.integers(0, 3))
    tries = 0
    while len(nodules) < n_nodules and tries < 600:
        tries += 1
        r = float(rng.uniform(0.065, 0.1))
        p = body.center + np.array(
            [rng.uniform(-0.9, 0.9) * bx * fat_inner, rng.uniform(-0.9, 0.9) * by * fat_inner, 0.0]
        )
        if _ellipse_rho(body, p) > fat_inner - (r + 0.04) / min(bx, by):
            continue
        if _ellipse_rho(organ, p) < 1 + (r + 0.07) / min(organ.axes[:2]):
            continue
        if np.hypot(*(p[:2] - spine.center[:2])) < spine.radius + r + 0.05:
            continue
        if any(_ellipse_rho(k, p) < 1 + (r + 0.04) / min(k.axes[:2]) for k in kidneys):
            continue
        if any(np.hypot(*(p[:2] - q.center[:2])) < r + q.radius + 0.05 for q in nodules):
            continue
        p[2] = rng.uniform(-0.4, 0.4)
        nodules.append(_Sphere(p, r, float(rng.choice([-1.0, 1.0])), float(rng.uniform(0.25, 0.5))))
    return nodules


def _redraw_distractors(anat: _Anatomy, rng: np.random.Generator) -> _Anatomy:
    """The phantom with this acquisition's vessels and nodules (the rest is the patient's)."""
    return replace(
        anat,
        vessels=_sample_vessels(rng, anat.organ, anat.lesions),
        nodules=_sample_nodules(
            rng, anat.body, anat.fat_inner, anat.organ, anat.spine, anat.kidneys
        ),
    )


# --------------------------------------------------------------------------------------------------
# Geometry primitives (vectorised over N points with D = 2 or 3 coordinates)
# --------------------------------------------------------------------------------------------------


def _ellipsoid_rho(e: _Ellipsoid, pts: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, ...]:
    """Normalised radius (1 on the surface) and an approximate signed distance to the surface."""
    d = pts - e.center[: pts.shape[1]]
    c, s = math.cos(e.angle), math.sin(e.angle)
    loc = [c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]]
    if pts.shape[1] == 3:
        loc.append(d[:, 2])
    axes = e.axes[: pts.shape[1]] * scale
    rho2 = sum((x / a) ** 2 for x, a in zip(loc, axes, strict=True))
    rho = np.sqrt(rho2)
    grad = np.sqrt(sum(x**2 / a**4 for x, a in zip(loc, axes, strict=True))) + 1e-9
    return rho, (rho - 1.0) * rho / grad


def _soft(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume occupancy: 1 inside, 0 outside, a linear ramp ``width`` wide at the edge."""
    return np.clip(0.5 - signed_distance / width, 0.0, 1.0)


def _near(pts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Indices of the points inside the axis-aligned box ``[lo, hi]``."""
    return np.flatnonzero(np.all((pts >= lo) & (pts <= hi), axis=1))


def _polyline_distance(points: np.ndarray, pts: np.ndarray, reach: float) -> np.ndarray:
    """Distance from each of ``pts`` (N, D) to a polyline (K, >=D); ``inf`` beyond ``reach``."""
    dim = pts.shape[1]
    out = np.full(pts.shape[0], np.inf)
    idx = _near(pts, points[:, :dim].min(0) - reach, points[:, :dim].max(0) + reach)
    if idx.size == 0:
        return out
    a = points[:-1, :dim]
    ab = points[1:, :dim] - a
    ap = pts[idx, None, :] - a[None, :, :]  # (n, K-1, D)
    t = np.clip(np.einsum("nkd,kd->nk", ap, ab) / np.maximum((ab * ab).sum(1), 1e-12), 0.0, 1.0)
    diff = ap - t[:, :, None] * ab[None, :, :]
    out[idx] = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff).min(axis=1))
    return out


def _sphere_distance(s: _Sphere, pts: np.ndarray, reach: float) -> np.ndarray:
    """Distance from each of ``pts`` to the sphere's centre; ``inf`` beyond ``reach``."""
    c = s.center[: pts.shape[1]]
    out = np.full(pts.shape[0], np.inf)
    idx = _near(pts, c - reach, c + reach)
    d = pts[idx] - c
    out[idx] = np.sqrt(np.einsum("nd,nd->n", d, d))
    return out


def _texture(anat: _Anatomy, pts: np.ndarray, salt: int = 0) -> np.ndarray:
    """Smooth zero-mean unit-variance tissue texture, fixed in anatomical coordinates."""
    dim = pts.shape[1]
    n = 40 if dim == 2 else 28
    lo, hi = -1.3, 1.3
    rng = np.random.default_rng([anat.texture_seed, dim, salt])
    field = ndimage.gaussian_filter(rng.standard_normal((n,) * dim), sigma=1.6, mode="wrap")
    field = field + 0.5 * ndimage.gaussian_filter(
        rng.standard_normal((n,) * dim), sigma=0.8, mode="wrap"
    )
    field = (field - field.mean()) / (field.std() + 1e-9)
    idx = (pts.T - lo) / (hi - lo) * (n - 1)
    return ndimage.map_coordinates(field, idx, order=1, mode="nearest")


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _paint(img: np.ndarray, mask: np.ndarray, value: float | np.ndarray) -> None:
    img *= 1.0 - mask
    img += mask * value


def _render_tomographic(
    anat: _Anatomy, pts: np.ndarray, px: float, t: dict[str, Any]
) -> np.ndarray:
    """Cross-sectional image of the phantom (MR relative intensity or CT HU) at ``pts``."""
    img = np.full(pts.shape[0], t["air"], dtype=np.float64)
    _, sd_body = _ellipsoid_rho(anat.body, pts)
    body = _soft(sd_body, px)
    _paint(img, body, t["fat"])
    _, sd_inner = _ellipsoid_rho(anat.body, pts, anat.fat_inner)
    inner = _soft(sd_inner, px)
    _paint(img, inner, t["soft"])
    for k in anat.kidneys:
        _paint(img, _soft(_ellipsoid_rho(k, pts)[1], px) * inner, t["kidney"])
    for nod in anat.nodules:
        edge = max(px, 0.3 * nod.radius)
        m = _soft(_sphere_distance(nod, pts, nod.radius + 2 * edge) - nod.radius, edge) * inner
        _paint(img, m, t["soft"] + nod.sign * nod.contrast * t["delta"])
    organ = _soft(_ellipsoid_rho(anat.organ, pts)[1], px) * inner
    _paint(img, organ, t["organ"])
    for v in anat.vessels:
        m = _soft(_polyline_distance(v.points, pts, v.radius + 2 * px) - v.radius, px) * organ
        _paint(img, m, t["organ"] + v.sign * v.contrast * t["delta"])
    for les in anat.lesions:
        edge = max(px, 0.3 * les.radius)
        m = _soft(_sphere_distance(les, pts, les.radius + 2 * edge) - les.radius, edge) * organ
        _paint(img, m, t["organ"] + les.sign * les.contrast * t["delta"] * t["lesion_gain"])
    img += t["texture"] * _texture(anat, pts, t.get("texture_salt", 0)) * inner
    # The spine is a cylinder along z: only the in-plane distance counts.
    spine_d = _sphere_distance(anat.spine, pts[:, :2], anat.spine.radius + 2 * px)
    _paint(img, _soft(spine_d - anat.spine.radius, px) * inner, t["cortex"])
    _paint(img, _soft(spine_d - 0.72 * anat.spine.radius, px) * inner, t["marrow"])
    return img


def _chord(dist: np.ndarray, radius: float) -> np.ndarray:
    """Path length through a sphere or tube of ``radius`` at in-plane distance ``dist``."""
    return 2.0 * np.sqrt(np.clip(radius**2 - dist**2, 0.0, None))


def _ellipsoid_chord(
    e: _Ellipsoid, pts: np.ndarray, depth: float, scale: float = 1.0
) -> np.ndarray:
    rho, _ = _ellipsoid_rho(e, pts, scale)
    return 2.0 * depth * scale * np.sqrt(np.clip(1.0 - rho**2, 0.0, None))


def _render_projection(anat: _Anatomy, pts: np.ndarray, t: dict[str, Any]) -> np.ndarray:
    """Line integral of attenuation through the phantom, viewed from the front (2D analogue)."""
    depth = t["depth"]
    # The trunk seen from the front: as wide as the body, taller than the field of view.
    trunk = _Ellipsoid(anat.body.center, np.array([anat.body.axes[0], 1.6, 1.0]), anat.body.angle)
    total = _ellipsoid_chord(trunk, pts, depth) * t["mu_fat"]
    inner = _ellipsoid_chord(trunk, pts, depth, anat.fat_inner)
    total += inner * (t["mu_soft"] - t["mu_fat"])
    in_trunk = np.clip(inner / (0.1 * depth), 0.0, 1.0)
    for k in anat.kidneys:
        total += _ellipsoid_chord(k, pts, 0.15) * t["mu_kidney"]
    for nod in anat.nodules:
        total += (
            _chord(_sphere_distance(nod, pts, nod.radius), nod.radius)
            * nod.sign
            * nod.contrast
            * t["mu_delta"]
        )
    organ_depth = 0.5 * depth
    total += _ellipsoid_chord(anat.organ, pts, organ_depth) * t["mu_organ"]
    for v in anat.vessels:
        total += (
            _chord(_polyline_distance(v.points, pts, v.radius), v.radius)
            * v.sign
            * v.contrast
            * t["mu_vessel"]
        )
    for les in anat.lesions:
        total += (
            _chord(_sphere_distance(les, pts, les.radius), les.radius)
            * les.sign
            * les.contrast
            * t["mu_delta"]
            * t["lesion_gain"]
        )
    total += (
        t["texture"]
        * _texture(anat, pts, t.get("texture_salt", 0))
        * _ellipsoid_chord(anat.organ, pts, organ_depth)
    )
    # Spine: a vertical band; ribs: curved bands.
    spine = _Ellipsoid(
        np.array([anat.spine.center[0], 0.0, 0.0]),
        np.array([anat.spine.radius * 0.9, 3.0, 1.0]),
        0.0,
    )
    bone = _ellipsoid_chord(spine, pts, 0.12)
    for rib in anat.ribs:
        bone += _chord(_polyline_distance(rib.points, pts, rib.radius), rib.radius)
    return total + bone * in_trunk * t["mu_bone"]


def _pose_points(grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map scanner coordinates to anatomical ones through a random small rigid pose and scale."""
    dim = grid.shape[1]
    angle = float(np.clip(rng.normal(0, math.radians(6)), -math.radians(12), math.radians(12)))
    shift = rng.uniform(-0.05, 0.05, dim)
    if dim == 3:
        shift[2] = rng.uniform(-0.03, 0.03)
    scale = float(rng.uniform(0.95, 1.05))
    c, s = math.cos(angle), math.sin(angle)
    d = (grid - shift) / scale
    out = d.copy()
    out[:, 0] = c * d[:, 0] + s * d[:, 1]
    out[:, 1] = -s * d[:, 0] + c * d[:, 1]
    return out


def _bias_field(grid: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative field: exp of a random quadratic polynomial in scanner coordinates."""
    dim = grid.shape[1]
    terms = [grid[:, i] for i in range(dim)]
    terms += [grid[:, i] * grid[:, j] for i in range(dim) for j in range(i, dim)]
    coef = rng.uniform(-strength, strength, len(terms))
    return np.exp(sum(c * x for c, x in zip(coef, terms, strict=True)))


def _acquire(
    anat: _Anatomy, modality: str, grid: np.ndarray, px: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """One acquisition: pose, contrast, drift and noise. Returns stored pixel values and info."""
    pts = _pose_points(grid, rng)
    # Tissue texture is speckle-like and differs between acquisitions (slice position, partial
    # volume, reconstruction); only the anatomy and the findings repeat across a patient's studies.
    salt = int(rng.integers(1, 2**31 - 1))
    if modality == "mr":
        t1 = bool(rng.integers(0, 2))
        base = (
            {"fat": 0.9, "soft": 0.35, "organ": 0.5, "kidney": 0.4, "marrow": 0.6}
            if t1
            else {"fat": 0.7, "soft": 0.25, "organ": 0.4, "kidney": 0.6, "marrow": 0.45}
        )
        t = {k: v * rng.uniform(0.88, 1.12) for k, v in base.items()}
        t.update(
            air=0.0,
            cortex=0.04,
            delta=t["organ"],
            lesion_gain=rng.uniform(0.9, 1.1),
            texture=t["organ"] * rng.uniform(0.03, 0.06),
            texture_salt=salt,
        )
        signal = _render_tomographic(anat, pts, px, t)
        signal *= _bias_field(grid, rng, 0.2)
        gain = rng.uniform(1200.0, 3200.0)
        sigma = rng.uniform(0.02, 0.045) * t["organ"]
        real = signal + sigma * rng.standard_normal(signal.shape)
        imag = sigma * rng.standard_normal(signal.shape)
        mag = np.hypot(real, imag) * gain
        stored = np.clip(np.rint(mag), 0, 4095).astype("<u2")
        return stored, {"weighting": "T1" if t1 else "T2"}
    if modality == "ct":
        organ = rng.uniform(30.0, 60.0)
        t = {
            "air": -1000.0,
            "fat": rng.uniform(-120.0, -80.0),
            "soft": rng.uniform(35.0, 55.0),
            "organ": organ,
            "kidney": rng.uniform(25.0, 45.0),
            "marrow": rng.uniform(150.0, 300.0),
            "cortex": rng.uniform(600.0, 800.0),
            "delta": 110.0,
            "lesion_gain": rng.uniform(0.9, 1.1),
            "texture": rng.uniform(2.0, 5.0),
            "texture_salt": salt,
        }
        # delta * contrast: lesions 20-60 HU from the organ, vessels 22-55 HU.
        hu = _render_tomographic(anat, pts, px, t)
        hu += rng.uniform(-8.0, 8.0) + rng.uniform(-6.0, 6.0) * grid[:, 1]
        hu += rng.uniform(6.0, 15.0) * rng.standard_normal(hu.shape)
        stored = np.rint(np.clip(hu, -1024.0, 3071.0) + 1024.0).astype("<i2")
        return stored, {}
    # xr
    t = {
        "depth": rng.uniform(0.55, 0.7),
        "mu_fat": 0.9,
        "mu_soft": 1.0,
        "mu_kidney": rng.uniform(0.05, 0.15),
        "mu_organ": rng.uniform(-0.35, 0.1),
        "mu_delta": rng.uniform(2.2, 3.0),
        "mu_vessel": rng.uniform(3.5, 4.5),
        "lesion_gain": rng.uniform(0.9, 1.1),
        "mu_bone": rng.uniform(2.2, 3.0),
        "texture": rng.uniform(0.02, 0.04),
        "texture_salt": salt,
    }
    line = _render_projection(anat, pts, t)
    line /= 1.6
    line *= 1.0 + rng.uniform(-0.08, 0.08) * grid[:, 1] + rng.uniform(-0.04, 0.04) * grid[:, 0]
    gamma = rng.uniform(0.85, 1.15)
    img = np.clip(line, 0.0, None) ** gamma * rng.uniform(2600.0, 3400.0)
    img += rng.uniform(25.0, 60.0) * rng.standard_normal(img.shape) + 100.0
    stored = np.clip(np.rint(img), 0, 4095).astype("<u2")
    return stored, {}


# --------------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------------

_SOP_CLASS = {
    "mr": MRImageStorage,
    "ct": CTImageStorage,
    "xr": DigitalXRayImageStorageForPresentation,
}
_MODALITY_CODE = {"mr": "MR", "ct": "CT", "xr": "DX"}


def _uid(*parts: object) -> str:
    return str(
        generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=["|".join(str(p) for p in parts)])
    )


def _unique_number(index: int, salt: int, modulus: int, mult: int) -> int:
    """A number in ``[0, modulus)`` distinct for every ``index < modulus`` (``mult`` coprime)."""
    return (index * mult + salt) % modulus


@dataclass
class _Phi:
    name: str
    sex: str
    patient_id: str
    birth: date
    address: str
    study_dates: list[date]
    study_times: list[str]
    accessions: list[str]
    institutions: list[str]
    referrers: list[str]
    operators: list[str]


def _sample_phi(rng: np.random.Generator, index: int, seed: int, n_studies: int) -> _Phi:
    female = bool(rng.integers(0, 2))
    first = str(rng.choice(_FEMALE if female else _MALE))
    last = str(rng.choice(_SURNAMES))
    salt = int(np.random.default_rng([seed, 7]).integers(0, 9_000_000))
    mrn = 1_000_000 + _unique_number(index, salt, 9_000_000, 7_654_321)
    first_study = date(2012, 1, 1) + timedelta(days=int(rng.integers(0, 11 * 365)))
    age_days = int(rng.integers(20 * 365, 86 * 365))
    birth = first_study - timedelta(days=age_days)
    dates, times, accs, insts, refs, ops = [], [], [], [], [], []
    current = first_study
    for j in range(n_studies):
        if j:
            current = current + timedelta(days=int(rng.integers(20, 400)))
        dates.append(current)
        times.append(
            f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}"
            f"{int(rng.integers(0, 60)):02d}"
        )
        acc = _unique_number(index * 8 + j, salt, 100_000_000, 48_271)
        accs.append(f"A{acc:08d}")
        insts.append(str(rng.choice(_INSTITUTIONS)))
        refs.append(f"{rng.choice(_SURNAMES)}^{rng.choice(_FEMALE + _MALE)}^^DR")
        ops.append(f"{rng.choice(_SURNAMES)}^{rng.choice(_FEMALE + _MALE)}")
    address = f"{int(rng.integers(1, 999))} {rng.choice(_STREETS)}, {rng.choice(_CITIES)}"
    return _Phi(
        f"{last}^{first}",
        "F" if female else "M",
        f"MRN{mrn:07d}",
        birth,
        address,
        dates,
        times,
        accs,
        insts,
        refs,
        ops,
    )


def _age(birth: date, on: date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


def _ds(value: float) -> str:
    return f"{value:.6g}"


def _write_instance(
    path: Path,
    pixels: np.ndarray,
    modality: str,
    uids: dict[str, str],
    phi: _Phi,
    study: int,
    series: int,
    instance: int,
    geometry: dict[str, Any],
    info: dict[str, Any],
) -> None:
    sop_class = _SOP_CLASS[modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uids["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION

    ds = Dataset()
    ds.file_meta = meta
    day = phi.study_dates[study].strftime("%Y%m%d")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality != "xr" else ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uids["sop"]
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = day
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = phi.study_times[study]
    ds.AccessionNumber = phi.accessions[study]
    ds.Modality = _MODALITY_CODE[modality]
    ds.Manufacturer = "MEDCL PHANTOM"
    ds.InstitutionName = phi.institutions[study]
    ds.ReferringPhysicianName = phi.referrers[study]
    ds.StationName = f"SYN{study + 1:02d}"
    ds.StudyDescription = "SYNTHETIC PHANTOM"
    ds.SeriesDescription = f"PHANTOM {ds.Modality} {info.get('weighting', '')}".strip()
    ds.OperatorsName = phi.operators[study]
    ds.ManufacturerModelName = f"medcl-synth v{GENERATOR_VERSION}"
    ds.PatientName = phi.name
    ds.PatientID = phi.patient_id
    ds.PatientBirthDate = phi.birth.strftime("%Y%m%d")
    ds.PatientSex = phi.sex
    ds.PatientAge = _age(phi.birth, phi.study_dates[study])
    ds.PatientAddress = phi.address
    ds.BodyPartExamined = "ABDOMEN"
    if modality == "xr":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ViewPosition = "AP"
        ds.PatientOrientation = ["L", "F"]
        ds.ImagerPixelSpacing = [_ds(geometry["spacing"])] * 2
    else:
        ds.SliceThickness = _ds(geometry["thickness"])
        ds.PatientPosition = "HFS"
    if modality == "mr":
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.MagneticFieldStrength = "1.5"
        ds.RepetitionTime = "500" if info.get("weighting") == "T1" else "4000"
        ds.EchoTime = "15" if info.get("weighting") == "T1" else "100"
    if modality == "ct":
        ds.KVP = "120"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.StudyID = f"{study + 1}"
    ds.SeriesNumber = series + 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance + 1
    ds.ImagePositionPatient = [_ds(v) for v in geometry["position"]]
    ds.ImageOrientationPatient = [_ds(v) for v in geometry["orientation"]]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.PositionReferenceIndicator = ""
    if modality != "xr":
        ds.SliceLocation = _ds(geometry["position"][2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [_ds(geometry["spacing"])] * 2
    ds.BitsAllocated = 16
    if modality == "ct":
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
    else:
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        lo, hi = np.percentile(pixels, [1.0, 99.5])
        ds.WindowCenter = _ds(round((lo + hi) / 2))
        ds.WindowWidth = _ds(max(round(hi - lo), 1))
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)


# --------------------------------------------------------------------------------------------------
# Cohort
# --------------------------------------------------------------------------------------------------


def _check_args(
    out_dir: Path, patients: int, seed: int, modality: str, size: int, dims: int
) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(patients) or patients < 1:
        raise MedclError(f"synth: patients must be an integer >= 1, got {patients!r}")
    if not is_int(seed) or seed < 0:
        raise MedclError(f"synth: seed must be an integer >= 0, got {seed!r}")
    if modality not in MODALITIES:
        raise MedclError(
            f"synth: unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}"
        )
    if not is_int(size) or size < _MIN_SIZE:
        raise MedclError(f"synth: size must be an integer >= {_MIN_SIZE}, got {size!r}")
    if size > 1024:
        raise MedclError(f"synth: size must be <= 1024, got {size!r}")
    if dims not in (2, 3) or not is_int(dims):
        raise MedclError(f"synth: dims must be 2 or 3, got {dims!r}")
    if dims == 3 and modality == "xr":
        raise MedclError("synth: xr is a projection modality; use dims 2 (volumes need mr or ct)")
    if out_dir.exists() and not out_dir.is_dir():
        raise MedclError(f"synth: {out_dir} exists and is not a folder")


def _prepare_out_dir(out_dir: Path) -> None:
    """Refuse a non-empty folder that is not a phantom cohort; clear a previous phantom cohort."""
    if not out_dir.exists():
        out_dir.mkdir(parents=True)
        return
    entries = list(out_dir.iterdir())
    if not entries:
        return
    marker = out_dir / COHORT_FILE
    try:
        previous = json.loads(marker.read_text(encoding="utf-8"))
        ours = isinstance(previous, dict) and previous.get("generator") == GENERATOR
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise MedclError(
            f"synth: {out_dir} is not empty and holds no {COHORT_FILE} from "
            "'medcl synth'; choose an empty or new folder"
        )
    foreign = [
        e.name
        for e in entries
        if e.name not in (COHORT_FILE, LABELS_FILE)
        and not (e.is_dir() and _PATIENT_DIR.match(e.name))
    ]
    if foreign:
        raise MedclError(
            f"synth: {out_dir} holds a phantom cohort and other files "
            f"({', '.join(sorted(foreign)[:3])}); refusing to mix them"
        )
    for e in entries:
        if e.is_dir():
            shutil.rmtree(e)
        else:
            e.unlink()


def _grid(size: int, n_slices: int | None) -> np.ndarray:
    """Pixel-centre coordinates in ``[-1, 1]``; rows run along y, columns along x."""
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    if n_slices is None:
        y, x = np.meshgrid(c, c, indexing="ij")
        return np.stack([x.ravel(), y.ravel()], axis=1)
    cz = (np.arange(n_slices) + 0.5) / n_slices * 2.0 - 1.0
    z, y, x = np.meshgrid(cz, c, c, indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


def _patient_rngs(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for a patient's anatomy, metadata (PHI, counts) and acquisitions."""
    children = np.random.SeedSequence([seed, index]).spawn(3)
    return tuple(np.random.default_rng(c) for c in children)


def _patient_anatomy(seed: int, index: int) -> _Anatomy:
    """The phantom of patient ``index`` (0-based) in the cohort of ``seed``."""
    return _sample_anatomy(_patient_rngs(seed, index)[0])


def _generate_patient(
    out_dir: Path, index: int, *, width: int, seed: int, modality: str, size: int, dims: int
) -> tuple[int, int, list[tuple[str, str]]]:
    """Write one patient's files; return (label index, images, [(relative path, label)])."""
    anat_rng, meta_rng, acq_rng = _patient_rngs(seed, index)
    anat = _sample_anatomy(anat_rng)
    n_images = int(meta_rng.integers(3, 6))
    label = CLASSES[anat.label]
    fov = float(meta_rng.uniform(320.0, 400.0))
    spacing = fov / size
    px = 2.0 / size

    if dims == 2:
        layout = [(j, 0) for j in range(n_images)]  # (study, series)
        n_slices = None
    else:
        layout = [(0, 0), (0, 1)]
        n_slices = max(8, size // 2)
    phi = _sample_phi(meta_rng, index, seed, 1 + max(s for s, _ in layout))
    table = [float(meta_rng.uniform(-200.0, 200.0)) for _ in layout]

    pid = f"P{index + 1:0{width}d}"
    key = (GENERATOR_VERSION, seed, modality, size, dims, index)
    grid = _grid(size, n_slices)
    rows: list[tuple[str, str]] = []
    for k, (study, series) in enumerate(layout):
        stored, info = _acquire(_redraw_distractors(anat, acq_rng), modality, grid, px, acq_rng)
        folder = out_dir / pid / f"ST{study + 1:02d}" / f"SE{series + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        uids = {
            "study": _uid(*key, "study", study),
            "series": _uid(*key, "series", study, series),
            "frame": _uid(*key, "frame", study, series),
        }
        x0 = -fov / 2 + spacing / 2
        if modality == "xr":
            orientation = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
            positions = [(x0, 0.0, fov / 2 - spacing / 2)]
            thickness = spacing
        else:
            orientation = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
            if n_slices is None:
                thickness = float(acq_rng.uniform(3.0, 6.0))
                positions = [(x0, x0, table[k])]
            else:
                thickness = fov / n_slices  # the volume spans the in-plane field of view in z
                positions = [(x0, x0, table[k] + s * thickness) for s in range(n_slices)]
        images = stored.reshape((-1, size, size))
        for m, pos in enumerate(positions):
            uids["sop"] = _uid(*key, "sop", study, series, m)
            name = f"IM{m + 1:04d}.dcm"
            geometry = {
                "spacing": spacing,
                "thickness": thickness,
                "position": pos,
                "orientation": orientation,
            }
            _write_instance(
                folder / name, images[m], modality, uids, phi, study, series, m, geometry, info
            )
            rows.append((f"{pid}/ST{study + 1:02d}/SE{series + 1:02d}/{name}", label))
    return anat.label, len(layout), rows


def generate_cohort(
    out_dir: str | os.PathLike[str],
    patients: int = 300,
    seed: int = 0,
    modality: str = "mr",
    size: int = 64,
    dims: int = 2,
    progress: bool = True,
    workers: int = 1,
) -> SynthSummary:
    """Write a labelled phantom cohort of DICOM studies (see the module docstring for the model).

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

    Returns:
        A :class:`SynthSummary`; the same information (no PHI) is written to ``cohort.json``.
        ``labels.csv`` holds one ``path,label`` row per DICOM file, paths relative to
        ``out_dir`` with forward slashes.

    Raises:
        MedclError: An argument is out of range, or ``out_dir`` is unusable.
    """
    out = Path(out_dir)
    _check_args(out, patients, seed, modality, size, dims)
    patients, seed, size, dims = int(patients), int(seed), int(size), int(dims)
    _prepare_out_dir(out)

    from tqdm.auto import tqdm

    width = max(4, len(str(patients)))
    counts = dict.fromkeys(CLASSES, 0)
    image_counts = dict.fromkeys(CLASSES, 0)
    n_images = 0
    rows: list[tuple[str, str]] = []
    n_proc = (os.cpu_count() or 1) if workers <= 0 else int(workers)
    n_proc = max(1, min(n_proc, patients))
    job = partial(
        _generate_patient, out, width=width, seed=seed, modality=modality, size=size, dims=dims
    )
    bar = tqdm(total=patients, desc="synth", unit="patient", disable=not progress)
    if n_proc == 1:
        results: Any = map(job, range(patients))
        pool = None
    else:
        pool = ProcessPoolExecutor(n_proc, mp_context=get_context("spawn"))
        results = pool.map(job, range(patients), chunksize=max(1, patients // (8 * n_proc)))
    for label, images, patient_rows in results:  # in patient order whatever the worker count
        bar.update(1)
        counts[CLASSES[label]] += 1
        image_counts[CLASSES[label]] += images
        n_images += images
        rows.extend(patient_rows)
    bar.close()
    if pool is not None:
        pool.shutdown()

    with open(out / LABELS_FILE, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(rows)

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
    )
    record = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "patients": patients,
        "images": n_images,
        "files": len(rows),
        "class_counts": counts,
        "image_class_counts": image_counts,
        "classes": list(CLASSES),
        "modality": modality,
        "dims": dims,
        "size": size,
        "seed": seed,
        "labels": LABELS_FILE,
        "layout": "P<patient>/ST<study>/SE<series>/IM<instance>.dcm",
    }
    (out / COHORT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return summary
