"""Rendering the phantom: cross-sections (MR relative intensity, CT Hounsfield units) and
projections (X-ray line integrals), with partial volume at every edge and a tissue texture.

``t`` is the acquisition's tissue table (intensities or attenuations per structure, see
:mod:`medcl.data.synth.acquire`); ``pts`` are anatomical coordinates ``(N, D)``; ``px`` is the
pixel size in the same units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from medcl.data.synth.anatomy import Anatomy
from medcl.data.synth.geometry import (
    Ellipsoid,
    ellipsoid_rho,
    partial_volume,
    polyline_distance,
    sphere_distance,
)


def tissue_texture(anat: Anatomy, pts: np.ndarray, salt: int = 0) -> np.ndarray:
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


def _paint(img: np.ndarray, mask: np.ndarray, value: float | np.ndarray) -> None:
    """Blend ``value`` into ``img`` in place with the occupancy ``mask``."""
    img *= 1.0 - mask
    img += mask * value


def render_tomographic(anat: Anatomy, pts: np.ndarray, px: float, t: dict[str, Any]) -> np.ndarray:
    """Cross-sectional image of the phantom (MR relative intensity or CT HU) at ``pts``."""
    img = np.full(pts.shape[0], t["air"], dtype=np.float64)
    _, sd_body = ellipsoid_rho(anat.body, pts)
    body = partial_volume(sd_body, px)
    _paint(img, body, t["fat"])
    _, sd_inner = ellipsoid_rho(anat.body, pts, anat.fat_inner)
    inner = partial_volume(sd_inner, px)
    _paint(img, inner, t["soft"])
    for k in anat.kidneys:
        _paint(img, partial_volume(ellipsoid_rho(k, pts)[1], px) * inner, t["kidney"])
    for nod in anat.nodules:
        edge = max(px, 0.3 * nod.radius)
        m = (
            partial_volume(sphere_distance(nod, pts, nod.radius + 2 * edge) - nod.radius, edge)
            * inner
        )
        _paint(img, m, t["soft"] + nod.sign * nod.contrast * t["delta"])
    organ = partial_volume(ellipsoid_rho(anat.organ, pts)[1], px) * inner
    _paint(img, organ, t["organ"])
    for v in anat.vessels:
        m = (
            partial_volume(polyline_distance(v.points, pts, v.radius + 2 * px) - v.radius, px)
            * organ
        )
        _paint(img, m, t["organ"] + v.sign * v.contrast * t["delta"])
    for les in anat.lesions:
        edge = max(px, 0.3 * les.radius)
        m = (
            partial_volume(sphere_distance(les, pts, les.radius + 2 * edge) - les.radius, edge)
            * organ
        )
        _paint(img, m, t["organ"] + les.sign * les.contrast * t["delta"] * t["lesion_gain"])
    img += t["texture"] * tissue_texture(anat, pts, t.get("texture_salt", 0)) * inner
    # The spine is a cylinder along z: only the in-plane distance counts.
    spine_d = sphere_distance(anat.spine, pts[:, :2], anat.spine.radius + 2 * px)
    _paint(img, partial_volume(spine_d - anat.spine.radius, px) * inner, t["cortex"])
    _paint(img, partial_volume(spine_d - 0.72 * anat.spine.radius, px) * inner, t["marrow"])
    return img


def _chord(dist: np.ndarray, radius: float) -> np.ndarray:
    """Path length through a sphere or tube of ``radius`` at in-plane distance ``dist``."""
    return 2.0 * np.sqrt(np.clip(radius**2 - dist**2, 0.0, None))


def _ellipsoid_chord(e: Ellipsoid, pts: np.ndarray, depth: float, scale: float = 1.0) -> np.ndarray:
    """Path length through an ellipsoid ``2 * depth`` deep (scaled by ``scale``) at ``pts``."""
    rho, _ = ellipsoid_rho(e, pts, scale)
    return 2.0 * depth * scale * np.sqrt(np.clip(1.0 - rho**2, 0.0, None))


def render_projection(anat: Anatomy, pts: np.ndarray, t: dict[str, Any]) -> np.ndarray:
    """Line integral of attenuation through the phantom, viewed from the front (2D analogue)."""
    depth = t["depth"]
    # The trunk seen from the front: as wide as the body, taller than the field of view.
    trunk = Ellipsoid(anat.body.center, np.array([anat.body.axes[0], 1.6, 1.0]), anat.body.angle)
    total = _ellipsoid_chord(trunk, pts, depth) * t["mu_fat"]
    inner = _ellipsoid_chord(trunk, pts, depth, anat.fat_inner)
    total += inner * (t["mu_soft"] - t["mu_fat"])
    in_trunk = np.clip(inner / (0.1 * depth), 0.0, 1.0)
    for k in anat.kidneys:
        total += _ellipsoid_chord(k, pts, 0.15) * t["mu_kidney"]
    for nod in anat.nodules:
        total += (
            _chord(sphere_distance(nod, pts, nod.radius), nod.radius)
            * nod.sign
            * nod.contrast
            * t["mu_delta"]
        )
    organ_depth = 0.5 * depth
    total += _ellipsoid_chord(anat.organ, pts, organ_depth) * t["mu_organ"]
    for v in anat.vessels:
        total += (
            _chord(polyline_distance(v.points, pts, v.radius), v.radius)
            * v.sign
            * v.contrast
            * t["mu_vessel"]
        )
    for les in anat.lesions:
        total += (
            _chord(sphere_distance(les, pts, les.radius), les.radius)
            * les.sign
            * les.contrast
            * t["mu_delta"]
            * t["lesion_gain"]
        )
    total += (
        t["texture"]
        * tissue_texture(anat, pts, t.get("texture_salt", 0))
        * _ellipsoid_chord(anat.organ, pts, organ_depth)
    )
    # Spine: a vertical band; ribs: curved bands.
    spine = Ellipsoid(
        np.array([anat.spine.center[0], 0.0, 0.0]),
        np.array([anat.spine.radius * 0.9, 3.0, 1.0]),
        0.0,
    )
    bone = _ellipsoid_chord(spine, pts, 0.12)
    for rib in anat.ribs:
        bone += _chord(polyline_distance(rib.points, pts, rib.radius), rib.radius)
    return total + bone * in_trunk * t["mu_bone"]
