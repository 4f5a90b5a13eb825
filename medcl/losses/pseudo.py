"""Which unlabelled images of a batch join the SupCon term, and with which pseudo-label.

The pseudo-label extension of SSCL (in the spirit of CoMatch, Li et al. 2021, "CoMatch:
Semi-supervised Learning with Contrastive Graph Regularization", ICCV, and SimMatch, Zheng et al.
2022, CVPR: confident predictions decide which unlabelled images are positives of each other)::

    L = λ1 · SupCon(labelled ∪ confidently pseudo-labelled) + λ2 · L_ssl(all)

For the ``B`` images of a batch with class probabilities ``q_b`` (no gradient), true labels
``y_b`` (−1 unlabelled), the threshold ``τ_p``, the ramp share ``r ∈ [0, 1]`` and the labelled
images per class ``n_c`` (``N = Σ_c n_c``):

1. candidates ``U = {b : y_b = −1, max_c q_bc ≥ τ_p}``, each with its class ``ŷ_b = argmax q_b``;
2. the ramp allows ``M = ⌊r · |U|⌋`` of them;
3. with balance, class ``c`` keeps its ``m_c = ⌊n_c · M / N⌋`` most confident candidates (at most
   its labelled share of the allowed ones); without, the ``M`` most confident candidates are kept
   (ties: the lower index first);
4. a kept image takes ``ŷ_b`` as its SupCon label; every other image keeps ``y_b``. A labelled
   image is never a candidate, so a true label is never overridden.

Everything stays on the device (no host synchronisation). Under DDP each rank selects within its
own part of the batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class PseudoLabels(NamedTuple):
    """The outcome of :func:`select_pseudo_labels`.

    Attributes:
        labels: ``(B,)`` the SupCon labels: the true ones, and ``ŷ_b`` for the kept images.
        confident: ``(B,)`` the candidates ``U`` (unlabelled and confident).
        kept: ``(B,)`` the candidates that were pseudo-labelled.
    """

    labels: Tensor
    confident: Tensor
    kept: Tensor


def select_pseudo_labels(
    probs: Tensor,
    labels: Tensor,
    *,
    threshold: float,
    share: float,
    class_counts: Tensor | None = None,
) -> PseudoLabels:
    """The SupCon labels of a batch: true labels plus confident, capped pseudo-labels.

    Args:
        probs: ``(B, C)`` class probabilities of each image (rows sum to 1; no gradient needed).
        labels: ``(B,)`` true class indices, −1 for unlabelled.
        threshold: ``τ_p``.
        share: The ramp's ``r``, the share of the candidates that may be kept.
        class_counts: ``(C,)`` labelled images per class (``n_c``) for the per-class cap, or
            ``None`` for no cap. All zero: equal shares.

    Returns:
        The labels and the masks (see the module docstring for the rule).
    """
    probs = probs.detach()
    n_classes = probs.shape[1]
    conf, guess = probs.max(dim=1)
    confident = (labels < 0) & (conf >= threshold)
    # rank the candidates by confidence, ties by index (a stable sort of -conf)
    order = torch.sort(torch.where(confident, -conf, torch.inf), stable=True).indices
    sorted_conf = confident[order]
    budget = torch.floor(confident.sum().double() * share).long()
    if class_counts is None:
        rank = torch.cumsum(sorted_conf.long(), 0) - 1
        keep_sorted = sorted_conf & (rank < budget)
    else:
        counts = class_counts.to(device=probs.device, dtype=torch.long)
        counts = torch.where(counts.sum() > 0, counts, torch.ones_like(counts))
        caps = (counts * budget) // counts.sum()  # ⌊n_c · M / N⌋, exact in integers
        one_hot = torch.nn.functional.one_hot(guess[order], n_classes) * sorted_conf[:, None]
        rank = (torch.cumsum(one_hot, 0) * one_hot).sum(1) - 1  # rank within its class
        keep_sorted = sorted_conf & (rank < caps[guess[order]])
    kept = torch.zeros_like(confident)
    kept[order] = keep_sorted
    return PseudoLabels(torch.where(kept, guess, labels), confident, kept)


def pool_by_patient(probs: Tensor, groups: Tensor) -> Tensor:
    """Each image's probabilities averaged with those of the batch's images of its patient.

    Args:
        probs: ``(B, C)`` class probabilities.
        groups: ``(B,)`` patient ids.

    Returns:
        ``(B, C)``: ``q̄_b = mean{q_b' : g_b' = g_b}``.
    """
    same = (groups[:, None] == groups[None, :]).to(probs.dtype)
    return (same @ probs) / same.sum(dim=1, keepdim=True)
