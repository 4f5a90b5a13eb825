"""Pretraining's kNN monitor for multi-label findings: a per-finding kNN AUROC, macro-averaged.

Every validation image is scored by the fine-tuning kNN head's vote
(:func:`~medcl.models.knn.knn_findings`, Wu et al. 2018): among its ``k`` nearest labelled training
images, finding ``k``'s score is the ``exp(cos/τ)``-weighted share of the neighbours that have it
present, over the neighbours where it is known (the bank's prevalence of the finding when none
knows it). A finding's AUROC (Mann–Whitney) is taken over the validation images where it is known;
the monitor is the mean over the findings whose AUROC is defined (both states among those images,
and a reference image that knows it). An unknown finding (−1) is masked on both sides, never read
as absent.
"""

from __future__ import annotations

import math

import torch
from sklearn.metrics import roc_auc_score

from medcl.models.knn import knn_findings


@torch.no_grad()
def knn_finding_aurocs(
    query: torch.Tensor,
    query_states: torch.Tensor,
    bank: torch.Tensor,
    bank_states: torch.Tensor,
    k: int = 20,
) -> list[float]:
    """The kNN AUROC of each finding (NaN where it is not defined).

    Args:
        query: ``(Q, D)`` validation features.
        query_states: ``(Q, K)`` their findings in ``{1, 0, −1}``.
        bank: ``(M, D)`` reference features (labelled training images).
        bank_states: ``(M, K)`` their findings.
        k: Neighbours.

    Returns:
        ``K`` AUROCs; NaN for a finding without both states among the known validation images or
        without a known reference image.
    """
    scores = knn_findings(query, bank, bank_states, k=k).cpu().numpy()
    states = query_states.cpu().numpy()
    bank_knows = (bank_states >= 0).any(dim=0).cpu().numpy()
    out = []
    for f in range(states.shape[1]):
        asked = states[:, f] >= 0
        truth = states[asked, f]
        if not bank_knows[f] or len(set(truth.tolist())) < 2:
            out.append(math.nan)
            continue
        out.append(float(roc_auc_score(truth, scores[asked, f])))
    return out


def macro_auroc(aurocs: list[float]) -> float:
    """The mean of the defined (non-NaN) AUROCs; NaN when none is."""
    defined = [a for a in aurocs if not math.isnan(a)]
    return sum(defined) / len(defined) if defined else math.nan
