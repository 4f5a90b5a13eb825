"""Negative-cosine regression losses of the non-contrastive methods BYOL and SimSiam.

- BYOL (Grill et al. 2020, "Bootstrap Your Own Latent", NeurIPS), Eq. 2 and its symmetrisation:
  ``l(p, z) = || p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z)``, and
  ``L = l(p1, z2) + l(p2, z1)`` (the paper sums the two directions).
- SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning", CVPR), Eq. 1-2:
  ``D(p, z) = -cos(p, z)`` and ``L = D(p1, z2)/2 + D(p2, z1)/2``.

Each term is averaged over the batch. ``p`` is the predictor output of the online branch, ``z`` the
target projection. **Stop-gradient is the caller's job**: pass ``z.detach()`` (SimSiam's
``stopgrad``) or the output of a no-grad EMA target network (BYOL); without it SimSiam collapses.
There are no negatives, hence no masks and no gathering.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NegativeCosineLoss(nn.Module):
    """BYOL's ``2 - 2cos`` or SimSiam's ``-cos``, optionally symmetrised over two views.

    Args:
        variant: ``"byol"`` (``2 - 2cos``, directions summed) or ``"simsiam"`` (``-cos``,
            directions averaged).
    """

    def __init__(self, variant: Literal["byol", "simsiam"] = "byol") -> None:
        super().__init__()
        if variant not in ("byol", "simsiam"):
            raise ValueError(f"variant must be 'byol' or 'simsiam'; got {variant!r}")
        self.variant = variant

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"

    def _term(self, p: Tensor, z: Tensor) -> Tensor:
        if p.ndim != 2 or p.shape != z.shape:
            raise ValueError(f"p and z must both be (B, D); got {tuple(p.shape)}, {tuple(z.shape)}")
        cos = F.cosine_similarity(p.float(), z.float(), dim=1).mean()
        return 2.0 - 2.0 * cos if self.variant == "byol" else -cos

    def forward(
        self, p1: Tensor, z2: Tensor, p2: Tensor | None = None, z1: Tensor | None = None
    ) -> Tensor:
        """Compute the loss.

        Args:
            p1: ``(B, D)`` online predictions for view 1.
            z2: ``(B, D)`` target projections for view 2 (detached by the caller).
            p2: ``(B, D)`` online predictions for view 2, for the symmetrised loss.
            z1: ``(B, D)`` target projections for view 1 (detached by the caller), with ``p2``.

        Returns:
            Scalar loss: one direction if ``p2``/``z1`` are omitted, else the symmetrised loss.
        """
        if (p2 is None) != (z1 is None):
            raise ValueError("give both p2 and z1 for the symmetrised loss, or neither")
        with torch.autocast(device_type=p1.device.type, enabled=False):
            loss = self._term(p1, z2)
            if p2 is None or z1 is None:
                return loss
            other = self._term(p2, z1)
            return loss + other if self.variant == "byol" else (loss + other) / 2
