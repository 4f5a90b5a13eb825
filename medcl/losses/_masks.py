"""Pair masks shared by every contrastive loss in :mod:`medcl.losses`.

For an anchor view ``i`` and a candidate view ``j`` (Khosla et al. 2020, "Supervised Contrastive
Learning", NeurIPS; patient-aware pairs after MICLe, Azizi et al. 2021):

- ``positive(i, j)``: same sample, or (label positives) equal labels ``>= 0``, or (group positives)
  equal patient ids;
- ``excluded(i, j)``: patient ids given, equal, and ``j`` not positive (a same-patient image is
  never a negative);
- ``valid(i, j) = j != i and not excluded(i, j)`` defines ``A(i)``; ``positive & valid`` defines
  ``P(i)``.

Every mask is an ``(n_anchors, n_candidates)`` boolean matrix: O((NV)^2) bytes, no anchor loop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class PairRelations(NamedTuple):
    """Elementary anchor-candidate relations, computed once and combined per loss term.

    Attributes:
        not_self: ``j != i``.
        same_sample: both views come from the same sample (includes ``i`` itself).
        same_label: equal labels and the anchor's label is ``>= 0``; ``None`` without labels.
        same_group: equal patient ids; ``None`` without groups.
    """

    not_self: Tensor
    same_sample: Tensor
    same_label: Tensor | None
    same_group: Tensor | None


class PairMasks(NamedTuple):
    """The masks one loss term needs.

    Attributes:
        positive: ``P(i)`` as a boolean matrix (already restricted to ``A(i)``).
        valid: ``A(i)`` as a boolean matrix.
    """

    positive: Tensor
    valid: Tensor


def pair_relations(
    anchor_index: Tensor,
    n_candidates: int,
    n_views: int,
    candidate_labels: Tensor | None,
    candidate_groups: Tensor | None,
) -> PairRelations:
    """Build the elementary relations between anchors and candidates.

    Candidates are the views of all samples flattened sample-major (view ``k`` belongs to sample
    ``k // n_views``); anchors are a subset of them, given by their candidate index.

    Args:
        anchor_index: ``(n_anchors,)`` int64 position of each anchor among the candidates.
        n_candidates: number of candidate views.
        n_views: views per sample ``V``.
        candidate_labels: ``(n_candidates,)`` per-view labels, ``-1`` for unlabelled, or ``None``.
        candidate_groups: ``(n_candidates,)`` per-view patient ids, or ``None``.

    Returns:
        The relations, each an ``(n_anchors, n_candidates)`` boolean tensor (or ``None``).
    """
    cand_index = torch.arange(n_candidates, device=anchor_index.device)
    not_self = anchor_index[:, None] != cand_index[None, :]
    same_sample = (anchor_index // n_views)[:, None] == (cand_index // n_views)[None, :]
    same_label = None
    if candidate_labels is not None:
        anchor_labels = candidate_labels[anchor_index]
        same_label = (anchor_labels[:, None] == candidate_labels[None, :]) & (anchor_labels >= 0)[
            :, None
        ]
    same_group = None
    if candidate_groups is not None:
        anchor_groups = candidate_groups[anchor_index]
        same_group = anchor_groups[:, None] == candidate_groups[None, :]
    return PairRelations(not_self, same_sample, same_label, same_group)


def pair_masks(
    relations: PairRelations, *, label_positives: bool, group_positives: bool
) -> PairMasks:
    """Combine relations into ``P(i)`` and ``A(i)`` for one loss term.

    Args:
        relations: output of :func:`pair_relations`.
        label_positives: count equal labels ``>= 0`` as positives (SupCon); needs labels.
        group_positives: count equal patient ids as positives (MICLe); needs groups.

    Returns:
        The positive and valid masks.
    """
    positive = relations.same_sample
    if label_positives and relations.same_label is not None:
        positive = positive | relations.same_label
    if group_positives and relations.same_group is not None:
        positive = positive | relations.same_group
    valid = relations.not_self
    if relations.same_group is not None:
        valid = valid & ~(relations.same_group & ~positive)
    return PairMasks(positive=positive & valid, valid=valid)
