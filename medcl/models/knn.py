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
