"""Gaussian blur, batched with a per-sample standard deviation (separable grouped convolution)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_MIN_SIGMA = 1e-3


def gaussian_kernels(sigma: Tensor, radius: int) -> Tensor:
    """Normalised 1-D Gaussian kernels, one per sample.

    Args:
        sigma: ``(N,)`` standard deviations in pixels; values near 0 give a unit impulse.
        radius: Half-width of the kernels; the size is ``2 * radius + 1``.

    Returns:
        ``(N, 2 * radius + 1)`` kernels that each sum to 1.
    """
    offsets = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    s = sigma.clamp_min(_MIN_SIGMA).unsqueeze(1)
    k = torch.exp(-0.5 * (offsets / s).square())
    return k / k.sum(dim=1, keepdim=True)


def kernel_radius(max_sigma: float) -> int:
    """Kernel half-width that covers three standard deviations of ``max_sigma``."""
    return max(1, math.ceil(3.0 * max_sigma))


def gaussian_blur(x: Tensor, sigma: Tensor, radius: int | None = None) -> Tensor:
    """Blur each sample with its own isotropic Gaussian (in pixels), edges replicated.

    Args:
        x: Batch, ``(B, C, *spatial)`` with 2 or 3 spatial dimensions.
        sigma: ``(B,)`` standard deviations in pixels (0 is the identity).
        radius: Kernel half-width; by default derived from ``sigma.max()`` (a host sync on GPU,
            so pass it when the upper bound is known).

    Returns:
        The blurred batch, same shape and dtype.
    """
    b, c, *spatial = x.shape
    dims = len(spatial)
    if radius is None:
        radius = kernel_radius(float(sigma.max()))
    kernels = gaussian_kernels(sigma.to(x.device, x.dtype), radius)  # (B, K)
    kernels = kernels.repeat_interleave(c, dim=0)  # one kernel per (sample, channel)
    conv = F.conv2d if dims == 2 else F.conv3d
    out = x.reshape(1, b * c, *spatial)
    for axis in range(dims):
        shape = [1] * dims
        shape[axis] = 2 * radius + 1
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
        out = conv(
            F.pad(out, pad, mode="replicate"), kernels.reshape(b * c, 1, *shape), groups=b * c
        )
    return out.reshape(b, c, *spatial)
