"""The patient-aware contrastive loss of medcl: SupCon over the labelled anchors and NT-Xent over
all anchors, each computed only when asked, from one similarity matrix.

For anchor view ``i`` of the ``N*V`` L2-normalised views ``z`` and temperature ``tau`` (the SupCon
``L_out`` form, Khosla et al. 2020, "Supervised Contrastive Learning", NeurIPS, Eq. 2)::

    l_i = -(1/|P(i)|) sum_{p in P(i)} [ z_i.z_p/tau - log sum_{a in A(i)} exp(z_i.z_a/tau) ]

    sup = (1/|L|) sum_{i in L} l_i^SupCon       (L: the views with a label >= 0; 0 when empty)
    ssl = (1/NV)  sum_{all i}  l_i^NT-Xent

- NT-Xent (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
  Representations", ICML): ``P(i)`` is the other views of ``i``'s sample. With ``V = 2`` and no
  patient ids it is exactly SimCLR's loss.
- SupCon: ``P(i)`` adds every view whose label equals ``i``'s label ``>= 0``. It is averaged over
  the labelled anchors only, so the unlabelled images of a batch change it only as negatives.

With patient ids, a same-patient view that is not a positive is never a negative (it leaves
``A(i)``); with ``group_positives`` same-patient views are positives in both parts (MICLe, Azizi
et al. 2021). The parts are returned unweighted: the pretraining objective weights them
(``λ1 · sup + λ2 · ssl``, :meth:`medcl.train.objectives.Objective.combine`). When both are asked
they share the logit matrix and the pair relations, and also the log-denominator unless patient
ids are given without ``group_positives`` (then same-patient same-label views are in SupCon's
``A(i)`` as positives but excluded from NT-Xent's). The distributed rule (gather, gradient
scaling, global values) is in :mod:`medcl.losses._contrastive`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from medcl.losses._contrastive import (
    ContrastiveLossBase,
    build_batch,
    contrastive_shares,
    finalise,
)


class SSCLParts(NamedTuple):
    """The two parts of the contrastive loss, unweighted; ``None`` for a part not asked for.

    Each part is differentiable and has, on every rank, the value of the whole (gathered) batch.

    Attributes:
        sup: SupCon, the mean over the labelled anchors (0 without labelled samples).
        ssl: NT-Xent, the mean over all anchors.
    """

    sup: Tensor | None
    ssl: Tensor | None


class SSCLLoss(ContrastiveLossBase):
    """SupCon over the labelled anchors and NT-Xent over all anchors (see the module docstring).

    Args:
        temperature: Softmax temperature ``tau`` (> 0), shared by both parts.
        group_positives: Count images of the same patient as positives in both parts.
        gather: Under ``torch.distributed``, use every rank's views as candidates (gradients flow
            across ranks; the DDP-averaged gradient equals the single-process one).

    Example:
        >>> loss = SSCLLoss(temperature=0.1)
        >>> parts = loss(torch.randn(8, 2, 128), labels, groups)  # doctest: +SKIP
        >>> total = 0.5 * parts.sup + 1.0 * parts.ssl  # doctest: +SKIP
    """

    def forward(
        self,
        features: Tensor,
        labels: Tensor | None = None,
        groups: Tensor | None = None,
        *,
        sup: bool = True,
        ssl: bool = True,
    ) -> SSCLParts:
        """Compute the parts asked for.

        Args:
            features: ``(N, V, D)`` projections, V >= 2 views per sample, not normalised.
            labels: ``(N,)`` int class labels, ``-1`` for unlabelled, or ``None`` (all unlabelled).
            groups: ``(N,)`` int patient ids, or ``None``.
            sup: Compute the SupCon part.
            ssl: Compute the NT-Xent part.

        Returns:
            The parts, each the global value over all ranks' anchors; ``None`` where not asked.

        Raises:
            ValueError: If no part is asked for, or on malformed inputs.
        """
        if not (sup or ssl):
            raise ValueError("SSCLLoss: ask for at least one part (sup=True or ssl=True)")
        with torch.autocast(device_type=features.device.type, enabled=False):
            batch = build_batch(features, labels, groups, gather=self.gather)
            local = contrastive_shares(
                batch,
                temperature=self.temperature,
                group_positives=self.group_positives,
                sup=sup,
                ssl=ssl,
            )
            names = [name for name in ("sup", "ssl") if name in local]
            values = finalise([local[name] for name in names], batch.world_size)
            parts = dict(zip(names, values, strict=True))
        return SSCLParts(sup=parts.get("sup"), ssl=parts.get("ssl"))
