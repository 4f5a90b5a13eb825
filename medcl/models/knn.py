"""Cosine k-nearest-neighbour classification on embeddings (the online monitor and ``knn`` mode).

A query's class scores are the sum over its k most similar reference embeddings of
``exp(cos / τ)`` for the neighbour's class (Wu et al. 2018, weighted kNN); the prediction is the arg
max. Probabilities are the normalised scores.

It lives beside the models, below both stages that use it: pretraining monitors its encoder with it
(:mod:`medcl.train.module`) and evaluation classifies with it (``knn`` mode,
:mod:`medcl.evaluate.finetune`), so neither of them imports the other for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_predict(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    n_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class probabilities ``(Q, C)`` of ``query`` ``(Q, D)`` against ``bank`` ``(M, D)``."""
    q = F.normalize(query.float(), dim=1)
    b = F.normalize(bank.float(), dim=1)
    k = max(1, min(k, b.shape[0]))
    out = []
    for s in range(0, q.shape[0], chunk):
        sim = q[s : s + chunk] @ b.T
        top, idx = sim.topk(k, dim=1)
        w = torch.exp(top / temperature)
        scores = torch.zeros(sim.shape[0], n_classes, device=q.device)
        scores.scatter_add_(1, bank_labels[idx], w)
        out.append(scores / scores.sum(1, keepdim=True))
    return torch.cat(out) if out else torch.zeros(0, n_classes)


@torch.no_grad()
def knn_findings(
    query: Tensor, bank: Tensor, bank_states: Tensor, k: int = 20, temperature: float = 0.07
) -> Tensor:
    """Per-finding probabilities ``(Q, K)`` of ``query`` ``(Q, D)`` by a neighbour vote.

    Among the ``k`` most similar rows of ``bank`` (cosine similarity), finding ``k``'s
    probability is the ``exp(cos / τ)``-weighted share of the neighbours that have it present,
    over the neighbours where it is known (the weights of the single-label vote,
    :func:`knn_predict`): ``p_qk = Σ_{j ∈ N(q), y_jk ≥ 0} w_j·y_jk / Σ_{j ∈ N(q), y_jk ≥ 0} w_j``.
    Where none of the ``k`` neighbours knows the finding, it is the finding's prevalence among the
    bank's known values (0.5 when the bank knows it nowhere).

    Args:
        query: ``(Q, D)`` embeddings.
        bank: ``(M, D)`` reference embeddings.
        bank_states: ``(M, K)`` their finding states in ``{1, 0, −1}``.
        k: Neighbours.
        temperature: ``τ`` of the weights.
    """
    chunk = 1024  # queries per matrix product
    q = F.normalize(query.float(), dim=1)
    b = F.normalize(bank.float(), dim=1)
    known = (bank_states >= 0).float()
    present = (bank_states == 1).float()
    n_known = known.sum(0)
    prior = torch.where(n_known > 0, present.sum(0) / n_known.clamp_min(1), 0.5)
    k = max(1, min(k, b.shape[0]))
    out = []
    for s in range(0, q.shape[0], chunk):
        top, idx = (q[s : s + chunk] @ b.T).topk(k, dim=1)
        w = torch.exp(top / temperature)[:, :, None]  # (q, k, 1)
        votes = (w * present[idx]).sum(1)
        weight = (w * known[idx]).sum(1)
        out.append(torch.where(weight > 0, votes / weight.clamp_min(1e-30), prior))
    return torch.cat(out) if out else torch.zeros(0, bank_states.shape[1])
