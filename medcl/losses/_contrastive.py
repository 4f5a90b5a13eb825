"""Shared machinery of the mask-based contrastive loss (:class:`~medcl.losses.SSCLLoss`: its
SupCon and NT-Xent parts).

Both parts are the SupCon ``L_out`` objective (Khosla et al. 2020) with different positive sets.
For anchor view ``i``, with L2-normalised projections ``z`` and temperature ``tau``:

    l_i = -(1/|P(i)|) sum_{p in P(i)} [ z_i.z_p/tau - log sum_{a in A(i)} exp(z_i.z_a/tau) ]

where ``A(i)`` and ``P(i)`` come from :mod:`medcl.losses._masks`. One ``(NV, NV)`` logit matrix is
built (never an ``(NV, NV, D)`` tensor); the log-denominator is a row-wise ``logsumexp`` (which
subtracts the row maximum) over ``where(valid, logits, -inf)``; everything runs in at least float32
with autocast disabled.

Distributed (``gather=True`` under ``torch.distributed``): features, labels and groups are gathered
from every rank; this rank's anchors are its own views, the candidates are all gathered views, and
sample ids are offset by the rank's position so they stay distinct. With ``M`` global anchors and
world size ``W``, rank ``r`` back-propagates ``W * (1/M) sum_{i in r} l_i``: the gather's backward
sums the ranks' gradients and DDP divides by ``W``, so the parameter gradient equals the
single-process gradient of ``L = (1/M) sum_i l_i`` on the whole batch. The returned *value* is the
global ``L`` (all-reduced) on every rank (:func:`finalise`). For a part averaged over a subset of
the anchors (SupCon over the labelled ones) ``M`` is the global size of that subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from medcl.losses._masks import PairMasks, PairRelations, pair_relations
from medcl.losses.distributed import (
    all_reduce_sum,
    gather_no_grad,
    gather_sizes,
    gather_with_grad,
    is_distributed,
    rank,
)


class ContrastiveBatch(NamedTuple):
    """Logits and pair relations for this rank's anchors against all (gathered) candidates.

    Attributes:
        logits: ``(n_anchors, n_candidates)`` float32/float64 ``z_i.z_j / tau``.
        relations: elementary pair relations.
        anchor_labels: ``(n_anchors,)`` per-view labels of the anchors, or ``None``.
        n_candidates: global number of views ``M`` (every candidate is some rank's anchor).
        n_labelled: global number of labelled views, a 0-d int64 tensor (no host sync), or
            ``None`` without labels.
        world_size: number of ranks the candidates came from.
    """

    logits: Tensor
    relations: PairRelations
    anchor_labels: Tensor | None
    n_candidates: int
    n_labelled: Tensor | None
    world_size: int


def check_inputs(features: Tensor, labels: Tensor | None, groups: Tensor | None) -> None:
    """Raise ``ValueError`` unless features are ``(N, V>=2, D)`` and labels/groups ``(N,)`` ints."""
    if features.ndim != 3:
        raise ValueError(f"features must be (N, V, D); got shape {tuple(features.shape)}")
    n, v, _ = features.shape
    if v < 2:
        raise ValueError(f"features need at least 2 views per sample; got V={v}")
    for name, t in (("labels", labels), ("groups", groups)):
        if t is None:
            continue
        if t.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},); got {tuple(t.shape)}")
        if t.is_floating_point() or t.is_complex():
            raise ValueError(f"{name} must be an integer tensor; got {t.dtype}")


def build_batch(
    features: Tensor,
    labels: Tensor | None,
    groups: Tensor | None,
    *,
    temperature: float,
    gather: bool,
) -> ContrastiveBatch:
    """Normalise, gather and build the logit matrix and pair relations.

    Call with autocast disabled. Args are those of :meth:`medcl.losses.SSCLLoss.forward`.
    """
    check_inputs(features, labels, groups)
    n, v, d = features.shape
    dtype = torch.promote_types(features.dtype, torch.float32)
    z = F.normalize(features.to(dtype), dim=-1)
    device = features.device
    if labels is not None:
        labels = labels.to(device=device, dtype=torch.int64)
    if groups is not None:
        groups = groups.to(device=device, dtype=torch.int64)

    offset, world = 0, 1
    z_all = z
    if gather and is_distributed():
        sizes = gather_sizes(n, device)
        offset, world = sum(sizes[: rank()]), len(sizes)
        z_all = gather_with_grad(z, sizes)
        labels = gather_no_grad(labels, sizes) if labels is not None else None
        groups = gather_no_grad(groups, sizes) if groups is not None else None

    candidates = z_all.reshape(-1, d)
    anchors = z.reshape(-1, d)
    anchor_index = torch.arange(offset * v, (offset + n) * v, device=device)
    cand_labels = labels.repeat_interleave(v) if labels is not None else None
    cand_groups = groups.repeat_interleave(v) if groups is not None else None

    logits = (anchors / temperature) @ candidates.T
    relations = pair_relations(anchor_index, candidates.shape[0], v, cand_labels, cand_groups)
    return ContrastiveBatch(
        logits=logits,
        relations=relations,
        anchor_labels=cand_labels[anchor_index] if cand_labels is not None else None,
        n_candidates=candidates.shape[0],
        n_labelled=(cand_labels >= 0).sum() if cand_labels is not None else None,
        world_size=world,
    )


def log_denominator(logits: Tensor, masks: PairMasks) -> Tensor:
    """Return ``log sum_{a in A(i)} exp(logit_ia)`` per anchor (stable: row max subtracted)."""
    return torch.logsumexp(torch.where(masks.valid, logits, float("-inf")), dim=1)


def anchor_losses(logits: Tensor, masks: PairMasks, log_denom: Tensor) -> Tensor:
    """Return ``l_i = log_denom_i - mean_{p in P(i)} logit_ip`` per anchor, ``(n_anchors,)``."""
    positive_sum = torch.where(masks.positive, logits, 0.0).sum(dim=1)
    return log_denom - positive_sum / masks.positive.sum(dim=1)


def finalise(local_parts: Sequence[Tensor], world_size: int) -> list[Tensor]:
    """Turn this rank's share of each loss part into the part to weight and back-propagate.

    Args:
        local_parts: This rank's share of each part, ``(1/M) sum_{i in rank} l_i`` (0-d tensors);
            summed over ranks they give the global parts.
        world_size: Number of ranks.

    Returns:
        One 0-d tensor per part, with the gradient of ``world_size * local share`` (see the module
        docstring) and the value of the global part (the same on every rank). On one process,
        the local parts themselves. A weighted sum of them keeps both properties.
    """
    if world_size == 1:
        return list(local_parts)
    global_parts = all_reduce_sum(torch.stack(list(local_parts)))
    out = []
    for local, total in zip(local_parts, global_parts, strict=True):
        scaled = world_size * local
        out.append(scaled - scaled.detach() + total)
    return out
