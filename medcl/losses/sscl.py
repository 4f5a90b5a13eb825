"""The SSCL hybrid: SupCon on labelled anchors plus NT-Xent on all anchors, from one similarity
matrix.

    L = lambda_sup * mean_{i : y_i >= 0} l_i^SupCon + lambda_ssl * mean_{all i} l_i^NT-Xent

with ``l_i`` the SupCon ``L_out`` term (Khosla et al. 2020) for the respective positive sets (see
:mod:`medcl.losses.supcon` and :mod:`medcl.losses.ntxent`); the first term is 0 when no sample is
labelled. Both terms share the logit matrix and the pair relations; they also share the
log-denominator unless patient ids are given without ``group_positives`` (then same-patient
same-label views are in SupCon's ``A(i)`` as positives but excluded from NT-Xent's).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from medcl.losses._contrastive import (
    MaskedContrastiveLoss,
    anchor_losses,
    build_batch,
    finalise,
    log_denominator,
)
from medcl.losses._masks import pair_masks


class SSCLParts(NamedTuple):
    """The SSCL loss and its two (detached, global) terms before weighting.

    Attributes:
        loss: ``lambda_sup * sup + lambda_ssl * ssl``, differentiable.
        sup: mean SupCon term over labelled anchors (0 without labelled samples).
        ssl: mean NT-Xent term over all anchors.
    """

    loss: Tensor
    sup: Tensor
    ssl: Tensor


class SSCLLoss(MaskedContrastiveLoss):
    """Semi-supervised contrastive loss: weighted SupCon (labelled) + NT-Xent (all).

    After each call, ``last_parts`` holds ``{"sup": ..., "ssl": ...}`` (detached, global, before
    weighting) for logging; :meth:`forward_parts` returns them directly.

    Args:
        temperature: softmax temperature ``tau`` (> 0), shared by both terms.
        lambda_sup: weight of the SupCon term.
        lambda_ssl: weight of the NT-Xent term.
        group_positives: count images of the same patient as positives in both terms.
        gather: under ``torch.distributed``, use every rank's views as candidates.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        lambda_sup: float = 1.0,
        lambda_ssl: float = 1.0,
        group_positives: bool = False,
        gather: bool = True,
    ) -> None:
        super().__init__(temperature, group_positives=group_positives, gather=gather)
        self.lambda_sup = float(lambda_sup)
        self.lambda_ssl = float(lambda_ssl)
        self.last_parts: dict[str, Tensor] = {}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lambda_sup={self.lambda_sup}, lambda_ssl={self.lambda_ssl}"

    def forward_parts(
        self, features: Tensor, labels: Tensor | None = None, groups: Tensor | None = None
    ) -> SSCLParts:
        """Compute the loss and its two terms.

        Args:
            features: ``(N, V, D)`` projections, V >= 2 views per sample, not normalised.
            labels: ``(N,)`` int class labels, ``-1`` for unlabelled, or ``None`` (all unlabelled).
            groups: ``(N,)`` int patient ids, or ``None``.

        Returns:
            The loss and its global, detached terms.
        """
        with torch.autocast(device_type=features.device.type, enabled=False):
            batch = build_batch(
                features, labels, groups, temperature=self.temperature, gather=self.gather
            )
            logits = batch.logits
            ssl_masks = pair_masks(
                batch.relations, label_positives=False, group_positives=self.group_positives
            )
            ssl_denom = log_denominator(logits, ssl_masks)
            ssl_local = anchor_losses(logits, ssl_masks, ssl_denom).sum() / batch.n_candidates

            sup_local = logits.new_zeros(())
            if batch.anchor_labels is not None and batch.n_labelled is not None:
                sup_masks = pair_masks(
                    batch.relations, label_positives=True, group_positives=self.group_positives
                )
                same_denominator = batch.relations.same_group is None or self.group_positives
                sup_denom = ssl_denom if same_denominator else log_denominator(logits, sup_masks)
                sup_terms = anchor_losses(logits, sup_masks, sup_denom)
                labelled = batch.anchor_labels >= 0
                # no labelled view anywhere: the sum is 0 and so is the term
                labelled_sum = torch.where(labelled, sup_terms, 0.0).sum()
                sup_local = labelled_sum / batch.n_labelled.clamp_min(1)

            weights = logits.new_tensor([self.lambda_sup, self.lambda_ssl])
            loss, parts = finalise(torch.stack([sup_local, ssl_local]), weights, batch.world_size)
        return SSCLParts(loss=loss, sup=parts[0], ssl=parts[1])

    def forward(
        self, features: Tensor, labels: Tensor | None = None, groups: Tensor | None = None
    ) -> Tensor:
        """Compute the loss of :meth:`forward_parts` (same arguments) and fill ``last_parts``.

        Returns:
            Scalar loss, equal on every rank to the loss of the whole (gathered) batch.
        """
        out = self.forward_parts(features, labels, groups)
        self.last_parts = {"sup": out.sup, "ssl": out.ssl}
        return out.loss
