"""Per-sample random draws from an optional :class:`torch.Generator`.

Every batched transform draws one parameter per sample (shape ``(B,)`` or ``(B, k)``) through these
helpers, so a seeded generator makes the whole batch reproducible and samples never share a draw.
Values are drawn on the generator's device (a CPU generator works for a CUDA batch) and then moved
to the requested device; pass a generator created on the training device to avoid the transfer.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def uniform(
    shape: int | tuple[int, ...],
    low: float,
    high: float,
    *,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw float32 values uniformly from ``[low, high)``.

    Args:
        shape: Output shape (an int means ``(shape,)``).
        low: Lower bound.
        high: Upper bound (equal to ``low`` gives a constant).
        device: Device of the returned tensor.
        generator: Optional source of randomness.

    Returns:
        A float32 tensor on ``device``.
    """
    shape = (shape,) if isinstance(shape, int) else shape
    u = torch.rand(shape, generator=generator, device=_draw_device(generator, device))
    return (low + (high - low) * u).to(device)


def bernoulli(
    n: int, p: float, *, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """Draw ``n`` independent booleans that are ``True`` with probability ``p``.

    Args:
        n: Number of draws (the batch size).
        p: Probability of ``True``.
        device: Device of the returned tensor.
        generator: Optional source of randomness.

    Returns:
        A bool tensor of shape ``(n,)`` on ``device``.
    """
    u = torch.rand(n, generator=generator, device=_draw_device(generator, device))
    return (u < p).to(device)


def normal(
    shape: tuple[int, ...], *, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """Draw float32 standard-normal values of ``shape`` on ``device``."""
    return torch.randn(shape, generator=generator, device=_draw_device(generator, device)).to(
        device
    )


def broadcast_param(p: Tensor, x: Tensor) -> Tensor:
    """Reshape a ``(B,)`` per-sample parameter to broadcast against ``x`` ``(B, C, ...)``."""
    return p.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
