"""BYOL: regression of the EMA target's projection by an online predictor (Grill et al. 2020,
"Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS).

With the online predictor ``q(z)`` on the projection ``z = g(f(x))`` and the target projection
``z_ξ = g_ξ(f_ξ(x))`` of the other view (EMA networks, no gradient), Eq. 2 and its symmetrisation::

    l(p, z_ξ) = ‖ p/‖p‖ − z_ξ/‖z_ξ‖ ‖² = 2 − 2·cos(p, z_ξ)

    L_ssl = mean_i l(q(z_i^1), z_ξ,i^2) + mean_i l(q(z_i^2), z_ξ,i^1)

(the two directions summed, as in the paper). After each optimiser step the target networks take
one EMA step (:class:`~medcl.train.objectives.base.MomentumObjective`). No negatives.

Options (``method.options.byol``, :class:`~medcl.train.objectives.base.MomentumOptions`):
``ema_base``, the starting momentum of the target networks (scheduled to 1).
"""

from __future__ import annotations

from torch import Tensor, nn

from medcl.config import Config
from medcl.losses import NegativeCosineLoss
from medcl.models.heads import PredictorHead
from medcl.train.objectives.base import MomentumObjective, ViewBatch, cross_view_regression


class BYOL(MomentumObjective):
    """``2 − 2cos`` between the online predictions and the EMA target projections.

    Args:
        cfg: The run config (``method.options.byol``).
        encoder: The online encoder, copied as the target encoder.

    Attributes:
        predictor: The predictor head ``q`` on the online projections.
    """

    def __init__(self, cfg: Config, encoder: nn.Module) -> None:
        super().__init__(cfg, encoder)
        self.predictor = PredictorHead(cfg.model.proj_dim, cfg.model.proj_hidden)
        self.regression = NegativeCosineLoss("byol")

    def ssl_loss(self, batch: ViewBatch, z: Tensor) -> Tensor:
        """Symmetrised ``2 − 2cos`` of the predictions against the other view's targets."""
        return cross_view_regression(
            self.predictor, self.regression, batch, z, self.target_projections(batch)
        )
