"""Who is a positive and who is left out, for every contrastive loss in :mod:`medcl.losses`,
without building ``(NV, NV)`` boolean masks.

For an anchor view ``i`` and a candidate view ``j`` (Khosla et al. 2020, "Supervised Contrastive
Learning", NeurIPS; patient-aware pairs after MICLe, Azizi et al. 2021):

- ``positive(i, j)``: same sample, or (label positives) equal labels ``>= 0``, or (group positives)
  equal patient ids;
- ``excluded(i, j)``: patient ids given, equal, and ``j`` not positive (a same-patient image is
  never a negative);
- ``A(i)`` is every ``j != i`` that is not excluded; ``P(i)`` is every positive ``j != i``
  (a positive is never excluded).

Both relations are unions of *key equalities* (same sample, same label, same patient), so they are
kept in that form:

- a positive set is a short list of :class:`KeyTerm` (``P(i) = {j != i : key(j) = key(i)}``, or a
  signed sum of such sets for a union, by inclusion-exclusion). A sum over ``P(i)`` of anything
  linear in the candidate, such as ``sum_{p in P(i)} z_i . z_p``, is then a sum over keys:
  ``O(NV * D)`` work instead of ``O((NV)^2)``;
- exclusions exist only between views of the same patient, so they are listed as sparse index
  pairs (:class:`PatientPairs`), ``sum_i (views of i's patient)`` of them, typically a few per
  anchor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class KeyTerm(NamedTuple):
    """One signed key-equality set ``{j : keys[j] = keys[i]}`` of a positive set.

    Attributes:
        keys: ``(n_candidates,)`` int64 key of every candidate, in ``[0, n_keys)``.
        n_keys: An upper bound of the number of distinct keys.
        weight: ``(n_anchors,)`` float factor of this set per anchor (0/±1), or ``None`` for 1.
    """

    keys: Tensor
    n_keys: int
    weight: Tensor | None


class PatientPairs(NamedTuple):
    """Every (anchor, candidate) pair of views of the same patient, the anchor's own view included.

    Attributes:
        rows: ``(T,)`` anchor positions.
        cols: ``(T,)`` candidate positions.
        same_sample: ``(T,)`` both views come from the same sample.
        same_label: ``(T,)`` equal labels, the anchor's ``>= 0``; ``None`` without labels.
    """

    rows: Tensor
    cols: Tensor
    same_sample: Tensor
    same_label: Tensor | None


def dense_ids(values: Tensor) -> tuple[Tensor, int]:
    """Map arbitrary int64 values to ids in ``[0, n)`` (equal values, equal ids).

    Sort-based, so no host synchronisation on an accelerator; ``n = len(values)`` bounds the number
    of distinct values.

    Returns:
        The ids and the bound ``n``.
    """
    ordered, order = torch.sort(values, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.int64)
    starts[1:] = (ordered[1:] != ordered[:-1]).to(torch.int64)
    ids = torch.empty_like(order)
    ids[order] = torch.cumsum(starts, 0) - 1
    return ids, max(len(values), 1)


def sample_term(n_candidates: int, n_views: int, device: torch.device) -> KeyTerm:
    """The views of one sample (candidates are sample-major: view ``k`` of sample ``k // V``)."""
    keys = torch.arange(n_candidates, device=device) // n_views
    return KeyTerm(keys, max(n_candidates // n_views, 1), None)


def positive_terms(
    n_candidates: int,
    n_views: int,
    labels: Tensor | None,
    groups: Tensor | None,
    anchor_labelled: Tensor | None,
    *,
    device: torch.device,
    label_positives: bool,
    group_positives: bool,
) -> list[KeyTerm]:
    """``P(i) ∪ {i}`` as signed key-equality sets, for one loss part.

    Same-sample views always share the label and the patient, so the union is at most two sets:
    ``same label ∪ same patient = label + patient - (label, patient)``. Anchors without a label get
    the sample (or patient) set in the label-positive part: that part is averaged over labelled
    anchors only, but every row stays finite.

    Args:
        n_candidates: Number of candidate views.
        n_views: Views per sample ``V``.
        labels: ``(n_candidates,)`` per-view labels, ``-1`` for unlabelled, or ``None``.
        groups: ``(n_candidates,)`` per-view patient ids, or ``None``.
        anchor_labelled: ``(n_anchors,)`` float 1/0, the anchor has a label ``>= 0``; needed with
            ``label_positives`` and labels.
        device: Where the candidates are.
        label_positives: Count equal labels ``>= 0`` as positives (SupCon).
        group_positives: Count equal patient ids as positives (MICLe); needs groups.
    """
    by_group = group_positives and groups is not None
    if by_group:
        assert groups is not None
        base = KeyTerm(*dense_ids(groups), None)
    else:
        base = sample_term(n_candidates, n_views, device)
    if not label_positives or labels is None:
        return [base]
    assert anchor_labelled is not None
    label_ids, n_ids = dense_ids(labels)
    by_label = KeyTerm(label_ids, n_ids, anchor_labelled)
    if not by_group:
        return [by_label, base._replace(weight=1.0 - anchor_labelled)]
    both, n_both = dense_ids(label_ids * n_candidates + base.keys)
    return [by_label, base, KeyTerm(both, n_both, -anchor_labelled)]


def patient_pairs(
    anchor_index: Tensor, n_views: int, labels: Tensor | None, groups: Tensor
) -> PatientPairs:
    """List the (anchor, candidate) pairs with equal patient ids, ``O(pairs)`` after a sort.

    Args:
        anchor_index: ``(n_anchors,)`` int64 position of each anchor among the candidates.
        n_views: Views per sample ``V``.
        labels: ``(n_candidates,)`` per-view labels, or ``None``.
        groups: ``(n_candidates,)`` per-view patient ids.
    """
    ordered, order = torch.sort(groups, stable=True)
    anchor_groups = groups[anchor_index]
    first = torch.searchsorted(ordered, anchor_groups, right=False)
    count = torch.searchsorted(ordered, anchor_groups, right=True) - first
    total = int(count.sum())  # the one host synchronisation: the number of pairs
    rows = torch.repeat_interleave(
        torch.arange(len(anchor_index), device=groups.device), count, output_size=total
    )
    offset = torch.cumsum(count, 0) - count
    within = torch.arange(total, device=groups.device) - offset[rows]
    cols = order[first[rows] + within]
    anchor_at = anchor_index[rows]
    same_sample = (cols // n_views) == (anchor_at // n_views)
    same_label = None
    if labels is not None:
        anchor_label = labels[anchor_at]
        same_label = (labels[cols] == anchor_label) & (anchor_label >= 0)
    return PatientPairs(rows, cols, same_sample, same_label)
