"""Projection and predictor heads.

- Projection head (SimCLR, Chen et al. 2020): ``Linear → BatchNorm → ReLU → Linear``; the
  contrastive loss is computed on its output, the encoder's features are what downstream tasks use.
- Predictor head (BYOL, Grill et al. 2020; SimSiam, Chen & He 2021): the same MLP shape placed on
  top of the online projection; the loss compares its output with the stop-gradient target
  projection.
"""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Two-layer MLP ``in_dim → hidden → out_dim`` with BatchNorm and ReLU in between."""

    def __init__(self, in_dim: int, hidden: int = 512, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``(B, in_dim)`` to ``(B, out_dim)``."""
        return self.net(x)


class PredictorHead(ProjectionHead):
    """BYOL/SimSiam predictor ``dim → hidden → dim``."""

    def __init__(self, dim: int = 128, hidden: int = 512) -> None:
        super().__init__(dim, hidden, dim)
