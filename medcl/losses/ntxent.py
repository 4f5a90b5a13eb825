"""NT-Xent, the SimCLR loss (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML), with patient-aware negatives.

For anchor view ``i`` of ``N*V`` L2-normalised views ``z`` and temperature ``tau``:

    l_i = -(1/|P(i)|) sum_{p in P(i)} [ z_i.z_p/tau - log sum_{a in A(i)} exp(z_i.z_a/tau) ]

with ``P(i)`` the other views of the same sample (plus same-patient views if ``group_positives``)
and ``A(i)`` every other view except same-patient views that are not positives (never negatives).
With ``V = 2`` and no groups this is exactly SimCLR's NT-Xent. The loss is the mean of ``l_i`` over
all anchors.
"""

from __future__ import annotations

from torch import Tensor

from medcl.losses._contrastive import MaskedContrastiveLoss


class NTXentLoss(MaskedContrastiveLoss):
    """Normalised temperature-scaled cross-entropy (SimCLR), multi-view and patient-aware.

    Args:
        temperature: softmax temperature ``tau`` (> 0).
        group_positives: count images of the same patient as positives (MICLe, Azizi et al. 2021).
        gather: under ``torch.distributed``, use every rank's views as candidates (gradients
            flow across ranks; the DDP-averaged gradient equals the single-process one).

    Example:
        >>> loss = NTXentLoss(temperature=0.1)
        >>> value = loss(torch.randn(8, 2, 128))  # doctest: +SKIP
    """

    def forward(
        self, features: Tensor, labels: Tensor | None = None, groups: Tensor | None = None
    ) -> Tensor:
        """Compute the loss.

        Args:
            features: ``(N, V, D)`` projections, V >= 2 views per sample, not normalised.
            labels: ignored (accepted so that all losses share one signature).
            groups: ``(N,)`` int patient ids, or ``None``.

        Returns:
            Scalar loss (the global mean over all ranks' anchors).
        """
        del labels
        return self._mean_anchor_loss(features, None, groups, label_positives=False)
