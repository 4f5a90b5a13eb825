"""Slice geometry: ordering DICOM slices along their normal and checking that they stack.

Used by both 3-D paths: a series of single-frame slices (:mod:`medcl.data.readers.series`) and
an enhanced multi-frame CT/MR file (:mod:`medcl.data.readers.dicom`). Pure geometry on the
ImageOrientationPatient / ImagePositionPatient values; no file is read here.

With the row and column direction cosines ``r, c`` (shared by every slice), the slice normal is
``n = (r × c) / |r × c|`` and slice ``i`` sits at ``s_i = p_i · n`` along it (``p_i`` its
ImagePositionPatient). Slices are sorted by ``s_i`` (never by InstanceNumber); the stack is
regular when consecutive gaps are positive and equal (within :data:`GAP_ABS_TOL` mm or
:data:`GAP_REL_TOL` of the median gap) and every position lies on the line ``p_0 + (s_i − s_0) n``
(gantry tilt or shifted slices leave it). The slice spacing is the median gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medcl.data.readers.base import Unreadable

ORIENTATION_TOL = 1e-3
"""Largest difference between two slices' direction cosines of one stack."""
SPACING_TOL = 1e-3
"""Smallest gap (mm) between two slice positions; also the pixel-spacing tolerance of a series."""
GAP_REL_TOL = 0.02
"""Largest deviation of a gap from the median gap, relative to it ..."""
GAP_ABS_TOL = 0.01
"""... or in mm, whichever is larger (a missing slice leaves a larger gap)."""


def order_slices(
    iops: Sequence[Sequence[float]], ipps: Sequence[Sequence[float]]
) -> tuple[list[int], float]:
    """Order slices along their normal and check that they form a regular stack.

    Args:
        iops: ImageOrientationPatient (6 direction cosines) per slice.
        ipps: ImagePositionPatient (mm) per slice.

    Returns:
        ``(order, spacing_z)``: indices sorted by position along the normal, median gap in mm.

    Raises:
        Unreadable: Mixed orientations, shared positions, tilt/shift or uneven gaps.
    """
    iop = np.asarray(iops, dtype=np.float64)
    if np.abs(iop - iop[0]).max() > ORIENTATION_TOL:
        raise Unreadable(
            "series rejected: slices have different orientations (localizer or "
            "mixed planes in one series)"
        )
    row, col = iop[0, :3], iop[0, 3:]
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise Unreadable("series rejected: ImageOrientationPatient is degenerate")
    normal /= norm
    pos = np.asarray(ipps, dtype=np.float64)
    along = pos @ normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    sorted_along = along[order]
    gaps = np.diff(sorted_along)
    if len(gaps) == 0:
        raise Unreadable("series rejected: a single slice is no volume (ingest it with --dims 2)")
    if gaps.min() < SPACING_TOL:
        raise Unreadable(
            "series rejected: two or more slices share one position (several echoes,"
            " phases or duplicate files in one series)"
        )
    in_plane = pos[order] - pos[order[0]] - np.outer(sorted_along - sorted_along[0], normal)
    drift = np.linalg.norm(in_plane, axis=1).max()
    extent = sorted_along[-1] - sorted_along[0]
    if drift > 0.05 + 0.01 * extent:
        raise Unreadable(
            "series rejected: slices do not stack along the slice normal (gantry "
            "tilt or shifted slices)"
        )
    spacing = float(np.median(gaps))
    if np.abs(gaps - spacing).max() > max(GAP_ABS_TOL, GAP_REL_TOL * spacing):
        raise Unreadable(
            f"series rejected: uneven slice spacing (gaps from {gaps.min():.3g} to "
            f"{gaps.max():.3g} mm; missing or unreadable slice?)"
        )
    return order, spacing
