"""The SupCon component of every objective: λ1 · SupCon over the labelled anchors.

Supervised contrastive loss in its ``L_out`` form (Khosla et al. 2020, "Supervised Contrastive
Learning", NeurIPS, Eq. 2), over the online projections ``z`` of all ``B·V`` views (L2-normalised,
temperature ``τ``), averaged over the labelled anchors only::

    l_i = −(1/|P(i)|) Σ_{p ∈ P(i)} log( exp(z_i·z_p/τ) / Σ_{a ∈ A(i)} exp(z_i·z_a/τ) )

    SupCon = (1/|L|) Σ_{i ∈ L} l_i

``L`` the views with a label ``≥ 0``, ``P(i)`` the other views of the same image and every view with
``i``'s label (plus same-patient views with ``method.group_positives``), ``A(i)`` every other view
except same-patient views that are not positives. The term is 0 in a batch without labels. It is
weighted by λ1 (``method.lambda_sup``, after its ramp) for every method; SimCLR's NT-Xent shares
its similarity matrix (:meth:`SupCon.with_ntxent`, :class:`~medcl.losses.SSCLLoss`).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from medcl.losses import SSCLLoss, SSCLParts


class SupConValue(NamedTuple):
    """The SupCon term of a step.

    Attributes:
        loss: The term, differentiable (the value to weight by λ1).
        value: The same, detached and global over ranks, for logging.
    """

    loss: Tensor
    value: Tensor


class SupCon(nn.Module):
    """SupCon (``L_out``) over the labelled anchors, patient-aware.

    Args:
        temperature: ``τ`` (``method.temperature``).
        group_positives: Same-patient views are positives (``method.group_positives``).
    """

    def __init__(self, temperature: float, group_positives: bool) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.group_positives = bool(group_positives)
        self.loss = SSCLLoss(self.temperature, 1.0, 0.0, self.group_positives)

    def forward(self, z: Tensor, labels: Tensor, groups: Tensor) -> SupConValue:
        """The SupCon term of a step.

        Args:
            z: ``(B, V, D)`` projections, not normalised.
            labels: ``(B,)`` class indices, −1 for unlabelled.
            groups: ``(B,)`` patient ids.

        Returns:
            The term and its detached value.
        """
        parts = self.loss.forward_parts(z, labels, groups)
        return SupConValue(parts.loss, parts.sup)

    def with_ntxent(
        self, z: Tensor, labels: Tensor, groups: Tensor, lambda_sup: float, lambda_ntxent: float
    ) -> SSCLParts:
        """``λ1 · SupCon + λ2 · NT-Xent`` from one similarity matrix (SimCLR's fused form).

        Args:
            z: ``(B, V, D)`` projections, not normalised.
            labels: ``(B,)`` class indices, −1 for unlabelled.
            groups: ``(B,)`` patient ids.
            lambda_sup: λ1.
            lambda_ntxent: λ2, the weight of NT-Xent over all anchors.

        Returns:
            The weighted loss and both (detached, unweighted) terms.
        """
        fused = SSCLLoss(self.temperature, lambda_sup, lambda_ntxent, self.group_positives)
        return fused.forward_parts(z, labels, groups)
