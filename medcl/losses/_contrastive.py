"""Shared machinery of the mask-based contrastive loss (:class:`~medcl.losses.SSCLLoss`: its
SupCon and NT-Xent parts), computed with one fused log-denominator.

Both parts are the SupCon ``L_out`` objective (Khosla et al. 2020) with different positive sets.
For anchor view ``i``, with L2-normalised projections ``z`` and temperature ``tau``:

    l_i = -(1/|P(i)|) sum_{p in P(i)} [ z_i.z_p/tau - log sum_{a in A(i)} exp(z_i.z_a/tau) ]

where ``A(i)`` and ``P(i)`` come from :mod:`medcl.losses._masks`. One ``(NV, NV)`` logit matrix is
built (never an ``(NV, NV, D)`` tensor) and turned, in place of every mask, into one row softmax:

1. ``A(i)``: the anchor itself and the excluded same-patient views are set to ``-inf`` in the
   logits (the diagonal and a sparse list of same-patient pairs).
2. One row softmax ``p_ij`` over ``A(i)`` and its log-denominator
   ``lse_i = m_i - log p_{i, argmax}`` (``m_i`` the row maximum, so ``p_{i,argmax} >= 1/NV`` and
   the log is exact). When both parts are asked with patient ids, SupCon's ``A(i)`` is NT-Xent's
   plus the same-patient, same-label views of other samples: its log-denominator adds those few
   terms to NT-Xent's (a sparse log-sum-exp), never a second pass over the matrix.
3. The positive term is linear in the candidates,
   ``sum_{p in P(i)} z_i.z_p = z_i . (sum_{p in P(i)} z_p)``, and ``P(i)`` is a union of key
   equalities (sample, label, patient), so it is a sum over keys: ``O(NV * D)``.

The backward pass is written out (:class:`_FusedContrastive`): for the logit matrix the gradient is
``dL_ij = r_i p_ij`` on ``A(i)`` (``r_i`` the anchor's weight, summed over the parts, SupCon's
scaled by ``exp(lse_i - lse_i^SupCon)``), minus the positive terms, plus the sparse extra terms.
The row factor moves into the two matmuls (``dz_anchor = r * (p @ z_cand) / tau``,
``dz_cand = p^T @ (r * z_anchor / tau)``), and the positive terms are again sums over keys, so the
backward reads the saved softmax twice (the matmuls) and writes no ``(NV, NV)`` tensor.

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
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.losses._masks import KeyTerm, PatientPairs, patient_pairs, positive_terms
from medcl.losses.distributed import (
    all_reduce_sum,
    gather_no_grad,
    gather_sizes,
    gather_with_grad,
    is_distributed,
    rank,
)


class ContrastiveLossBase(nn.Module):
    """The settings every mask-based contrastive loss shares: temperature ``tau`` (> 0), whether
    other views of the same patient are positives, and whether to gather across ranks."""

    def __init__(
        self, temperature: float = 0.1, group_positives: bool = False, gather: bool = True
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.temperature = float(temperature)
        self.group_positives = bool(group_positives)
        self.gather = bool(gather)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, group_positives={self.group_positives}, "
            f"gather={self.gather}"
        )


class ContrastiveBatch(NamedTuple):
    """This rank's anchors, all (gathered) candidates and their side information.

    Attributes:
        anchors: ``(n_anchors, D)`` L2-normalised views of this rank, float32/float64.
        candidates: ``(n_candidates, D)`` L2-normalised views of every rank (sample-major).
        offset: position of the first anchor among the candidates (anchors are contiguous).
        n_views: views per sample ``V``.
        labels: ``(n_candidates,)`` per-view labels, or ``None``.
        groups: ``(n_candidates,)`` per-view patient ids, or ``None``.
        n_candidates: global number of views ``M`` (every candidate is some rank's anchor).
        n_labelled: global number of labelled views, a 0-d int64 tensor (no host sync), or
            ``None`` without labels.
        world_size: number of ranks the candidates came from.
    """

    anchors: Tensor
    candidates: Tensor
    offset: int
    n_views: int
    labels: Tensor | None
    groups: Tensor | None
    n_candidates: int
    n_labelled: Tensor | None
    world_size: int

    @property
    def anchor_index(self) -> Tensor:
        """``(n_anchors,)`` positions of the anchors among the candidates."""
        n = self.anchors.shape[0]
        return torch.arange(self.offset, self.offset + n, device=self.anchors.device)


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
    features: Tensor, labels: Tensor | None, groups: Tensor | None, *, gather: bool
) -> ContrastiveBatch:
    """Normalise and gather the views and their labels and patient ids.

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

    cand_labels = labels.repeat_interleave(v) if labels is not None else None
    candidates = z_all.reshape(-1, d)
    return ContrastiveBatch(
        anchors=z.reshape(-1, d),
        candidates=candidates,
        offset=offset * v,
        n_views=v,
        labels=cand_labels,
        groups=groups.repeat_interleave(v) if groups is not None else None,
        n_candidates=candidates.shape[0],
        n_labelled=(cand_labels >= 0).sum() if cand_labels is not None else None,
        world_size=world,
    )


class _Plan(NamedTuple):
    """What :class:`_FusedContrastive` computes: the parts, their positive sets and weights.

    Attributes:
        temperature: ``tau``.
        offset: position of the first anchor among the candidates.
        ssl_terms: NT-Xent's ``P(i) ∪ {i}``, or ``None`` when NT-Xent is not asked.
        sup_terms: SupCon's ``P(i) ∪ {i}``, or ``None`` when SupCon is not asked.
        ssl_scale: ``1 / M``.
        sup_scale: ``(n_anchors,)`` ``1 / max(|L|, 1)`` on labelled anchors, 0 elsewhere.
        pairs: same-patient pairs (patient ids without group positives), or ``None``.
        excluded: ``(T,)`` the pair leaves the softmax's ``A(i)``.
        extra: ``(T,)`` the pair is in SupCon's ``A(i)`` but not in the softmax's (SupCon's
            denominator adds it), or ``None``.
    """

    temperature: float
    offset: int
    ssl_terms: list[KeyTerm] | None
    sup_terms: list[KeyTerm] | None
    ssl_scale: float
    sup_scale: Tensor | None
    pairs: PatientPairs | None
    excluded: Tensor | None
    extra: Tensor | None


def contrastive_shares(
    batch: ContrastiveBatch, *, temperature: float, group_positives: bool, sup: bool, ssl: bool
) -> dict[str, Tensor]:
    """This rank's share of each part asked for, ``(1/M) sum_{i in rank} l_i`` (see the module
    docstring), from one logit matrix and one softmax.

    Args:
        batch: Output of :func:`build_batch`.
        temperature: ``tau``.
        group_positives: Same-patient views are positives in both parts.
        sup: Compute SupCon (0 without labels).
        ssl: Compute NT-Xent.

    Returns:
        ``{"sup": ..., "ssl": ...}`` for the parts asked, each a 0-d tensor.
    """
    out: dict[str, Tensor] = {}
    if sup and batch.labels is None:
        out["sup"] = batch.anchors.new_zeros(())
        sup = False
    if not (sup or ssl):
        return out
    anchor_index = batch.anchor_index
    device = batch.anchors.device
    n_c, v = batch.n_candidates, batch.n_views
    labelled = None
    if batch.labels is not None:
        labelled = (batch.labels[anchor_index] >= 0).to(batch.anchors.dtype)
    common = dict(device=device, group_positives=group_positives)
    ssl_terms = sup_terms = sup_scale = None
    if ssl:
        ssl_terms = positive_terms(
            n_c, v, None, batch.groups, None, label_positives=False, **common
        )
    if sup:
        assert labelled is not None and batch.n_labelled is not None
        sup_terms = positive_terms(
            n_c, v, batch.labels, batch.groups, labelled, label_positives=True, **common
        )
        sup_scale = labelled / batch.n_labelled.clamp_min(1).to(labelled.dtype)
    pairs = excluded = extra = None
    if batch.groups is not None and not group_positives:
        pairs = patient_pairs(anchor_index, v, batch.labels if sup else None, batch.groups)
        other_sample = ~pairs.same_sample
        if pairs.same_label is None:
            excluded = other_sample
        elif ssl:  # the softmax is NT-Xent's; SupCon adds its same-label views of other samples
            excluded, extra = other_sample, other_sample & pairs.same_label
        else:
            excluded = other_sample & ~pairs.same_label
    plan = _Plan(
        temperature,
        batch.offset,
        ssl_terms,
        sup_terms,
        1.0 / n_c,
        sup_scale,
        pairs,
        excluded,
        extra,
    )
    shares = _FusedContrastive.apply(batch.anchors, batch.candidates, plan)
    if sup:
        out["sup"] = shares[0]
    if ssl:
        out["ssl"] = shares[1]
    return out


def _positive_sums(
    terms: list[KeyTerm], candidates: Tensor, offset: int, n_anchors: int
) -> tuple[Tensor, Tensor]:
    """``sum_{p in P(i)} z_p`` (``(n_anchors, D)``) and ``|P(i)|`` per anchor, over keys."""
    ones = candidates.new_ones(candidates.shape[0])
    total = count = None
    for keys, n_keys, weight in terms:
        sums = candidates.new_zeros(n_keys, candidates.shape[1]).index_add_(0, keys, candidates)
        sizes = candidates.new_zeros(n_keys).index_add_(0, keys, ones)
        anchor_keys = keys[offset : offset + n_anchors]
        vec, size = sums[anchor_keys], sizes[anchor_keys]
        if weight is not None:
            vec, size = weight[:, None] * vec, weight * size
        total = vec if total is None else total + vec
        count = size if count is None else count + size
    assert total is not None and count is not None
    return total - candidates[offset : offset + n_anchors], count - 1


def _spread_positive_grads(
    terms: list[KeyTerm], coef: Tensor, grad_cand: Tensor, offset: int
) -> None:
    """Add to ``grad_cand`` the gradient of ``sum_i coef_i . sum_{p in P(i)} z_p`` (in place)."""
    n_anchors = coef.shape[0]
    for keys, n_keys, weight in terms:
        weighted = coef if weight is None else weight[:, None] * coef
        anchor_keys = keys[offset : offset + n_anchors]
        sums = coef.new_zeros(n_keys, coef.shape[1]).index_add_(0, anchor_keys, weighted)
        grad_cand += sums[keys]
    grad_cand[offset : offset + n_anchors] -= coef


class _FusedContrastive(torch.autograd.Function):
    """Both parts' local shares ``(sup, ssl)`` from one logit matrix (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, anchors: Tensor, candidates: Tensor, plan: _Plan) -> Tensor:
        n_anchors = anchors.shape[0]
        scaled = anchors / plan.temperature
        logits = scaled @ candidates.T
        pair_logits = None
        if plan.pairs is not None:
            index = (plan.pairs.rows, plan.pairs.cols)
            pair_logits = logits[index]
            logits.index_put_(index, pair_logits.masked_fill(plan.excluded, float("-inf")))
        logits.diagonal(plan.offset).fill_(float("-inf"))
        top, top_at = logits.max(dim=1)
        prob = torch.softmax(logits, dim=1)
        del logits
        lse = top - prob.gather(1, top_at[:, None]).squeeze(1).log()

        lse_sup, extra_logits = lse, None
        if plan.sup_terms is not None and plan.extra is not None:
            assert plan.pairs is not None and pair_logits is not None
            rows = plan.pairs.rows
            extra_logits = pair_logits.masked_fill(~plan.extra, float("-inf"))
            peak = lse.scatter_reduce(0, rows, extra_logits, "amax", include_self=True)
            mass = torch.exp(lse - peak).index_add_(0, rows, torch.exp(extra_logits - peak[rows]))
            lse_sup = peak + mass.log()

        shares = anchors.new_zeros(2)
        saved: dict[str, Tensor] = {}
        for slot, name, terms, log_denom in (
            (0, "sup", plan.sup_terms, lse_sup),
            (1, "ssl", plan.ssl_terms, lse),
        ):
            if terms is None:
                continue
            vec, count = _positive_sums(terms, candidates, plan.offset, n_anchors)
            saved[f"{name}_vec"], saved[f"{name}_count"] = vec, count
            losses = log_denom - (scaled * vec).sum(dim=1) / count
            if name == "ssl":
                shares[slot] = losses.sum() * plan.ssl_scale
            else:
                assert plan.sup_scale is not None
                # an anchor without a label weighs 0 (its row is finite but meaningless)
                shares[slot] = torch.where(plan.sup_scale > 0, losses * plan.sup_scale, 0.0).sum()
        ctx.plan = plan
        ctx.names = sorted(saved)
        tensors = [scaled, candidates, prob, lse, lse_sup, *(saved[k] for k in ctx.names)]
        if extra_logits is not None:
            tensors.append(extra_logits)
        ctx.save_for_backward(*tensors)
        return shares

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        plan: _Plan = ctx.plan
        scaled, candidates, prob, lse, lse_sup, *rest = ctx.saved_tensors
        saved = dict(zip(ctx.names, rest, strict=False))
        extra_logits = rest[len(ctx.names)] if len(rest) > len(ctx.names) else None
        n_anchors = scaled.shape[0]

        # per-anchor weight of each part: d(share)/d(l_i)
        weights: dict[str, Tensor] = {}
        if plan.ssl_terms is not None:
            weights["ssl"] = (grad[1] * plan.ssl_scale).expand(n_anchors)
        if plan.sup_terms is not None:
            assert plan.sup_scale is not None
            weights["sup"] = grad[0] * plan.sup_scale
        row = scaled.new_zeros(n_anchors)
        for name, weight in weights.items():
            # SupCon's softmax over its own A(i) is the shared one times exp(lse - lse_sup)
            row = row + (weight * torch.exp(lse - lse_sup) if name == "sup" else weight)

        grad_scaled = row[:, None] * (prob @ candidates)
        grad_cand = prob.T @ (row[:, None] * scaled)
        if extra_logits is not None:
            assert plan.pairs is not None
            rows, cols = plan.pairs.rows, plan.pairs.cols
            pair_grad = weights["sup"][rows] * torch.exp(extra_logits - lse_sup[rows])
            # a sparse (n_anchors, n_candidates) matrix: no (pairs, D) temporary
            sparse = torch.sparse_coo_tensor(
                torch.stack([rows, cols]), pair_grad, prob.shape, check_invariants=False
            )
            grad_scaled += torch.sparse.mm(sparse, candidates)
            grad_cand += torch.sparse.mm(sparse.t(), scaled)
        for name, weight in weights.items():
            terms = plan.ssl_terms if name == "ssl" else plan.sup_terms
            assert terms is not None
            coef = (weight / saved[f"{name}_count"])[:, None]
            grad_scaled -= coef * saved[f"{name}_vec"]
            _spread_positive_grads(terms, -coef * scaled, grad_cand, plan.offset)
        grad_anchors = grad_scaled / plan.temperature if ctx.needs_input_grad[0] else None
        return grad_anchors, grad_cand if ctx.needs_input_grad[1] else None, None


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
