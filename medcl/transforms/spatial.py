"""Geometry: small affine, random resized crop and left-right flip fused into one resampling.

Each sample's rotation, zoom, translation, flip and crop are composed into a single matrix that maps
output coordinates to input coordinates (the convention of :func:`torch.nn.functional.affine_grid`),
so the batch is resampled once with :func:`torch.nn.functional.grid_sample`.

Coordinates follow ``affine_grid``: normalised to [-1, 1] with ``align_corners=False`` and ordered
``(x, y)`` = (width, height) in 2D, ``(x, y, z)`` = (width, height, depth) in 3D. Rotations are
applied in pixel units (not normalised units), so non-square images are not sheared. ``x`` is the
last array axis, which is the patient's left-right axis for axial CT/MR slices and radiographs.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


def rotation_matrix(angles_deg: Tensor) -> Tensor:
    """Rotation matrices from angles in degrees.

    Args:
        angles_deg: ``(B,)`` in-plane angles (2D) or ``(B, 3)`` angles about the x, y and z axes
            (3D, composed as ``Rz @ Ry @ Rx``). In 2D, with y pointing down, a positive angle turns
            the image clockwise as displayed.

    Returns:
        ``(B, 2, 2)`` or ``(B, 3, 3)`` rotation matrices acting on ``(x, y[, z])`` column vectors.
    """
    a = angles_deg * (math.pi / 180.0)
    if a.ndim == 1:
        c, s = a.cos(), a.sin()
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    c, s = a.cos(), a.sin()
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def rot(i: int, j: int, k: int) -> Tensor:
        # rotation in the (j, k) plane about axis i
        m = [[None] * 3 for _ in range(3)]
        for r in range(3):
            for col in range(3):
                m[r][col] = one if r == col else zero
        m[j][j], m[j][k], m[k][j], m[k][k] = c[:, i], -s[:, i], s[:, i], c[:, i]
        return torch.stack([torch.stack(row, -1) for row in m], -2)

    return rot(2, 0, 1) @ rot(1, 2, 0) @ rot(0, 1, 2)


def build_theta(
    spatial_shape: tuple[int, ...],
    *,
    rotation_deg: Tensor,
    scale: Tensor,
    translate_frac: Tensor,
    flip: Tensor,
    crop_frac: Tensor,
    crop_center: Tensor,
) -> Tensor:
    """Compose per-sample geometry into ``affine_grid`` matrices (output -> input coordinates).

    The forward model is: flip the input left-right (where ``flip``), rotate about the centre and
    zoom by ``scale``, shift by ``translate_frac`` of the image size, then crop the box of relative
    size ``crop_frac`` centred at ``crop_center`` and resize it to the full output.

    Args:
        spatial_shape: ``(H, W)`` or ``(D, H, W)``.
        rotation_deg: ``(B,)`` (2D) or ``(B, 3)`` (3D) angles, see :func:`rotation_matrix`.
        scale: ``(B,)`` zoom factors (> 1 enlarges).
        translate_frac: ``(B, d)`` shifts as fractions of the image size, ``(x, y[, z])`` order.
        flip: ``(B,)`` booleans, flip along x (the last array axis).
        crop_frac: ``(B, d)`` crop box size relative to the image, in (0, 1].
        crop_center: ``(B, d)`` crop box centre in normalised coordinates.

    Returns:
        ``(B, d, d + 1)`` matrices for :func:`torch.nn.functional.affine_grid`.
    """
    d = len(spatial_shape)
    dev, dt = scale.device, scale.dtype
    half = torch.tensor(spatial_shape[::-1], device=dev, dtype=dt) / 2  # (x, y[, z]) half-sizes
    h, h_inv = torch.diag(half), torch.diag(1.0 / half)
    r_t = rotation_matrix(rotation_deg.to(dt)).transpose(1, 2)  # inverse rotation
    f = torch.ones(scale.shape[0], d, device=dev, dtype=dt)
    f[:, 0] = torch.where(flip, -1.0, 1.0)
    inv_affine = torch.diag_embed(f) @ h_inv @ r_t / scale.reshape(-1, 1, 1)  # (B, d, d)
    linear = inv_affine @ h
    shift = -(inv_affine @ (2 * half * translate_frac).unsqueeze(-1)).squeeze(-1)
    theta_linear = linear @ torch.diag_embed(crop_frac)
    theta_shift = (linear @ crop_center.unsqueeze(-1)).squeeze(-1) + shift
    return torch.cat([theta_linear, theta_shift.unsqueeze(-1)], dim=-1)


def warp(x: Tensor, theta: Tensor, mode: str = "bilinear") -> Tensor:
    """Resample ``x`` with per-sample ``affine_grid`` matrices; outside the image is 0.

    Args:
        x: Batch, ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        theta: ``(B, d, d + 1)`` output -> input matrices (see :func:`build_theta`).
        mode: ``grid_sample`` interpolation mode.

    Returns:
        The resampled batch, same shape.
    """
    spatial = tuple(x.shape[2:])
    base = _base_grid(spatial, str(x.device), x.dtype)  # (P, d + 1)
    grid = (base @ theta.to(x.dtype).transpose(1, 2)).reshape(x.shape[0], *spatial, len(spatial))
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


@functools.lru_cache(maxsize=16)
def _base_grid(spatial: tuple[int, ...], device: str, dtype: torch.dtype) -> Tensor:
    """Homogeneous pixel-centre coordinates ``(x, y[, z], 1)`` of the output, ``(P, d + 1)``.

    Same values as ``affine_grid`` with an identity matrix and ``align_corners=False``; the batched
    product with ``theta`` is done by one matmul, which is several times faster than
    ``affine_grid`` on the CPU.
    """
    axes = [(torch.arange(n, device=device, dtype=dtype) * 2 + 1) / n - 1 for n in spatial]
    grids = torch.meshgrid(*axes, indexing="ij")  # (z,) y, x order
    coords = [g.reshape(-1) for g in reversed(grids)]  # x, y (, z)
    return torch.stack([*coords, torch.ones_like(coords[0])], dim=1)
