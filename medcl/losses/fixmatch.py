"""FixMatch's objective: supervised cross-entropy plus confidence-masked pseudo-label consistency.

Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", NeurIPS, Eq. 2-4. For a batch of ``B`` labelled images ``(x_b, y_b)`` and ``μB``
unlabelled images ``u_b``::

    q_b = softmax(f(weak(u_b)))                          (no gradient: a fixed target)
    L   = CE(f(weak(x)), y)  +  λ_u · (1/μB) Σ_b 1(max q_b ≥ τ) · CE(f(strong(u_b)), argmax q_b)

The unsupervised term is averaged over **all** ``μB`` unlabelled images, the masked ones counting
as 0 (the paper's Eq. 4), so its weight shrinks when few pseudo-labels are confident. The optional
class weights apply to the supervised term only, with PyTorch's weighted mean
``Σ w_{y_b} CE_b / Σ w_{y_b}``; pseudo-labels are not re-weighted.

Two optional changes of the target ``q_b``, in this order (both off by default):

- **distribution alignment** (ReMixMatch, :class:`~medcl.losses.alignment.DistributionAlignment`):
  ``q_b ← Normalize(q_b · p_target / p̃)``;
- **pooling over a group** (e.g. the images of one patient, whose finding is the same in each):
  ``q_b ← (1/|G(b)|) Σ_{j ∈ G(b)} q_j`` over the images ``G(b)`` of the batch in ``b``'s group;
  the mask and the pseudo-label are then read from the pooled target, so every image of a group
  gets the same pseudo-label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.losses.alignment import DistributionAlignment


def pool_by_group(q: Tensor, groups: Tensor) -> Tensor:
    """Each row replaced by the mean of the rows of its group: ``q_b ← mean_{j: g_j = g_b} q_j``.

    Args:
        q: ``(U, C)`` values (class probabilities).
        groups: ``(U,)`` integer group of each row.

    Returns:
        ``(U, C)`` pooled rows (a row alone in its group is unchanged).
    """
    if groups.shape != q.shape[:1]:
        raise ValueError(f"groups must be ({q.shape[0]},); got {tuple(groups.shape)}")
    _, inverse = torch.unique(groups, return_inverse=True)
    n = int(inverse.max()) + 1 if len(inverse) else 0
    sums = q.new_zeros(n, q.shape[1]).index_add_(0, inverse, q)
    counts = torch.bincount(inverse, minlength=n).to(q.dtype)
    return (sums / counts[:, None])[inverse]


class FixMatchLoss(nn.Module):
    """``CE(lab) + λ_u · mean_u[1(max q_u ≥ τ) · CE(strong_u, argmax q_u)]`` (Sohn et al. 2020).

    Args:
        threshold: Confidence threshold ``τ`` on ``max q_u`` (the paper uses 0.95); a pseudo-label
            is kept when ``max q_u ≥ τ``, so ``τ = 0`` keeps every unlabelled image.
        lambda_u: Weight ``λ_u`` of the unsupervised term (the paper uses 1); 0 gives plain
            supervised cross-entropy.
        alignment: Distribution alignment of the targets (ReMixMatch), or ``None``. It keeps a
            running mean of the predictions it sees, updated at every call with unlabelled
            images.
    """

    def __init__(
        self,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        alignment: DistributionAlignment | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1]; got {threshold}")
        if lambda_u < 0:
            raise ValueError(f"lambda_u must be >= 0; got {lambda_u}")
        self.threshold = float(threshold)
        self.lambda_u = float(lambda_u)
        self.alignment = alignment

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
        """Compute the FixMatch loss.

        Args:
            logits_lab: ``(B, C)`` logits of the (weakly augmented) labelled images.
            y: ``(B,)`` class indices of the labelled images.
            logits_weak: ``(U, C)`` logits of the weak views of the unlabelled images; only used
                as a detached target (no gradient flows into them).
            logits_strong: ``(U, C)`` logits of the strong views of the same unlabelled images.
            class_weight: Optional ``(C,)`` weights of the supervised cross-entropy.
            groups: Optional ``(U,)`` group of each unlabelled image (e.g. its patient): the
                targets are pooled over each group (:func:`pool_by_group`); ``None`` = no pooling.

        Returns:
            ``(loss, logs)``: the scalar loss and detached scalars ``sup`` (supervised CE),
            ``unsup`` (the masked consistency term before ``λ_u``) and ``mask_rate`` (share of the
            unlabelled images with ``max q_u ≥ τ``). With ``U = 0`` the unsupervised term and the
            mask rate are 0.

        Raises:
            ValueError: Mismatched shapes.
        """
        if logits_lab.ndim != 2 or y.shape != logits_lab.shape[:1]:
            raise ValueError(
                f"logits_lab must be (B, C) and y (B,); got {tuple(logits_lab.shape)}, "
                f"{tuple(y.shape)}"
            )
        if logits_weak.shape != logits_strong.shape or logits_weak.ndim != 2:
            raise ValueError(
                "logits_weak and logits_strong must both be (U, C); got "
                f"{tuple(logits_weak.shape)}, {tuple(logits_strong.shape)}"
            )
        if logits_weak.shape[1] != logits_lab.shape[1]:
            raise ValueError(
                f"class counts differ: {logits_lab.shape[1]} (labelled) vs "
                f"{logits_weak.shape[1]} (unlabelled)"
            )
        weight = None if class_weight is None else class_weight.float()
        sup = F.cross_entropy(logits_lab.float(), y, weight=weight)
        if logits_weak.shape[0] == 0:
            unsup = sup.new_zeros(())
            mask_rate = sup.new_zeros(())
        else:
            with torch.no_grad():
                q = F.softmax(logits_weak.detach().float(), dim=1)
                if self.alignment is not None:
                    q = self.alignment(q)
                if groups is not None:
                    q = pool_by_group(q, groups)
                conf, pseudo = q.max(dim=1)
                mask = (conf >= self.threshold).float()
            ce = F.cross_entropy(logits_strong.float(), pseudo, reduction="none")
            unsup = (mask * ce).mean()
            mask_rate = mask.mean()
        loss = sup + self.lambda_u * unsup
        logs = {"sup": sup.detach(), "unsup": unsup.detach(), "mask_rate": mask_rate}
        return loss, logs
