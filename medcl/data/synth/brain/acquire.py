"""One axial T1-weighted MR image of a patient's brain, with its own acquisition.

What changes between a patient's studies (the anatomy and the grade do not):

* **Slice**: an axial slice through the bodies of the lateral ventricles, at MNI z
  :data:`SLICE_Z_MM` moved by up to 6 mm, through a head tilted by a few degrees (pitch
  about 4, roll about 2), with a slice thickness of 3 to 6 mm (partial volume: three samples
  through the thickness).
* **Pose and field of view**: an in-plane rotation (about 7 degrees, at most 15), a shift of up to
  10 mm, a field of view of 210 to 240 mm.
* **Contrast**: T1-like weighting whose tissue intensities vary between sequences and scanners:
  white matter 0.70-0.85, grey matter 0.60-0.75 of it, CSF 0.12-0.30 of it, scalp fat 0.75-1.0,
  skull 0.02-0.08.
* **Bias field** (a smooth multiplicative field, :func:`~medcl.data.synth.acquire.bias_field`)
  and **Rician noise** (standard deviation 2-5 % of white matter;
  :func:`~medcl.data.synth.acquire.rician_magnitude`), stored as 12-bit magnitudes.

Every pixel is the mean of 2 x 2 in-plane by 3 through-plane samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medcl.data.synth.acquire import bias_field, rician_magnitude
from medcl.data.synth.brain.anatomy import BRAIN_CENTRE_MM, BrainAnatomy, tissue_fractions
from medcl.data.synth.brain.template import TemplateMaps

SUPERSAMPLE = 2
"""In-plane samples per pixel along each axis."""

SLICE_Z_MM = 18.0
"""MNI z (mm) of the reference axial slice: through the bodies of the lateral ventricles."""

SLICE_JITTER_MM = 6.0
"""The slice's height varies uniformly by up to this much around :data:`SLICE_Z_MM`."""

THROUGH_PLANE = (-1.0 / 3.0, 0.0, 1.0 / 3.0)
"""Sample offsets through the slice, in units of its thickness."""

HEADER_TEXT = {
    "weighting": "T1",
    "manufacturer": "MEDCL SYNTH",
    "study_description": "SYNTHETIC BRAIN MR",
    "series_prefix": "BRAIN AXIAL",
    "body_part": "HEAD",
}
"""The header's descriptive text (:func:`medcl.data.synth.dicom.write_instance`'s ``info``)."""


def acquire_slice(
    maps: TemplateMaps, anat: BrainAnatomy, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """One acquisition of ``anat``: slice, pose, contrast, bias field and noise.

    Args:
        maps: The template maps (:func:`~.template.load_template`).
        anat: The patient's brain.
        size: Rows and columns of the image.
        rng: The acquisition's generator.

    Returns:
        The stored pixels ``(size, size)`` (uint16, rows from anterior to posterior, columns from
        the patient's right to left, as a radiologist reads an axial slice), and the acquisition:
        ``fov_mm``, ``thickness_mm``, ``slice_z_mm`` and the header text of :data:`HEADER_TEXT`.
    """
    fov = float(rng.uniform(210.0, 240.0))
    thickness = float(rng.uniform(3.0, 6.0))
    z = SLICE_Z_MM + float(rng.uniform(-SLICE_JITTER_MM, SLICE_JITTER_MM))
    rotation = _rotation(
        _clipped_normal(rng, 7.0, 15.0),
        _clipped_normal(rng, 4.0, 8.0),
        _clipped_normal(rng, 2.0, 4.0),
    )
    shift = rng.uniform(-10.0, 10.0, 2)
    wm = float(rng.uniform(0.70, 0.85))
    contrast = {
        "wm": wm,
        "gm": wm * float(rng.uniform(0.60, 0.75)),
        "csf": wm * float(rng.uniform(0.12, 0.30)),
        "scalp": float(rng.uniform(0.75, 1.0)),
        "skull": float(rng.uniform(0.02, 0.08)),
    }

    n = size * SUPERSAMPLE
    u = ((np.arange(n) + 0.5) / n - 0.5) * fov  # scanner mm, LPS: columns +x, rows +y
    cols, rows = np.meshgrid(u, u)
    scanner = np.stack(
        [
            np.broadcast_to(cols, (len(THROUGH_PLANE), n, n)),
            np.broadcast_to(rows, (len(THROUGH_PLANE), n, n)),
            np.broadcast_to(
                (np.asarray(THROUGH_PLANE) * thickness)[:, None, None], (len(THROUGH_PLANE), n, n)
            ),
        ],
        axis=-1,
    ).reshape(-1, 3)
    scanner[:, :2] += shift
    lps = scanner @ rotation.T
    # LPS -> RAS, centred on the brain at the slice's height
    points = np.stack([-lps[:, 0], -lps[:, 1], lps[:, 2]], axis=1)
    points += np.array([BRAIN_CENTRE_MM[0], BRAIN_CENTRE_MM[1], z])
    fractions = tissue_fractions(maps, anat, points)
    signal = sum(contrast[k] * fractions[k] for k in contrast)
    signal = signal.reshape(len(THROUGH_PLANE), size, SUPERSAMPLE, size, SUPERSAMPLE).mean(
        axis=(0, 2, 4)
    )

    centres = ((np.arange(size) + 0.5) / size - 0.5) * 2.0  # [-1, 1] across the field of view
    gx, gy = np.meshgrid(centres, centres)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    signal = signal.ravel() * bias_field(grid, rng, 0.25)
    gain = float(rng.uniform(1200.0, 3200.0))
    sigma = float(rng.uniform(0.02, 0.05)) * wm
    stored = rician_magnitude(signal, sigma, gain, rng).reshape(size, size)
    info = {**HEADER_TEXT, "fov_mm": fov, "thickness_mm": thickness, "slice_z_mm": z}
    return stored, info


def _clipped_normal(rng: np.random.Generator, sd_deg: float, max_deg: float) -> float:
    """An angle (radians): normal with ``sd_deg`` degrees, clipped to ``max_deg``."""
    return math.radians(float(np.clip(rng.normal(0.0, sd_deg), -max_deg, max_deg)))


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation matrix: about z (in-plane), then x (nodding), then y (tilting sideways)."""
    cz, sz = math.cos(yaw), math.sin(yaw)
    cx, sx = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(roll), math.sin(roll)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    return ry @ rx @ rz
