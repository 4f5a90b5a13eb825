"""Pretraining's kNN monitor for multi-label findings: a per-finding kNN AUROC, macro-averaged.

For finding ``k``, the validation images whose finding ``k`` is known are scored by a weighted
kNN (:func:`~medcl.models.knn.knn_predict`, Wu et al. 2018) against the labelled training images
whose finding ``k`` is known, with the two classes absent/present: the score of an image is the
neighbours' weight of "present", ``s_k(x) = Σ_{j ∈ N_k(x), y_jk = 1} exp(cos(x, x_j)/τ) /
Σ_{j ∈ N_k(x)} exp(cos(x, x_j)/τ)``. Its AUROC over those validation images (Mann–Whitney) is the
finding's; the monitor is the mean over the findings whose AUROC is defined (both states among
the known validation images). An unknown finding (−1) is in neither set: it is masked, never
read as absent.
"""

from __future__ import annotations

import math

import torch
from sklearn.metrics import roc_auc_score

from medcl.models.knn import knn_predict


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
    out = []
    for f in range(query_states.shape[1]):
        asked, known = query_states[:, f] >= 0, bank_states[:, f] >= 0
        truth = query_states[asked, f].cpu().numpy()
        if not bool(known.any()) or len(set(truth.tolist())) < 2:
            out.append(math.nan)
            continue
        probs = knn_predict(query[asked], bank[known], bank_states[known, f], 2, k=k)
        out.append(float(roc_auc_score(truth, probs[:, 1].cpu().numpy())))
    return out


def macro_auroc(aurocs: list[float]) -> float:
    """The mean of the defined (non-NaN) AUROCs; NaN when none is."""
    defined = [a for a in aurocs if not math.isnan(a)]
    return sum(defined) / len(defined) if defined else math.nan
