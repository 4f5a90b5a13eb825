"""Binary cross-entropy per finding, unknown findings masked out: the loss of a multi-label head.

Notation: ``N`` images, ``K`` findings, logits ``z_ik``, finding states ``y_ik ∈ {1, 0, −1}``
(present, absent, unknown; :mod:`medcl.data.findings`), per-finding positive weights ``w_k``,
``σ`` the logistic sigmoid. Each known entry costs

    ℓ_ik = −[ w_k · y_ik · log σ(z_ik) + (1 − y_ik) · log(1 − σ(z_ik)) ]

(PyTorch's ``binary_cross_entropy_with_logits`` with ``pos_weight``), and the loss is the mean over
the **known** entries, ``L = Σ_{y_ik ≥ 0} ℓ_ik / #{(i, k) : y_ik ≥ 0}`` (0 when none is known). An
unknown entry neither adds to the sum nor to the count: it changes nothing, whatever the logit.

The positive weight of finding ``k`` balances its two states among the known labelled training
values: ``w_k = Q_k / P_k`` with ``P_k = #{y_ik = 1}``, ``Q_k = #{y_ik = 0}``, so that the
positives and the negatives of a finding weigh the same in total (the multi-label analogue of the
class weights ``N / (C · n_c)`` of a single-label head). It is clipped to
``[1 / POS_WEIGHT_MAX, POS_WEIGHT_MAX]``: with few labels a rare finding may have one or two
positives, and an uncapped weight (ChestX-ray14's rarest finding has ``Q/P ≈ 500``) would let those
few images dominate the gradient. A finding without a known positive or without a known negative
gets ``w_k = 1`` (nothing to balance).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

POS_WEIGHT_MAX = 20.0
"""The largest per-finding positive weight (and ``1 / POS_WEIGHT_MAX`` the smallest)."""


def pos_weights(states: np.ndarray | Tensor) -> Tensor:
    """``w_k = clip(Q_k / P_k, 1/POS_WEIGHT_MAX, POS_WEIGHT_MAX)`` of ``(N, K)`` finding states
    (module docstring); 1 for a finding lacking a known positive or negative.

    Returns:
        ``(K,)`` float32 weights.
    """
    y = np.asarray(states)
    if y.ndim != 2:
        raise ValueError(f"finding states must be (N, K), got shape {y.shape}")
    pos = (y == 1).sum(0).astype(np.float64)
    neg = (y == 0).sum(0).astype(np.float64)
    w = np.ones(y.shape[1])
    both = (pos > 0) & (neg > 0)
    w[both] = np.clip(neg[both] / pos[both], 1.0 / POS_WEIGHT_MAX, POS_WEIGHT_MAX)
    return torch.tensor(w, dtype=torch.float32)


def masked_bce(logits: Tensor, states: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """The mean binary cross-entropy over the known entries (module docstring).

    Args:
        logits: ``(N, K)`` logits.
        states: ``(N, K)`` targets: 1 present, 0 absent, −1 unknown (masked); a float target in
            ``[0, 1]`` is also accepted where known.
        pos_weight: ``(K,)`` positive weights, or ``None`` (all 1).

    Returns:
        The scalar loss (0, with a gradient path, when no entry is known).
    """
    if logits.ndim != 2 or states.shape != logits.shape:
        raise ValueError(
            f"logits and finding states must both be (N, K); got {tuple(logits.shape)}, "
            f"{tuple(states.shape)}"
        )
    known = states >= 0
    target = states.clamp_min(0).to(logits.dtype)
    pw = None if pos_weight is None else pos_weight.to(logits.device, logits.dtype)
    each = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")
    each = torch.where(known, each, torch.zeros_like(each))
    return each.sum() / known.sum().clamp_min(1)
