"""The MNI152 template from the nilearn wheel, as the maps the brain cohort samples.

Everything is derived at run time from the files nilearn installs (nothing is downloaded, nothing
derived is written to disk): the 1 mm T1 template's brain mask (``load_mni152_brain_mask``, the
template thresholded), and the grey- and white-matter probability templates. From them, once per
process (a few seconds; :func:`load_template` caches the result):

* ``tissue_sdf``: the signed Euclidean distance (mm) to the boundary of brain tissue, the voxels
  inside the mask with ``P(GM) + P(WM) >= 0.5``; positive inside tissue, negative in CSF and
  outside. Thresholding it at ``d`` erodes the tissue by a ball of radius ``d`` (dilates for
  ``d < 0``), which is how atrophy is simulated (:mod:`.anatomy`).
* ``head_sdf``: the signed distance to the brain mask's boundary (the intracranial space, which
  atrophy does not change), positive inside; outside it places skull and scalp.
* ``wm``: the white-matter probability.
* ``ventricle_distance``: the distance (mm) to the lateral ventricles, found as the two large CSF
  components (``P(CSF) = mask * (1 - P(GM) - P(WM)) >= 0.5``) deep in the brain on either side of
  the midline.

Only an axial slab around the lateral ventricles (MNI z from -20 to 60 mm) is kept: the cohort's
slices sample z from about -5 to 45 mm, and the distances that matter there (at most 15 mm to a
tissue or head boundary, any distance to the ventricles, which lie inside the slab) are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from medcl.errors import MedclError

NILEARN_MISSING = "the brain cohort needs nilearn: pip install 'medcl[brain]'"
"""The one-line message when nilearn (which holds the template) is not installed."""

TEMPLATE = "MNI152 ICBM 2009a nonlinear symmetric, 1 mm (nilearn's bundled copy)"
"""What the anatomy is drawn from; its licence is unknown, so no derived image is kept."""

SLAB_MM = (-20.0, 60.0)
"""MNI z range (mm) of the axial slab kept from the template."""

MAP_NAMES = ("tissue_sdf", "head_sdf", "wm", "ventricle_distance")
"""The maps :meth:`TemplateMaps.sample` reads."""


@dataclass(frozen=True)
class TemplateMaps:
    """Voxel maps on the template's 1 mm grid (axis order x, y, z in MNI RAS millimetres).

    Attributes:
        origin: MNI coordinates (mm) of voxel ``(0, 0, 0)``.
        spacing: Voxel size (mm), the same along every axis.
        maps: ``name -> float32 array``, the names in :data:`MAP_NAMES`.
        nilearn_version: The nilearn the template came from (recorded in ``cohort.json``).
    """

    origin: np.ndarray
    spacing: float
    maps: dict[str, np.ndarray]
    nilearn_version: str

    def sample(self, name: str, points: np.ndarray) -> np.ndarray:
        """Trilinear interpolation of map ``name`` at MNI points ``(N, 3)`` (mm).

        Points beyond the slab take the value of the nearest voxel on its edge.
        """
        from scipy.ndimage import map_coordinates

        idx = ((points - self.origin) / self.spacing).T
        return map_coordinates(self.maps[name], idx, order=1, mode="nearest")


def load_template() -> TemplateMaps:
    """The template maps (computed on first use in a process, then cached).

    Raises:
        MedclError: nilearn is not installed (:data:`NILEARN_MISSING`), or its template
            no longer shows two lateral ventricles where the MNI152 template has them.
    """
    return _load_template()


@lru_cache(maxsize=1)
def _load_template() -> TemplateMaps:
    try:
        import nilearn
        from nilearn.datasets import (
            load_mni152_brain_mask,
            load_mni152_gm_template,
            load_mni152_wm_template,
        )
    except ImportError as exc:
        raise MedclError(NILEARN_MISSING) from exc
    from scipy import ndimage

    mask_img = load_mni152_brain_mask(resolution=1)
    affine = np.asarray(mask_img.affine, dtype=np.float64)
    spacing = float(affine[0, 0])
    if not np.allclose(affine[:3, :3], np.eye(3) * spacing):
        raise MedclError("nilearn's MNI152 template is not on an axis-aligned grid")
    k0, k1 = (int(round((z - affine[2, 3]) / spacing)) for z in SLAB_MM)
    slab = slice(max(k0, 0), k1 + 1)

    def data(img) -> np.ndarray:
        return np.asarray(img.dataobj[:, :, slab], dtype=np.float32)

    inside = data(mask_img) > 0.5
    gm = data(load_mni152_gm_template(resolution=1))
    wm = np.clip(data(load_mni152_wm_template(resolution=1)), 0.0, 1.0)
    tissue = inside & (gm + wm >= 0.5)
    origin = affine[:3, 3] + np.array([0.0, 0.0, slab.start * spacing])

    def sdf(region: np.ndarray) -> np.ndarray:
        inner = ndimage.distance_transform_edt(region, sampling=spacing)
        outer = ndimage.distance_transform_edt(~region, sampling=spacing)
        return (inner - outer).astype(np.float32)

    head_sdf = sdf(inside)
    ventricles = _lateral_ventricles(inside & (gm + wm <= 0.5), head_sdf, origin, spacing)
    maps = {
        "tissue_sdf": sdf(tissue),
        "head_sdf": head_sdf,
        "wm": wm,
        "ventricle_distance": ndimage.distance_transform_edt(~ventricles, sampling=spacing).astype(
            np.float32
        ),
    }
    return TemplateMaps(origin, spacing, maps, str(nilearn.__version__))


def _lateral_ventricles(
    csf: np.ndarray, head_sdf: np.ndarray, origin: np.ndarray, spacing: float
) -> np.ndarray:
    """The two lateral ventricles: large CSF components deep in the brain, one on each side."""
    from scipy import ndimage

    labels, n = ndimage.label(csf & (head_sdf > 15.0))
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=n + 1)
    coords = np.unravel_index(np.arange(flat.size), labels.shape)
    centres = (
        np.stack([np.bincount(flat, weights=c, minlength=n + 1) for c in coords], axis=1)
        / np.maximum(sizes, 1)[:, None]
    )
    centres = centres * spacing + origin
    keep = [
        i
        for i in range(1, n + 1)
        if sizes[i] >= 1000
        and 5.0 <= abs(centres[i, 0]) <= 35.0
        and -50.0 <= centres[i, 1] <= 10.0
        and 0.0 <= centres[i, 2] <= 35.0
    ]
    sides = {np.sign(centres[i, 0]) for i in keep}
    if len(keep) != 2 or sides != {-1.0, 1.0}:
        raise MedclError(
            "nilearn's MNI152 template does not show two lateral ventricles where expected; "
            "the brain cohort needs nilearn>=0.10 with its bundled ICBM152 2009 template"
        )
    return np.isin(labels, keep)
