"""A patient's brain: the template under a smooth random deformation, with a grade of atrophy.

Coordinates are millimetres in the patient's own anatomical frame (RAS, aligned with MNI space
up to the patient's variability). A point ``p`` of the patient maps to the template point

    y = c + (p - c) / s + u(p),

with ``c`` the centre of the brain, ``s`` the patient's head size along x, y and z (normal
variability of brain size and shape, each 0.92 to 1.08) and ``u`` a smooth random displacement:
a cubic B-spline through Gaussian control displacements (standard deviation
:data:`WARP_SD_MM`) on a 25 mm grid, the usual free-form model of anatomical variability
(Rueckert et al. 1999).

Atrophy (the label) is a loss of brain tissue at a fixed intracranial volume: the tissue's
boundary retreats by a depth ``d(y)`` (an erosion of the template's tissue by a ball of radius
``d``, via its signed distance map) and CSF fills the space. The depth has a global cortical part
(sulci widen, the cortex thins, the CSF around the brain grows) and a periventricular part that
falls off with the distance ``r`` from the lateral ventricles (ventricles enlarge, ex vacuo):

    d(y) = d_cortex + d_ventricle * exp(-r(y)^2 / (2 * 8 mm^2)).

Both depths follow a latent severity ``a = grade + 0.25 z`` (``z`` standard normal) plus their own
normal variation: ``d_cortex = 0.8 a + 0.2 z_c`` and ``d_ventricle = 2.0 a + 0.5 z_v`` (mm), so
neighbouring grades overlap, and ventricle size and cortical width vary between healthy people
too. A negative depth dilates the tissue (a small-ventricled, full-sulci brain).

The tissue fractions at a point: ``tissue = sigmoid((sdf(y) - d(y)) / eps) * inside``, with
``inside = sigmoid(head_sdf(y) / eps)`` (eps = 0.5 mm); white matter ``min(P(WM), tissue)``,
grey matter the rest of the tissue, CSF ``inside - tissue``. Outside the intracranial space lie
the skull (``0 < r < skull``, ``r = -head_sdf``) and the scalp (``skull < r < skull + scalp``),
their thicknesses drawn per patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from medcl.data.synth.brain.template import TemplateMaps

CLASSES: tuple[str, ...] = ("no_atrophy", "mild_atrophy", "moderate_atrophy")
"""The grades of simulated global atrophy (the labels), in label-index order."""

CLASS_PRIORS: tuple[float, ...] = (0.40, 0.35, 0.25)
"""How often each grade of :data:`CLASSES` is drawn for a patient."""

BRAIN_CENTRE_MM = np.array([0.0, -18.0, 18.0])
"""The centre of head-size scaling (MNI mm): the middle of the brain at the reference slice."""

WARP_SPACING_MM = 25.0
"""Spacing of the deformation's control points."""

WARP_SD_MM = 2.5
"""Standard deviation of every control displacement component."""

_WARP_BOX = (np.array([-100.0, -135.0, -40.0]), np.array([100.0, 100.0, 80.0]))
SEVERITY_SD = 0.25
"""Standard deviation of the latent severity around the grade (sets how much grades overlap)."""

CORTEX_MM, CORTEX_SD_MM = 0.8, 0.2
"""Cortical erosion depth per unit of severity, and its normal variation (mm)."""

VENTRICLE_MM, VENTRICLE_SD_MM = 2.0, 0.5
"""Periventricular erosion depth per unit of severity, and its normal variation (mm)."""

VENTRICLE_FALLOFF_MM = 8.0
"""Length over which the periventricular erosion falls off with the distance to the ventricles."""

EDGE_MM = 0.5
"""Width of the soft tissue edges (partial volume within a voxel)."""


@dataclass(frozen=True)
class BrainAnatomy:
    """One patient's brain, fixed across all of the patient's studies.

    Attributes:
        grade: The label, an index into :data:`CLASSES`.
        z_severity: Standard normal draw of the latent severity around the grade.
        z_cortex: Standard normal draw of the cortical depth's own variation.
        z_ventricle: Standard normal draw of the periventricular depth's own variation.
        head_scale: Size of the brain along x, y, z relative to the template.
        warp: Control displacements ``(3, nx, ny, nz)`` (mm) of the smooth deformation.
        skull_mm: Thickness of the skull.
        scalp_mm: Thickness of the scalp.
    """

    grade: int
    z_severity: float
    z_cortex: float
    z_ventricle: float
    head_scale: tuple[float, float, float]
    warp: np.ndarray
    skull_mm: float
    scalp_mm: float

    @property
    def severity(self) -> float:
        """The latent atrophy severity ``grade + SEVERITY_SD * z``."""
        return self.grade + SEVERITY_SD * self.z_severity

    @property
    def cortical_depth_mm(self) -> float:
        """How far the tissue boundary retreats everywhere (mm; negative: it advances)."""
        return CORTEX_MM * self.severity + CORTEX_SD_MM * self.z_cortex

    @property
    def ventricular_depth_mm(self) -> float:
        """How much further it retreats at the lateral ventricles (mm)."""
        return VENTRICLE_MM * self.severity + VENTRICLE_SD_MM * self.z_ventricle


def sample_brain_anatomy(rng: np.random.Generator) -> BrainAnatomy:
    """Draw a patient's brain: grade, atrophy draws, head size, deformation, skull and scalp."""
    grade = int(rng.choice(len(CLASS_PRIORS), p=CLASS_PRIORS))
    z_sev, z_ctx, z_ven = (float(v) for v in np.clip(rng.standard_normal(3), -3.0, 3.0))
    scale = tuple(float(v) for v in rng.uniform(0.92, 1.08, 3))
    lo, hi = _WARP_BOX
    shape = (3, *(int(n) + 1 for n in np.ceil((hi - lo) / WARP_SPACING_MM)))
    warp = (WARP_SD_MM * rng.standard_normal(shape)).astype(np.float64)
    skull = float(rng.uniform(4.0, 7.0))
    scalp = float(rng.uniform(3.0, 7.0))
    return BrainAnatomy(grade, z_sev, z_ctx, z_ven, scale, warp, skull, scalp)  # type: ignore[arg-type]


def to_template(anat: BrainAnatomy, points: np.ndarray) -> np.ndarray:
    """Template (MNI) coordinates of patient points ``(N, 3)`` (mm): ``c + (p - c) / s + u(p)``."""
    from scipy.ndimage import map_coordinates

    lo, _ = _WARP_BOX
    idx = ((points - lo) / WARP_SPACING_MM).T
    disp = np.stack(
        [map_coordinates(anat.warp[k], idx, order=3, mode="nearest") for k in range(3)], axis=1
    )
    scale = np.asarray(anat.head_scale)
    return BRAIN_CENTRE_MM + (points - BRAIN_CENTRE_MM) / scale + disp


def tissue_fractions(
    maps: TemplateMaps, anat: BrainAnatomy, points: np.ndarray
) -> dict[str, np.ndarray]:
    """Fractions of CSF, grey matter, white matter, skull and scalp at patient points ``(N, 3)``.

    Returns:
        ``csf``, ``gm``, ``wm``, ``skull``, ``scalp``: arrays ``(N,)`` in ``[0, 1]`` whose sum is
        at most 1 (the rest is air).
    """
    y = to_template(anat, points)
    depth = anat.cortical_depth_mm + anat.ventricular_depth_mm * np.exp(
        -0.5 * (maps.sample("ventricle_distance", y) / VENTRICLE_FALLOFF_MM) ** 2
    )
    head = maps.sample("head_sdf", y)
    inside = expit(head / EDGE_MM)
    tissue = expit((maps.sample("tissue_sdf", y) - depth) / EDGE_MM) * inside
    wm = np.minimum(np.clip(maps.sample("wm", y), 0.0, 1.0), tissue)
    out = -head
    skull = expit(out / EDGE_MM) * expit((anat.skull_mm - out) / EDGE_MM)
    scalp = expit((out - anat.skull_mm) / EDGE_MM) * expit(
        (anat.skull_mm + anat.scalp_mm - out) / EDGE_MM
    )
    return {
        "csf": np.clip(inside - tissue, 0.0, 1.0),
        "gm": tissue - wm,
        "wm": wm,
        "skull": skull,
        "scalp": scalp,
    }
