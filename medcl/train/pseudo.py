"""The online classifier of pretraining that pseudo-labels unlabelled images (``method.pseudo``).

SSCL with pseudo-labels (docs/objectives.md)::

    L = λ1 · SupCon(labelled ∪ confidently pseudo-labelled) + λ2 · L_ssl(all) + w_h · CE_w(head)

A linear head ``h`` on the encoder features ``f(x)`` is trained at every step with the
class-weighted cross-entropy ``CE_w`` on the labelled images' views (``w_c = N / (C · n_c)`` over
the ``n_c`` labelled training images of each of the ``C`` classes present, as fine-tuning weighs
its loss; ``w_h`` = ``method.pseudo.head_weight``). By default it reads the features detached
(``method.pseudo.detach``): the head is a probe that labels, not a supervised loss on the
encoder, so the representation is still shaped by the contrastive terms alone, and the head's
mistakes reach the encoder only through the pseudo-labels that pass the threshold.

An image's prediction is the head's softmax averaged over its ``V`` views (from the head before
this step's update, without gradient), and with ``method.pseudo.pool_patients`` averaged over the
batch's images of the same patient. :func:`medcl.losses.pseudo.select_pseudo_labels` then keeps
the confident unlabelled ones, capped by the ramp (:func:`pseudo_share`) and, with
``method.pseudo.balance``, per class.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from medcl.config import PseudoLabelConfig
from medcl.losses.pseudo import pool_by_patient, select_pseudo_labels


def pseudo_share(step: int, total_steps: int, start: float, ramp: float) -> float:
    """The share ``r`` of the confident candidates that may be pseudo-labelled at step ``k``.

    With ``T`` optimiser steps, ``s`` = ``method.pseudo.start`` and ``w`` = ``method.pseudo.ramp``::

        r(k) = 0                              for k < s·T   (no pseudo-label yet)
        r(k) = min(1, (k − s·T) / (w·T))      for k ≥ s·T   (w > 0: linear, 0 at k = s·T)
        r(k) = 1                              for k ≥ s·T   (w = 0)

    Args:
        step: Optimiser steps taken, ``k``.
        total_steps: ``T``.
        start: ``s``, in [0, 1).
        ramp: ``w``, in [0, 1].

    Returns:
        ``r`` in [0, 1].
    """
    begin = start * total_steps
    if step < begin:
        return 0.0
    if ramp <= 0:
        return 1.0
    return min(1.0, (step - begin) / (ramp * total_steps))


def class_weights(counts: Tensor) -> Tensor:
    """``w_c = N / (C · n_c)`` over the classes present (``n_c > 0``), 0 for the others.

    Args:
        counts: ``(C,)`` labelled images per class.

    Returns:
        ``(C,)`` float weights (all 0 when no class is present).
    """
    counts = counts.double()
    present = counts > 0
    weights = counts.sum() / (present.sum().clamp_min(1) * counts.clamp_min(1))
    return torch.where(present, weights, 0.0)


class PseudoStep(NamedTuple):
    """One step's pseudo-labelling.

    Attributes:
        labels: ``(B,)`` the SupCon labels (true ∪ pseudo).
        head_loss: The head's class-weighted cross-entropy on the labelled views (0 without
            labelled images), unweighted.
        logs: Detached values to log: ``pseudo_rate`` (pseudo-labelled share of the unlabelled
            images), ``pseudo_confident`` (their share above the threshold, before ramp and cap),
            ``pseudo_head_ce``, and ``pseudo_head_acc`` (the head's accuracy on the batch's
            labelled images, before this step's update) when the batch has labelled images.
    """

    labels: Tensor
    head_loss: Tensor
    logs: dict[str, Tensor]


class PseudoLabeller(nn.Module):
    """The online linear head and the pseudo-labels it gives (see the module docstring).

    Args:
        in_dim: Encoder feature size.
        n_classes: Number of classes.
        options: ``method.pseudo``.

    Attributes:
        head: The linear classifier on the encoder features.
        class_counts: ``(C,)`` labelled training images per class (set by
            :meth:`set_class_counts`; while all zero, the batch's labelled images are counted).
    """

    class_counts: Tensor

    def __init__(self, in_dim: int, n_classes: int, options: PseudoLabelConfig) -> None:
        super().__init__()
        self.options = options
        self.head = nn.Linear(in_dim, n_classes)
        self.register_buffer(
            "class_counts", torch.zeros(n_classes, dtype=torch.long), persistent=False
        )

    def set_class_counts(self, labels: Tensor) -> None:
        """Count the labelled training images per class.

        Args:
            labels: Class indices of the training images, −1 for unlabelled.
        """
        labels = labels[labels >= 0].to(torch.long)
        counts = torch.bincount(labels, minlength=self.class_counts.numel())
        self.class_counts.copy_(counts[: self.class_counts.numel()])

    def logits(self, features: Tensor) -> Tensor:
        """The head's logits of encoder features, in the head's precision, autocast off."""
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.head(features.to(self.head.weight.dtype))

    def forward(
        self, features: Tensor, labels: Tensor, groups: Tensor, n_views: int, share: float
    ) -> PseudoStep:
        """Predict, select the pseudo-labels, and the head's loss.

        Args:
            features: ``(B·V, F)`` encoder features of the views, sample-major.
            labels: ``(B,)`` true class indices, −1 for unlabelled.
            groups: ``(B,)`` patient ids.
            n_views: ``V``.
            share: The ramp's ``r`` at this step (:func:`pseudo_share`).

        Returns:
            The SupCon labels, the head's loss and the values to log.
        """
        o = self.options
        labels = labels.to(device=features.device, dtype=torch.long)
        groups = groups.to(features.device)
        logits = self.logits(features.detach() if o.detach else features)
        log_probs = torch.log_softmax(logits, dim=1)
        with torch.no_grad():
            probs = log_probs.exp().view(labels.shape[0], n_views, -1).mean(dim=1)
            if o.pool_patients:
                probs = pool_by_patient(probs, groups)
        labelled = labels >= 0
        batch_counts = torch.bincount(labels[labelled], minlength=self.class_counts.numel())
        counts = torch.where(self.class_counts.sum() > 0, self.class_counts, batch_counts)
        chosen = select_pseudo_labels(
            probs,
            labels,
            threshold=o.threshold,
            share=share,
            class_counts=counts if o.balance else None,
        )
        # class-weighted cross-entropy over the labelled views: Σ w_y·(−log p_y) / Σ w_y
        view_labels = labels.repeat_interleave(n_views)
        rows = view_labels >= 0
        target = view_labels.clamp_min(0)
        w = class_weights(counts).to(log_probs.dtype)[target] * rows
        nll = -log_probs.gather(1, target[:, None]).squeeze(1)
        head_loss = (w * nll).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
        unlabelled = (~labelled).sum().clamp_min(1)
        logs = {
            "pseudo_rate": chosen.kept.sum() / unlabelled,
            "pseudo_confident": chosen.confident.sum() / unlabelled,
            "pseudo_head_ce": head_loss.detach(),
        }
        if bool(labelled.any()):
            hits = probs.argmax(dim=1)[labelled] == labels[labelled]
            logs["pseudo_head_acc"] = hits.double().mean()
        return PseudoStep(chosen.labels, head_loss, logs)
