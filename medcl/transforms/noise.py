"""Additive Gaussian noise and Rician noise, batched with a per-sample standard deviation."""

from __future__ import annotations

import torch
from torch import Tensor

from medcl.transforms._sampling import broadcast_param, normal


def gaussian_noise(x: Tensor, std: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Add zero-mean Gaussian noise with a per-sample standard deviation.

    Args:
        x: Batch, ``(B, C, *spatial)``.
        std: ``(B,)`` standard deviations in intensity units (0 is the identity).
        generator: Optional source of randomness.

    Returns:
        ``x + std * N(0, 1)``.
    """
    return x + broadcast_param(std, x) * normal(
        tuple(x.shape), device=x.device, generator=generator
    )


def rician_noise(x: Tensor, std: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Apply Rician noise: the magnitude of the signal plus complex Gaussian noise.

    ``sqrt((x + std * n1) ** 2 + (std * n2) ** 2)`` with independent standard normals ``n1, n2``,
    which is the noise model of magnitude MR images.

    Args:
        x: Batch, ``(B, C, *spatial)`` (non-negative magnitudes).
        std: ``(B,)`` standard deviations (0 is the identity for non-negative ``x``).
        generator: Optional source of randomness.

    Returns:
        The noisy, non-negative batch.
    """
    s = broadcast_param(std, x)
    n = normal((2, *x.shape), device=x.device, generator=generator)
    return torch.sqrt((x + s * n[0]).square() + (s * n[1]).square())
