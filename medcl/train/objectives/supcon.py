"""The SupCon component of every objective: SupCon over the labelled anchors.

Supervised contrastive loss in its ``L_out`` form (Khosla et al. 2020, "Supervised Contrastive
Learning", NeurIPS, Eq. 2), over the online projections ``z`` of all ``B·V`` views (L2-normalised,
temperature ``τ``), averaged over the labelled anchors only::

    l_i = −(1/|P(i)|) Σ_{p ∈ P(i)} log( exp(z_i·z_p/τ) / Σ_{a ∈ A(i)} exp(z_i·z_a/τ) )

    SupCon = (1/|L|) Σ_{i ∈ L} l_i

``L`` the views with a label ``≥ 0``, ``P(i)`` the other views of the same image and every view with
``i``'s label (plus same-patient views with ``method.group_positives``), ``A(i)`` every other view
except same-patient views that are not positives. The term is 0 in a batch without labels. It is
returned unweighted; :meth:`~medcl.train.objectives.base.Objective.combine` weights it by λ1
(``method.lambda_sup``, after its ramp). SimCLR reads it together with NT-Xent from one similarity
matrix (:meth:`SupCon.parts`, :class:`~medcl.losses.SSCLLoss`).

Multi-label findings (labels ``(B, K)`` in ``{1, 0, −1}``: present, absent, unknown): the term is
:class:`~medcl.losses.MultiLabelSupConLoss`, the same ``L_out`` with every candidate view weighted
by the Jaccard overlap of the two images' present findings, counted over the findings known for
both images (an unknown finding is left out of that pair's overlap, never read as absent)::

    l_i = −(1/Σ_p w_ip) Σ_{p ∈ A(i)} w_ip log( exp(z_i·z_p/τ) / Σ_{a ∈ A(i)} exp(z_i·z_a/τ) )

averaged over the anchors with at least one known finding; an image whose findings are all unknown
is only a negative. One-hot findings give exactly the single-label term above (weights 1 for the
same class, 0 otherwise). With NT-Xent asked too, the multi-label term and NT-Xent are two passes
over the logits, not one (the fused kernel's positives are key equalities, which weighted
positives are not); single labels keep the fused path.
"""

from __future__ import annotations

from torch import Tensor, nn

from medcl.losses import MultiLabelSupConLoss, SSCLLoss, SSCLParts


class SupCon(nn.Module):
    """SupCon (``L_out``) over the labelled anchors, patient-aware.

    Args:
        temperature: ``τ`` (``method.temperature``).
        group_positives: Same-patient views are positives (``method.group_positives``).

    Attributes:
        loss: The contrastive loss that computes it (and NT-Xent, when asked).
        multilabel: The loss for ``(B, K)`` finding labels (no state: checkpoints are unchanged).
    """

    def __init__(self, temperature: float, group_positives: bool) -> None:
        super().__init__()
        self.loss = SSCLLoss(temperature, group_positives)
        self.multilabel = MultiLabelSupConLoss(temperature, group_positives)

    def forward(self, z: Tensor, labels: Tensor, groups: Tensor) -> Tensor:
        """The SupCon term of a step, unweighted (NT-Xent is not computed).

        Args:
            z: ``(B, V, D)`` projections, not normalised.
            labels: ``(B,)`` class indices, −1 for unlabelled; or ``(B, K)`` finding states.
            groups: ``(B,)`` patient ids.

        Returns:
            The term, differentiable; its value is the global one over all ranks.
        """
        if labels.ndim == 2:
            return self.multilabel(z, labels, groups)
        sup = self.loss(z, labels, groups, ssl=False).sup
        assert sup is not None
        return sup

    def parts(
        self, z: Tensor, labels: Tensor | None, groups: Tensor, *, sup: bool, ssl: bool
    ) -> SSCLParts:
        """SupCon and/or NT-Xent over all anchors, from one similarity matrix, unweighted.

        Args:
            z: ``(B, V, D)`` projections, not normalised.
            labels: ``(B,)`` class indices, −1 for unlabelled (``None``: all unlabelled); or
                ``(B, K)`` finding states (SupCon then from :attr:`multilabel`, NT-Xent apart).
            groups: ``(B,)`` patient ids.
            sup: Compute SupCon.
            ssl: Compute NT-Xent.

        Returns:
            The parts asked for (``None`` for the other).
        """
        if labels is None or labels.ndim == 1:
            return self.loss(z, labels, groups, sup=sup, ssl=ssl)
        if not (sup or ssl):
            raise ValueError("SupCon.parts: ask for at least one part (sup=True or ssl=True)")
        nt_xent = self.loss(z, None, groups, sup=False, ssl=True).ssl if ssl else None
        return SSCLParts(sup=self.forward(z, labels, groups) if sup else None, ssl=nt_xent)
