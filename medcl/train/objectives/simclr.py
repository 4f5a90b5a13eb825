"""SimCLR: NT-Xent over all views (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML), with patient-aware negatives.

For the ``2B`` (generally ``B·V``) L2-normalised projections ``z`` of a batch and temperature ``τ``,
each view ``i`` is pulled towards the other view(s) ``P(i)`` of its image and pushed from the rest
(Eq. 1, averaged over all anchors)::

    L_ssl = (1/BV) Σ_i −(1/|P(i)|) Σ_{p ∈ P(i)} log( exp(z_i·z_p/τ) / Σ_{a ∈ A(i)} exp(z_i·z_a/τ) )

``A(i)`` is every other view except those of the same patient that are not positives (never
negatives; with ``method.group_positives`` they are positives, as in MICLe, Azizi et al. 2021).
SupCon and NT-Xent read the same logits, so :meth:`SimCLR.loss_parts` computes both from one
similarity matrix (:class:`~medcl.losses.SSCLLoss`); the SupCon term is computed (and logged) even
while λ1 is 0, when it costs one more masked sum over that matrix. Both are weighted in
:meth:`~medcl.train.objectives.base.Objective.combine`.
"""

from __future__ import annotations

from torch import Tensor

from medcl.train.objectives.base import LossParts, Objective, ViewBatch


class SimCLR(Objective):
    """NT-Xent over all views; with SupCon, the SSCL hybrid from one similarity matrix.

    Args:
        cfg: The run config.
        encoder: The online encoder.
    """

    def ssl_loss(self, batch: ViewBatch, z: Tensor) -> Tensor:
        """NT-Xent of ``z`` alone (see the module docstring)."""
        ssl = self.supcon.parts(z, None, batch.groups, sup=False, ssl=True).ssl
        assert ssl is not None
        return ssl

    def loss_parts(self, batch: ViewBatch, z: Tensor, with_sup: bool) -> LossParts:
        """SupCon and NT-Xent from one logit matrix, SupCon whatever ``with_sup`` (for its log)."""
        parts = self.supcon.parts(z, batch.supcon_labels, batch.groups, sup=True, ssl=True)
        assert parts.sup is not None and parts.ssl is not None
        return LossParts(parts.sup, parts.ssl)
