"""SimCLR: NT-Xent over all views (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML), with patient-aware negatives.

For the ``2B`` (generally ``B·V``) L2-normalised projections ``z`` of a batch and temperature ``τ``,
each view ``i`` is pulled towards the other view(s) ``P(i)`` of its image and pushed from the rest
(Eq. 1, averaged over all anchors)::

    L_ssl = (1/BV) Σ_i −(1/|P(i)|) Σ_{p ∈ P(i)} log( exp(z_i·z_p/τ) / Σ_{a ∈ A(i)} exp(z_i·z_a/τ) )

``A(i)`` is every other view except those of the same patient that are not positives (never
negatives; with ``method.group_positives`` they are positives, as in MICLe, Azizi et al. 2021).
SupCon and NT-Xent read the same logits, so :meth:`SimCLR.combine` computes both from one
similarity matrix (the SSCL loss, :class:`~medcl.losses.SSCLLoss`); its SupCon term is logged even
while λ1 is 0.
"""

from __future__ import annotations

from torch import Tensor, nn

from medcl.config import Config
from medcl.losses import NTXentLoss
from medcl.train.objectives.base import Objective, ObjectiveOutput, ViewBatch


class SimCLR(Objective):
    """NT-Xent over all views; with SupCon, the SSCL hybrid from one similarity matrix.

    Args:
        cfg: The run config.
        encoder: The online encoder.
    """

    def __init__(self, cfg: Config, encoder: nn.Module) -> None:
        super().__init__(cfg, encoder)
        self.ntxent = NTXentLoss(cfg.method.temperature, cfg.method.group_positives)

    def ssl_loss(self, batch: ViewBatch, z: Tensor) -> Tensor:
        """NT-Xent of ``z`` (see the module docstring)."""
        return self.ntxent(z, groups=batch.groups)

    def combine(
        self, batch: ViewBatch, z: Tensor, lambda_sup: float, lambda_ssl: float
    ) -> ObjectiveOutput:
        """``λ1 · SupCon + λ2 · NT-Xent`` from one logit matrix; both parts always logged."""
        parts = self.supcon.with_ntxent(z, batch.labels, batch.groups, lambda_sup, lambda_ssl)
        return ObjectiveOutput(parts.loss, {"sup": parts.sup, "ssl": parts.ssl})
