"""Acquisition physics: one image of the phantom with its own pose, contrast, drift and noise.

* ``mr``: T1- or T2-like tissue weighting, a smooth multiplicative bias field, Rician noise
  (magnitude of a complex signal with Gaussian noise in both channels); uint16.
* ``ct``: Hounsfield units, Gaussian noise and a small offset drift; int16 with
  ``RescaleIntercept`` -1024.
* ``xr``: the projection's line integrals with an anode-heel-like gradient, a display gamma and
  Gaussian noise; uint16.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medcl.data.synth.anatomy import Anatomy
from medcl.data.synth.render import render_projection, render_tomographic

#: The stored pixel values ``(N,)`` and information for the header (``weighting`` for MR).
Acquisition = tuple[np.ndarray, dict[str, Any]]


def acquire(
    anat: Anatomy, modality: str, grid: np.ndarray, px: float, rng: np.random.Generator
) -> Acquisition:
    """One acquisition: pose, contrast, drift and noise.

    Args:
        anat: The phantom (with this acquisition's distractors).
        modality: ``"mr"``, ``"ct"`` or ``"xr"``.
        grid: Scanner coordinates of the pixel (or voxel) centres, ``(N, D)``.
        px: Pixel size in normalised units.
        rng: The acquisition's generator.

    Returns:
        The stored pixel values ``(N,)`` and information for the header (``weighting`` for MR).
    """
    pts = _pose_points(grid, rng)
    # Tissue texture is speckle-like and differs between acquisitions (slice position, partial
    # volume, reconstruction); only the anatomy and the findings repeat across a patient's studies.
    salt = int(rng.integers(1, 2**31 - 1))
    if modality == "mr":
        return _acquire_mr(anat, pts, grid, px, rng, salt)
    if modality == "ct":
        return _acquire_ct(anat, pts, grid, px, rng, salt)
    return _acquire_xr(anat, pts, grid, rng, salt)


def _acquire_mr(
    anat: Anatomy, pts: np.ndarray, grid: np.ndarray, px: float, rng: np.random.Generator, salt: int
) -> Acquisition:
    """Magnitude MR image with a T1- or T2-like weighting, bias field and Rician noise."""
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
    signal = render_tomographic(anat, pts, px, t)
    signal *= bias_field(grid, rng, 0.2)
    gain = rng.uniform(1200.0, 3200.0)
    sigma = rng.uniform(0.02, 0.045) * t["organ"]
    return rician_magnitude(signal, sigma, gain, rng), {"weighting": "T1" if t1 else "T2"}


def _acquire_ct(
    anat: Anatomy, pts: np.ndarray, grid: np.ndarray, px: float, rng: np.random.Generator, salt: int
) -> Acquisition:
    """CT in Hounsfield units with an offset drift and Gaussian noise, stored +1024 as int16."""
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
    hu = render_tomographic(anat, pts, px, t)
    hu += rng.uniform(-8.0, 8.0) + rng.uniform(-6.0, 6.0) * grid[:, 1]
    hu += rng.uniform(6.0, 15.0) * rng.standard_normal(hu.shape)
    stored = np.rint(np.clip(hu, -1024.0, 3071.0) + 1024.0).astype("<i2")
    return stored, {}


def _acquire_xr(
    anat: Anatomy, pts: np.ndarray, grid: np.ndarray, rng: np.random.Generator, salt: int
) -> Acquisition:
    """Projection radiograph: line integrals, heel-like gradient, display gamma, noise."""
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
    line = render_projection(anat, pts, t)
    line /= 1.6
    line *= 1.0 + rng.uniform(-0.08, 0.08) * grid[:, 1] + rng.uniform(-0.04, 0.04) * grid[:, 0]
    gamma = rng.uniform(0.85, 1.15)
    img = np.clip(line, 0.0, None) ** gamma * rng.uniform(2600.0, 3400.0)
    img += rng.uniform(25.0, 60.0) * rng.standard_normal(img.shape) + 100.0
    stored = np.clip(np.rint(img), 0, 4095).astype("<u2")
    return stored, {}


def rician_magnitude(
    signal: np.ndarray, sigma: float, gain: float, rng: np.random.Generator
) -> np.ndarray:
    """A magnitude MR image with Rician noise, stored as 12-bit unsigned integers.

    ``|signal + n_re + i n_im| * gain`` with ``n_re, n_im ~ N(0, sigma^2)`` drawn in that order
    (the magnitude of a complex signal with Gaussian noise in both channels, Gudbjartsson & Patz
    1995), rounded and clipped to ``[0, 4095]``; little-endian uint16.
    """
    real = signal + sigma * rng.standard_normal(signal.shape)
    imag = sigma * rng.standard_normal(signal.shape)
    mag = np.hypot(real, imag) * gain
    return np.clip(np.rint(mag), 0, 4095).astype("<u2")


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


def bias_field(grid: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative MR bias field: exp of a random quadratic polynomial.

    Args:
        grid: Scanner coordinates ``(N, D)``, about ``[-1, 1]`` across the field of view.
        rng: Draws the ``D + D(D+1)/2`` coefficients, each uniform in ``[-strength, strength]``.
        strength: Bound of every coefficient.

    Returns:
        The field ``(N,)``, ``exp(sum_i a_i x_i + sum_{i<=j} b_ij x_i x_j)``.
    """
    dim = grid.shape[1]
    terms = [grid[:, i] for i in range(dim)]
    terms += [grid[:, i] * grid[:, j] for i in range(dim) for j in range(i, dim)]
    coef = rng.uniform(-strength, strength, len(terms))
    return np.exp(sum(c * x for c, x in zip(coef, terms, strict=True)))
