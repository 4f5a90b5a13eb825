"""Geometry of the phantom: its shapes (ellipsoids, spheres, tubes) and vectorised distances.

Coordinates are normalised: the field of view spans ``[-1, 1]`` in x and y (and z for volumes).
The vectorised functions take ``N`` points with ``D = 2`` or ``3`` coordinates, ``(N, D)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Ellipsoid:
    """A rotated ellipsoid."""

    center: np.ndarray  # (3,)
    axes: np.ndarray  # (3,) semi-axes along the rotated x, y and z
    angle: float  # rotation about z, radians


@dataclass
class Tube:
    """A tube of constant radius around a polyline (a vessel or a rib)."""

    points: np.ndarray  # (K, 3) polyline through the centre
    radius: float
    sign: float  # +1 brighter / more attenuating than the surroundings, -1 darker
    contrast: float  # relative contrast magnitude in [0, 1]


@dataclass
class Sphere:
    """A sphere (a lesion or a nodule), or, for the spine, a cylinder along z."""

    center: np.ndarray  # (3,)
    radius: float
    sign: float
    contrast: float


def bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, k: int = 12) -> np.ndarray:
    """``k`` points along the quadratic Bezier curve with control points ``p0``, ``p1``, ``p2``."""
    t = np.linspace(0.0, 1.0, k)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def ellipsoid_point(e: Ellipsoid, u: np.ndarray) -> np.ndarray:
    """Map a point of the unit ball to the ellipsoid ``e``."""
    c, s = math.cos(e.angle), math.sin(e.angle)
    v = u * e.axes
    return e.center + np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]])


def ellipse_rho(e: Ellipsoid, p: np.ndarray) -> float:
    """Normalised in-plane radius of ``p`` in the z = 0 section of ``e`` (1 on its outline)."""
    c, s = math.cos(e.angle), math.sin(e.angle)
    d = p[:2] - e.center[:2]
    x, y = c * d[0] + s * d[1], -s * d[0] + c * d[1]
    return math.hypot(x / e.axes[0], y / e.axes[1])


def ellipse_outline(e: Ellipsoid, n: int = 24) -> np.ndarray:
    """Points on the z = 0 outline of an ellipsoid."""
    a = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    u = np.stack([np.cos(a), np.sin(a), np.zeros(n)], axis=1)
    return np.array([ellipsoid_point(e, v) for v in u])


def ellipsoid_rho(e: Ellipsoid, pts: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, ...]:
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


def partial_volume(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume occupancy: 1 inside, 0 outside, a linear ramp ``width`` wide at the edge."""
    return np.clip(0.5 - signed_distance / width, 0.0, 1.0)


def _near(pts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Indices of the points inside the axis-aligned box ``[lo, hi]``."""
    return np.flatnonzero(np.all((pts >= lo) & (pts <= hi), axis=1))


def polyline_distance(points: np.ndarray, pts: np.ndarray, reach: float) -> np.ndarray:
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


def sphere_distance(s: Sphere, pts: np.ndarray, reach: float) -> np.ndarray:
    """Distance from each of ``pts`` to the sphere's centre; ``inf`` beyond ``reach``."""
    c = s.center[: pts.shape[1]]
    out = np.full(pts.shape[0], np.inf)
    idx = _near(pts, c - reach, c + reach)
    d = pts[idx] - c
    out[idx] = np.sqrt(np.einsum("nd,nd->n", d, d))
    return out


def pixel_grid(size: int, n_slices: int | None) -> np.ndarray:
    """Pixel-centre coordinates in ``[-1, 1]``; rows run along y, columns along x."""
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    if n_slices is None:
        y, x = np.meshgrid(c, c, indexing="ij")
        return np.stack([x.ravel(), y.ravel()], axis=1)
    cz = (np.arange(n_slices) + 0.5) / n_slices * 2.0 - 1.0
    z, y, x = np.meshgrid(cz, c, c, indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
