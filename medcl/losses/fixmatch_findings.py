"""FixMatch per finding: the objective of :mod:`medcl.losses.fixmatch` for a multi-label head.

FixMatch (Sohn et al. 2020, NeurIPS) keeps an unlabelled image when the top class probability of
its weak view reaches ``τ`` and trains the strong view towards that class. With ``K`` independent
findings, each with its own sigmoid, the same rule applies to every finding on its own: finding
``k`` of unlabelled image ``u`` is one binary problem. For ``B`` labelled images (states
``y_bk ∈ {1, 0, −1}``) and ``U`` unlabelled ones::

    p_uk = σ(f(weak(u))_k)                                     (no gradient: a fixed target)
    ŷ_uk = 1 if p_uk ≥ τ,  0 if p_uk ≤ 1 − τ                  (the pseudo-label)
    m_uk = 1(p_uk ≥ τ or p_uk ≤ 1 − τ)                         (confident: kept)
    L    = BCE_known(f(weak(x)), y; w) + λ_u · (1 / (U·K)) Σ_{u,k} m_uk · BCE(f(strong(u))_k, ŷ_uk)

``BCE_known`` is the masked binary cross-entropy with per-finding positive weights
(:func:`medcl.losses.findings.masked_bce`). As in the paper's Eq. 4 the unsupervised term is
averaged over all ``U·K`` entries, the masked ones counting 0; pseudo-labels are not re-weighted.
The confidence of a binary problem is ``max(p, 1 − p)``, so this is exactly FixMatch's rule on the
two-class problem ``[1 − p_uk, p_uk]``; it needs ``τ ≥ 0.5`` (below it both conditions hold for
some ``p`` and "confident" loses its meaning), which is refused otherwise.

Pooling over a group (the images of one patient) averages ``p_uk`` over the group's images in the
batch per finding before the rule (:func:`medcl.losses.fixmatch.pool_by_group`). Distribution
alignment (ReMixMatch) rescales a class distribution that sums to one; per-finding sigmoids do not
form one, so it has no multi-label form here and is refused by the fine-tuning that builds this
loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.losses.findings import masked_bce
from medcl.losses.fixmatch import pool_by_group


def finding_pseudo_labels(p: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """``(ŷ, m)`` of per-finding probabilities ``p`` ``(U, K)``: ``ŷ = 1(p ≥ τ)`` and the
    confidence mask ``m = 1(p ≥ τ or p ≤ 1 − τ)``, both float."""
    hi = p >= threshold
    return hi.to(p.dtype), (hi | (p <= 1.0 - threshold)).to(p.dtype)


class FindingsFixMatchLoss(nn.Module):
    """FixMatch per finding (module docstring).

    Args:
        threshold: ``τ`` in ``[0.5, 1]``.
        lambda_u: ``λ_u ≥ 0``, the weight of the unsupervised term.
    """

    def __init__(self, threshold: float = 0.95, lambda_u: float = 1.0) -> None:
        super().__init__()
        if not 0.5 <= threshold <= 1.0:
            raise ValueError(
                f"threshold must lie in [0.5, 1] for findings (a finding is confident when "
                f"p >= threshold or p <= 1 - threshold); got {threshold}"
            )
        if lambda_u < 0:
            raise ValueError(f"lambda_u must be >= 0; got {lambda_u}")
        self.threshold, self.lambda_u = float(threshold), float(lambda_u)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, lambda_u={self.lambda_u}"

    def forward(
        self,
        logits_lab: Tensor,
        y: Tensor,
        logits_weak: Tensor,
        logits_strong: Tensor,
        class_weight: Tensor | None = None,
        groups: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss and its parts.

        Args:
            logits_lab: ``(B, K)`` logits of the weak views of the labelled images.
            y: ``(B, K)`` their finding states (−1 unknown: masked).
            logits_weak: ``(U, K)`` logits of the weak views of the unlabelled images (detached).
            logits_strong: ``(U, K)`` logits of their strong views.
            class_weight: ``(K,)`` positive weights of the supervised term, or ``None``.
            groups: ``(U,)`` group of each unlabelled image to pool the targets over, or ``None``.

        Returns:
            ``(loss, logs)`` with detached ``sup``, ``unsup`` (before ``λ_u``) and ``mask_rate``
            (the share of confident entries ``m_uk``); with ``U = 0`` the last two are 0.
        """
        if logits_weak.shape != logits_strong.shape or logits_weak.ndim != 2:
            raise ValueError(
                "logits_weak and logits_strong must both be (U, K); got "
                f"{tuple(logits_weak.shape)}, {tuple(logits_strong.shape)}"
            )
        if logits_weak.shape[1] != logits_lab.shape[1]:
            raise ValueError(
                f"finding counts differ: {logits_lab.shape[1]} (labelled) vs "
                f"{logits_weak.shape[1]} (unlabelled)"
            )
        sup = masked_bce(logits_lab.float(), y, class_weight)
        if logits_weak.shape[0] == 0:
            unsup, mask_rate = sup.new_zeros(()), sup.new_zeros(())
        else:
            with torch.no_grad():
                p = torch.sigmoid(logits_weak.detach().float())
                if groups is not None:
                    p = pool_by_group(p, groups)
                target, mask = finding_pseudo_labels(p, self.threshold)
            each = F.binary_cross_entropy_with_logits(
                logits_strong.float(), target, reduction="none"
            )
            unsup = (mask * each).mean()
            mask_rate = mask.mean()
        loss = sup + self.lambda_u * unsup
        return loss, {"sup": sup.detach(), "unsup": unsup.detach(), "mask_rate": mask_rate}
