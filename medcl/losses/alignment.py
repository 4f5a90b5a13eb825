"""Distribution alignment of pseudo-label targets (ReMixMatch).

Berthelot et al. 2020, "ReMixMatch: Semi-Supervised Learning with Distribution Alignment and
Augmentation Anchoring", ICLR, Section 3.2. A model trained on a few labelled images tends to
predict some classes far more often than they occur on the unlabelled pool, and confidence-masked
pseudo-labels then reinforce that imbalance (confirmation bias). Distribution alignment rescales
each target so that, on average, the targets follow the class distribution of the labelled data::

    p̃  = mean of the last k batch means  (1/U) Σ_u q_u      (the model's marginal on unlabelled)
    q_u ← Normalize(q_u · p_target / p̃)                      Normalize(v) = v / Σ_c v_c

``p̃`` is a moving average over the last ``k`` training steps (the paper uses 128), updated with
the current batch before the targets are rescaled; at step ``t < k`` it is the mean of the ``t``
batch means seen so far. ``p̃`` is clamped below at ``1e-8`` so that a class the model never
predicts cannot divide by zero. The targets are fixed (no gradient), as the pseudo-labels are.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

P_FLOOR = 1e-8
"""Lower clamp of the model's running class marginal ``p̃``."""


class DistributionAlignment(nn.Module):
    """``q ← Normalize(q · p_target / p̃)`` with ``p̃`` the mean of the last ``window`` batch means.

    Args:
        target: ``(C,)`` class distribution the targets are aligned to (positive, summing to 1),
            e.g. the labelled class frequencies.
        window: ``k``, the number of recent steps whose mean prediction forms ``p̃``.

    Raises:
        ValueError: A target that is not a positive distribution, or ``window < 1``.
    """

    history: Tensor
    target: Tensor

    def __init__(self, target: Tensor, window: int = 128) -> None:
        super().__init__()
        target = torch.as_tensor(target, dtype=torch.float32)
        if target.ndim != 1 or not bool((target > 0).all()):
            raise ValueError(f"target must be a (C,) vector of positive values; got {target}")
        if abs(float(target.sum()) - 1.0) > 1e-4:
            raise ValueError(f"target must sum to 1; got {float(target.sum())}")
        if window < 1:
            raise ValueError(f"window must be >= 1; got {window}")
        self.window = int(window)
        self.register_buffer("target", target)
        self.register_buffer("history", torch.zeros(self.window, target.shape[0]))
        self.seen = 0

    def extra_repr(self) -> str:
        return f"classes={self.target.shape[0]}, window={self.window}"

    @property
    def marginal(self) -> Tensor:
        """``p̃``: the mean of the stored batch means (uniform before the first update)."""
        n = min(self.seen, self.window)
        if n == 0:
            return torch.full_like(self.target, 1.0 / self.target.shape[0])
        return self.history[:n].mean(0)

    @torch.no_grad()
    def forward(self, q: Tensor) -> Tensor:
        """Record the batch mean of ``q`` in the running marginal, then return the aligned ``q``.

        Args:
            q: ``(U, C)`` predicted class probabilities of unlabelled images (``U ≥ 1``).

        Returns:
            ``(U, C)`` aligned probabilities, each row summing to 1.
        """
        if q.ndim != 2 or q.shape[1] != self.target.shape[0] or q.shape[0] == 0:
            raise ValueError(
                f"q must be (U, {self.target.shape[0]}) with U >= 1; got {tuple(q.shape)}"
            )
        q = q.float()
        self.history[self.seen % self.window] = q.mean(0)
        self.seen += 1
        scaled = q * (self.target / self.marginal.clamp_min(P_FLOOR))
        return scaled / scaled.sum(1, keepdim=True)


def smoothed_frequencies(labels: Tensor, n_classes: int) -> Tensor:
    """``(n_c + 1) / (N + C)``: the class frequencies of ``labels`` with add-one smoothing, so
    that a class without a labelled image keeps a small positive share."""
    counts = torch.bincount(labels.long(), minlength=n_classes).double()
    return ((counts + 1) / (counts.sum() + n_classes)).float()
