"""SimSiam: a predictor regresses the stop-gradient projection of the other view (Chen & He 2021,
"Exploring Simple Siamese Representation Learning", CVPR).

With the predictor ``h(z)`` on the projection ``z = g(f(x))`` and the same network's projection of
the other view as target, under stop-gradient (Eq. 1-2)::

    D(p, z) = −cos(p, stopgrad(z))

    L_ssl = ½ · mean_i D(h(z_i^1), z_i^2) + ½ · mean_i D(h(z_i^2), z_i^1)

There is no target network and no negative; without the stop-gradient the features collapse.
"""

from __future__ import annotations

from torch import Tensor, nn

from medcl.config import Config
from medcl.losses import NegativeCosineLoss
from medcl.models.heads import PredictorHead
from medcl.train.objectives.base import Objective, ViewBatch, cross_view_regression


class SimSiam(Objective):
    """``−cos`` between the predictions and the stop-gradient projections of the other view.

    Args:
        cfg: The run config.
        encoder: The online encoder.

    Attributes:
        predictor: The predictor head ``h`` on the projections.
    """

    def __init__(self, cfg: Config, encoder: nn.Module) -> None:
        super().__init__(cfg, encoder)
        self.predictor = PredictorHead(cfg.model.proj_dim, cfg.model.proj_hidden)
        self.regression = NegativeCosineLoss("simsiam")

    def ssl_loss(self, batch: ViewBatch, z: Tensor) -> Tensor:
        """Symmetrised ``−cos`` of the predictions against the detached projections."""
        return cross_view_regression(self.predictor, self.regression, batch, z, z.detach())
