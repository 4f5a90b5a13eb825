"""FixMatch per finding against a per-entry loop in Python floats; masking, pooling, no gradient
through the target, the τ ≥ 0.5 refusal."""

from __future__ import annotations

import math

import pytest
import torch

from medcl.losses.fixmatch_findings import FindingsFixMatchLoss
from tests.losses.test_findings import loop_bce


def _bce(z: float, t: float) -> float:
    """−[t log σ(z) + (1 − t) log(1 − σ(z))]."""
    s = 1.0 / (1.0 + math.exp(-z))
    return -(t * math.log(s) + (1 - t) * math.log(1 - s))


def reference(lab, y, weak, strong, tau, lam, pos_weight=None, groups=None):
    """Entry by entry: p = σ(weak) (averaged over the group's rows per finding when grouped);
    pseudo-label 1 at p ≥ τ, 0 at p ≤ 1 − τ, left out otherwise; the unlabelled term sums the
    strong view's BCE over the kept entries and divides by U·K."""
    weak, strong = weak.tolist(), strong.tolist()
    n_u, n_k = len(weak), len(weak[0])
    p = [[1.0 / (1.0 + math.exp(-v)) for v in row] for row in weak]
    if groups is not None:
        g = groups.tolist()
        p = [
            [sum(p[j][k] for j in range(n_u) if g[j] == g[i]) / g.count(g[i]) for k in range(n_k)]
            for i in range(n_u)
        ]
    total, kept = 0.0, 0
    for i in range(n_u):
        for k in range(n_k):
            if p[i][k] >= tau:
                total += _bce(strong[i][k], 1.0)
                kept += 1
            elif p[i][k] <= 1 - tau:
                total += _bce(strong[i][k], 0.0)
                kept += 1
    unsup = total / (n_u * n_k)
    sup = loop_bce(lab, y, pos_weight)
    return sup + lam * unsup, sup, unsup, kept / (n_u * n_k)


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.95])
@pytest.mark.parametrize("pooled", [False, True])
def test_matches_the_entry_loop(tau, pooled):
    g = torch.Generator().manual_seed(int(tau * 100) + pooled)
    lab = torch.randn(4, 3, generator=g, dtype=torch.float64)
    y = torch.randint(-1, 2, (4, 3), generator=g)
    weak = torch.randn(6, 3, generator=g, dtype=torch.float64) * 3
    strong = torch.randn(6, 3, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 2, 2, 2]) if pooled else None
    loss, logs = FindingsFixMatchLoss(tau, 0.7)(lab, y, weak, strong, w, groups)
    want, sup, unsup, rate = reference(lab, y, weak, strong, tau, 0.7, w, groups)
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(logs["sup"]) == pytest.approx(sup, rel=1e-6)
    assert float(logs["unsup"]) == pytest.approx(unsup, rel=1e-6, abs=1e-9)
    assert float(logs["mask_rate"]) == pytest.approx(rate)


def test_the_target_carries_no_gradient_and_unsure_entries_none():
    weak = torch.tensor([[4.0, 0.1, -4.0]], requires_grad=True)  # p ≈ 0.98, 0.52, 0.018
    strong = torch.zeros(1, 3, requires_grad=True)
    lab, y = torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.long)
    loss, logs = FindingsFixMatchLoss(0.9, 1.0)(lab, y, weak, strong)
    loss.backward()
    assert weak.grad is None or torch.all(weak.grad == 0)
    assert strong.grad[0, 1] == 0  # the unsure finding is left out
    # d BCE(z, t)/dz = σ(z) − t at z = 0, divided by U·K = 3
    torch.testing.assert_close(strong.grad[0, [0, 2]], torch.tensor([-0.5, 0.5]) / 3)
    assert float(logs["mask_rate"]) == pytest.approx(2 / 3)


def test_threshold_below_one_half_is_refused():
    with pytest.raises(ValueError, match=r"\[0.5, 1\]"):
        FindingsFixMatchLoss(0.4)
