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
from torch import Tensor

from medcl.losses.findings import masked_bce
from medcl.losses.fixmatch import FixMatchLoss, pool_by_group


def finding_pseudo_labels(p: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """``(ŷ, m)`` of per-finding probabilities ``p`` ``(U, K)``: ``ŷ = 1(p ≥ τ)`` and the
    confidence mask ``m = 1(p ≥ τ or p ≤ 1 − τ)``, both float."""
    hi = p >= threshold
    return hi.to(p.dtype), (hi | (p <= 1.0 - threshold)).to(p.dtype)


class FindingsFixMatchLoss(FixMatchLoss):
    """FixMatch per finding (module docstring); ``threshold`` ``τ`` in ``[0.5, 1]``, ``lambda_u``
    ``λ_u ≥ 0`` the weight of the unsupervised term (no distribution alignment).

    :meth:`forward` takes ``(B, K)`` labelled logits and their ``(B, K)`` finding ``states`` (−1
    unknown: masked), ``(U, K)`` weak (detached) and strong unlabelled logits, the ``(K,)``
    ``pos_weight`` of the supervised term (or ``None``) and the ``(U,)`` ``groups`` to pool the
    targets over (or ``None``); it returns ``(loss, logs)`` with detached ``sup``, ``unsup``
    (before ``λ_u``) and ``mask_rate`` (the share of confident entries ``m_uk``; with ``U = 0``
    the last two are 0).
    """

    def __init__(self, threshold: float = 0.95, lambda_u: float = 1.0) -> None:
        if threshold < 0.5:
            raise ValueError(
                f"threshold must lie in [0.5, 1] for findings (a finding is confident when "
                f"p >= threshold or p <= 1 - threshold); got {threshold}"
            )
        super().__init__(threshold, lambda_u)

    def forward(  # type: ignore[override]
        self,
        logits_lab: Tensor,
        states: Tensor,
        logits_weak: Tensor,
        logits_strong: Tensor,
        pos_weight: Tensor | None = None,
        groups: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss and its parts (class docstring)."""
        shapes = [tuple(t.shape) for t in (logits_lab, logits_weak, logits_strong)]
        if logits_weak.ndim != 2 or shapes[1] != shapes[2] or shapes[0][1:] != shapes[1][1:]:
            raise ValueError(f"logits must be (B, K), (U, K) and (U, K); got {shapes}")
        sup = masked_bce(logits_lab.float(), states, pos_weight)
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
