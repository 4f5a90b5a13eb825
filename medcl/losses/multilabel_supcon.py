"""Supervised contrastive loss for multi-label findings: positives weighted by label overlap.

A sample carries a ``K``-vector of findings ``y ∈ {0, 1, −1}^K`` (absent, present, unknown). For
samples ``a`` and ``b`` let ``C_ab = {k : y_ak ≥ 0 and y_bk ≥ 0}`` be the findings known in both;
over them the sets of present findings ``Y_a = {k ∈ C_ab : y_ak = 1}`` and ``Y_b`` overlap by
their Jaccard index

    w(a, b) = |Y_a ∩ Y_b| / |Y_a ∪ Y_b|   when Y_a ∪ Y_b ≠ ∅,
    w(a, b) = 1                          when Y_a ∪ Y_b = ∅ but C_ab ≠ ∅ (both free of every
                                         finding known in both: the same label set, ∅),
    w(a, b) = 0                          when C_ab = ∅ (nothing known in common).

For anchor view ``i`` of the ``N·V`` L2-normalised views ``z``, temperature ``τ`` and
``s_ij = z_i·z_j / τ``, the SupCon ``L_out`` form (Khosla et al. 2020, Eq. 2) with weighted
positives is

    l_i = −(1 / Σ_p w_ip) Σ_{p ∈ A(i)} w_ip [ s_ip − log Σ_{a ∈ A(i)} exp(s_ia) ]

with ``w_ip = w(sample(i), sample(p))`` (another view of ``i``'s own sample has weight 1),
``A(i)`` every view but ``i`` itself, and the loss is the mean of ``l_i`` over the **labelled**
anchors ``L`` (views of a sample with at least one known finding; 0 when there are none). An
unlabelled sample (every finding unknown) is then only a negative, as in single-label SupCon.

With patient ids, a same-patient view of weight 0 is never a negative (it leaves ``A(i)``); with
``group_positives`` every same-patient view has weight 1 (MICLe, Azizi et al. 2021).

Reduction: one-hot findings (class ``c`` → ``e_c``; an unlabelled sample → all ``−1``) give
``w = 1`` for equal classes and 0 otherwise, so the loss is exactly the SupCon part of
:class:`medcl.losses.SSCLLoss` (same ``A(i)``, same ``P(i)`` with unit weights, same anchors), with
or without patient ids and ``group_positives``; the tests check this to 1e-8 in float64, values
and gradients.

The weights are dense ``(N, N)`` and the logits one ``(N·V, N·V)`` matrix (batches of a few
thousand views). Distributed (``gather=True`` under ``torch.distributed``) follows the rule of
:mod:`medcl.losses._contrastive`: this rank's views are the anchors, every rank's views the
candidates, and :func:`~medcl.losses._contrastive.finalise` gives the global value with the
single-process gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medcl.losses._contrastive import ContrastiveLossBase, finalise
from medcl.losses.distributed import (
    all_reduce_sum,
    gather_no_grad,
    gather_sizes,
    gather_with_grad,
    is_distributed,
    rank,
)


def finding_overlap(findings_a: Tensor, findings_b: Tensor) -> Tensor:
    """The positive weights ``w(a, b)`` of the module docstring between two sets of samples.

    Args:
        findings_a: ``(Na, K)`` findings in ``{0, 1, −1}``.
        findings_b: ``(Nb, K)`` findings in ``{0, 1, −1}``.

    Returns:
        ``(Na, Nb)`` weights in ``[0, 1]``, float64.
    """
    pos_a, pos_b = (findings_a == 1).double(), (findings_b == 1).double()
    known_a, known_b = (findings_a >= 0).double(), (findings_b >= 0).double()
    both = known_a @ known_b.T  # |C_ab|
    inter = pos_a @ pos_b.T  # present in both (then known in both)
    union = pos_a @ known_b.T + known_a @ pos_b.T - inter  # present in either, known in both
    jaccard = inter / union.clamp_min(1.0)
    return torch.where(union > 0, jaccard, (both > 0).double())


def check_findings(features: Tensor, findings: Tensor, groups: Tensor | None) -> None:
    """Raise ``ValueError`` unless features are ``(N, V ≥ 2, D)``, findings ``(N, K)`` integers in
    ``{−1, 0, 1}`` and groups ``(N,)`` integers."""
    if features.ndim != 3 or features.shape[1] < 2:
        raise ValueError(f"features must be (N, V >= 2, D); got shape {tuple(features.shape)}")
    n = features.shape[0]
    if findings.ndim != 2 or findings.shape[0] != n:
        raise ValueError(f"findings must have shape ({n}, K); got {tuple(findings.shape)}")
    if findings.is_floating_point() or findings.is_complex():
        raise ValueError(f"findings must be an integer tensor; got {findings.dtype}")
    if ((findings < -1) | (findings > 1)).any():
        raise ValueError("findings must be 1 (present), 0 (absent) or -1 (unknown)")
    if groups is not None and (groups.shape != (n,) or groups.is_floating_point()):
        raise ValueError(f"groups must be an integer tensor of shape ({n},)")


class MultiLabelSupConLoss(ContrastiveLossBase):
    """SupCon with positives weighted by the Jaccard overlap of multi-label findings (see the
    module docstring).

    Args:
        temperature: Softmax temperature ``τ`` (> 0).
        group_positives: Count views of the same patient as positives of weight 1.
        gather: Under ``torch.distributed``, use every rank's views as candidates.

    Example:
        >>> loss = MultiLabelSupConLoss(temperature=0.1)
        >>> value = loss(torch.randn(8, 2, 128), findings)  # doctest: +SKIP
    """

    def forward(self, features: Tensor, findings: Tensor, groups: Tensor | None = None) -> Tensor:
        """The loss: the mean of ``l_i`` over the labelled anchors, over all ranks.

        Args:
            features: ``(N, V, D)`` projections, ``V ≥ 2`` views per sample, not normalised.
            findings: ``(N, K)`` int findings: 1 present, 0 absent, −1 unknown.
            groups: ``(N,)`` int patient ids, or ``None``.

        Returns:
            A 0-d tensor (0 without a labelled sample).

        Raises:
            ValueError: On malformed inputs.
        """
        check_findings(features, findings, groups)
        with torch.autocast(device_type=features.device.type, enabled=False):
            n, v, d = features.shape
            device = features.device
            z = F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=-1)
            y = findings.to(device=device, dtype=torch.int64)
            g = None if groups is None else groups.to(device=device, dtype=torch.int64)
            offset, world = 0, 1
            z_all, y_all, g_all = z, y, g
            if self.gather and is_distributed():
                sizes = gather_sizes(n, device)
                offset, world = sum(sizes[: rank()]), len(sizes)
                z_all = gather_with_grad(z, sizes)
                y_all = gather_no_grad(y, sizes)
                g_all = None if g is None else gather_no_grad(g, sizes)
            share, n_labelled = self._share(z, y, g, z_all, y_all, g_all, offset)
            if world > 1:
                n_labelled = all_reduce_sum(n_labelled)
            share = share / n_labelled.clamp_min(1).to(share.dtype)
            return finalise([share], world)[0]

    def _share(
        self,
        z: Tensor,
        y: Tensor,
        g: Tensor | None,
        z_all: Tensor,
        y_all: Tensor,
        g_all: Tensor | None,
        offset: int,
    ) -> tuple[Tensor, Tensor]:
        """``Σ_{i ∈ L, this rank} l_i`` and this rank's number of labelled anchor views.

        Only the labelled anchors' rows are computed: each has its sample's other views (weight
        1) in ``A(i)``, so its row is finite and ``Σ_p w_ip ≥ 1``.
        """
        _, v, d = z.shape
        keep = (y >= 0).any(dim=1).repeat_interleave(v).nonzero().squeeze(1)  # labelled views
        sample = keep // v
        weight = finding_overlap(y[sample], y_all).to(z.dtype)  # (|L|, N) anchor × sample
        if g is not None:
            same = g[sample][:, None] == g_all[None, :]
            if self.group_positives:
                weight = torch.where(same, torch.ones_like(weight), weight)
        weight = weight.repeat_interleave(v, 1)  # anchor view × candidate view
        leave = torch.zeros_like(weight, dtype=torch.bool)
        leave[torch.arange(keep.numel(), device=z.device), keep + offset * v] = True  # itself
        if g is not None:  # a same-patient view that is no positive is never a negative
            leave |= same.repeat_interleave(v, 1) & (weight == 0)
        weight = weight.masked_fill(leave, 0.0)
        anchors, candidates = z.reshape(-1, d)[keep], z_all.reshape(-1, d)
        logits = (anchors @ candidates.T / self.temperature).masked_fill(leave, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        terms = torch.where(weight > 0, log_prob, torch.zeros_like(log_prob))
        l_i = -(weight * terms).sum(dim=1) / weight.sum(dim=1)
        return l_i.sum(), torch.tensor(keep.numel(), device=z.device)
