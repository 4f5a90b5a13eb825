"""SupCon, the supervised contrastive loss in its ``L_out`` form (Khosla et al. 2020,
"Supervised Contrastive Learning", NeurIPS), with unlabelled samples and patient-aware negatives.

For anchor view ``i`` of ``N*V`` L2-normalised views ``z`` and temperature ``tau``:

    l_i = -(1/|P(i)|) sum_{p in P(i)} [ z_i.z_p/tau - log sum_{a in A(i)} exp(z_i.z_a/tau) ]

with ``P(i)`` the other views of the same sample plus every view whose label equals ``i``'s label
``>= 0`` (plus same-patient views if ``group_positives``). Unlabelled samples (label ``-1``) are
never positives of one another, so their ``l_i`` is NT-Xent's. ``A(i)`` is every other view except
same-patient views that are not positives. The loss is the mean of ``l_i`` over all anchors. The
paper's ``L_out`` (mean outside the log) beat ``L_in`` by 11 points top-1 on ImageNet.
"""

from __future__ import annotations

from torch import Tensor

from medcl.losses._contrastive import MaskedContrastiveLoss


class SupConLoss(MaskedContrastiveLoss):
    """Supervised contrastive loss (``L_out``); ``labels=None`` gives exactly NT-Xent.

    Args:
        temperature: softmax temperature ``tau`` (> 0).
        group_positives: count images of the same patient as positives (MICLe, Azizi et al. 2021).
        gather: under ``torch.distributed``, use every rank's views as candidates.
    """

    def forward(
        self, features: Tensor, labels: Tensor | None = None, groups: Tensor | None = None
    ) -> Tensor:
        """Compute the loss.

        Args:
            features: ``(N, V, D)`` projections, V >= 2 views per sample, not normalised.
            labels: ``(N,)`` int class labels, ``-1`` for unlabelled, or ``None``.
            groups: ``(N,)`` int patient ids, or ``None``.

        Returns:
            Scalar loss (the global mean over all ranks' anchors).
        """
        return self._mean_anchor_loss(features, labels, groups, label_positives=True)
