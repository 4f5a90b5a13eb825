"""The per-finding kNN monitor of multi-label pretraining against a slow reference: explicit
neighbour search, the weighted vote among the neighbours that know the finding, and AUROC as the
share of correctly ordered (present, absent) pairs; unknown findings are masked on both sides."""

from __future__ import annotations

import math

import pytest
import torch

from medcl.train.monitor import knn_finding_aurocs, macro_auroc


def reference_aurocs(query, q_states, bank, b_states, k, temperature=0.07):
    """Explicit neighbour search over the whole bank, the vote among the neighbours that know the
    finding (the bank's prevalence when none does), AUROC as correctly ordered pairs."""
    out = []
    for f in range(q_states.shape[1]):
        ref = [j for j in range(len(bank)) if b_states[j, f] >= 0]
        prior = sum(int(b_states[j, f] == 1) for j in ref) / len(ref) if ref else 0.5
        asked = [i for i in range(len(query)) if q_states[i, f] >= 0]
        scores, truth = [], []
        for i in asked:
            cos = [
                float(torch.cosine_similarity(query[i], bank[j], dim=0)) for j in range(len(bank))
            ]
            nearest = sorted(range(len(bank)), key=lambda t: -cos[t])[: min(k, len(bank))]
            weights = {t: math.exp(cos[t] / temperature) for t in nearest if b_states[t, f] >= 0}
            present = sum(w for t, w in weights.items() if b_states[t, f] == 1)
            scores.append(present / sum(weights.values()) if weights else prior)
            truth.append(int(q_states[i, f]))
        pos = [s for s, y in zip(scores, truth, strict=True) if y == 1]
        neg = [s for s, y in zip(scores, truth, strict=True) if y == 0]
        if not ref or not pos or not neg:
            out.append(math.nan)
            continue
        wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
        out.append(wins / (len(pos) * len(neg)))
    return out


def test_per_finding_aurocs_match_the_reference():
    gen = torch.Generator().manual_seed(0)
    k_findings = 4
    bank_states = torch.randint(-1, 2, (40, k_findings), generator=gen)
    q_states = torch.randint(-1, 2, (25, k_findings), generator=gen)
    q_states[:, 3] = torch.where(q_states[:, 3] == 1, 0, q_states[:, 3])  # no positive: NaN
    # features that carry the findings, plus noise: AUROCs well away from 0.5 and from each other
    basis = torch.randn(k_findings, 8, generator=gen)
    bank = bank_states.clamp_min(0).float() @ basis + 0.8 * torch.randn(40, 8, generator=gen)
    query = q_states.clamp_min(0).float() @ basis + 0.8 * torch.randn(25, 8, generator=gen)
    got = knn_finding_aurocs(query, q_states, bank, bank_states, k=7)
    want = reference_aurocs(query, q_states, bank, bank_states, k=7)
    assert math.isnan(got[3]) and math.isnan(want[3])
    assert got[:3] == pytest.approx(want[:3], abs=1e-6)
    assert max(got[:3]) > 0.7
    assert macro_auroc(got) == pytest.approx(sum(want[:3]) / 3, abs=1e-6)


def test_unknown_findings_are_masked_not_read_as_absent():
    """Writing a query's unknown finding as absent changes that finding's AUROC."""
    gen = torch.Generator().manual_seed(1)
    bank_states = torch.randint(0, 2, (30, 2), generator=gen)
    q_states = torch.randint(0, 2, (20, 2), generator=gen)
    bank = bank_states.float() @ torch.randn(2, 6, generator=gen) + torch.randn(
        30, 6, generator=gen
    )
    query = q_states.float() @ torch.randn(2, 6, generator=gen) + torch.randn(20, 6, generator=gen)
    masked = q_states.clone()
    masked[:6, 0] = -1
    got = knn_finding_aurocs(query, masked, bank, bank_states, k=5)
    want = knn_finding_aurocs(query[6:], q_states[6:], bank, bank_states, k=5)
    assert got[0] == pytest.approx(want[0], abs=1e-9)
    as_absent = masked.clamp_min(0)
    assert knn_finding_aurocs(query, as_absent, bank, bank_states, k=5)[0] != pytest.approx(got[0])


def test_macro_auroc_without_any_defined_finding_is_nan():
    assert math.isnan(macro_auroc([math.nan, math.nan])) and math.isnan(macro_auroc([]))
