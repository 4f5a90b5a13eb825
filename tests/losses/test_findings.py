"""The masked per-finding BCE and its positive weights against explicit loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medcl.losses.findings import POS_WEIGHT_MAX, masked_bce, pos_weights


def _log_sigmoid(z: float) -> float:
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def loop_bce(logits, states, pos_weight=None) -> float:
    """ℓ_ik = −[w_k y log σ(z) + (1 − y) log(1 − σ(z))] over the known entries, their mean."""
    z, y = logits.tolist(), states.tolist()
    w = [1.0] * len(z[0]) if pos_weight is None else pos_weight.tolist()
    total, n = 0.0, 0
    for zr, yr in zip(z, y, strict=True):
        for k, (zi, yi) in enumerate(zip(zr, yr, strict=True)):
            if yi < 0:
                continue
            total += -(w[k] * yi * _log_sigmoid(zi) + (1 - yi) * _log_sigmoid(-zi))
            n += 1
    return total / n if n else 0.0


def test_masked_bce_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64) * 3
    states = torch.randint(-1, 2, (7, 4), generator=g)
    w = torch.tensor([0.5, 1.0, 3.0, 20.0], dtype=torch.float64)
    for pw in (None, w):
        got = float(masked_bce(logits, states, pw))
        assert got == pytest.approx(loop_bce(logits, states, pw), rel=1e-9, abs=1e-12)


def test_an_unknown_entry_changes_nothing():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    states = torch.randint(0, 2, (5, 3), generator=g)
    states[2, 1] = -1
    w = torch.tensor([2.0, 4.0, 0.5], dtype=torch.float64)
    base = masked_bce(logits, states, w)
    base.backward()
    assert float(logits.grad[2, 1]) == 0.0  # no gradient reaches the unknown entry
    flipped = logits.detach().clone()
    flipped[2, 1] = -50.0 * torch.sign(flipped[2, 1])  # its logit flipped to a confident other side
    torch.testing.assert_close(masked_bce(flipped, states, w), base.detach())
    # the mean is over the known entries only: 14 of them, not 15
    known_only = loop_bce(logits.detach(), states, w)
    assert float(base) == pytest.approx(known_only, rel=1e-12)
    # nothing known: 0
    assert float(masked_bce(logits, torch.full((5, 3), -1), w)) == 0.0


def test_pos_weights():
    y = np.array(
        [
            [1, 0, 1, -1, 1],
            [0, 0, 1, -1, 1],
            [0, 0, 1, -1, 1],
            [0, 1, 0, -1, -1],
            [-1, 0, 1, 0, 1],
        ]
        + [[0, 0, 1, 0, 1]] * 45
    )
    w = pos_weights(y)
    # finding 0: 1 positive, 48 negatives -> 48 (clipped to 20); finding 1: 1 vs 49 -> 20;
    # finding 2: 48 positives, 1 negative -> 1/48 (clipped to 1/20); finding 3: no positive -> 1;
    # finding 4: no negative -> 1
    expected = []
    for k in range(y.shape[1]):
        pos, neg = int((y[:, k] == 1).sum()), int((y[:, k] == 0).sum())
        r = neg / pos if pos and neg else 1.0
        expected.append(min(max(r, 1 / POS_WEIGHT_MAX), POS_WEIGHT_MAX))
    torch.testing.assert_close(w, torch.tensor(expected, dtype=torch.float32))
    assert w.tolist() == pytest.approx([20.0, 20.0, 1 / 20, 1.0, 1.0])
    # within the range, plainly Q / P
    assert pos_weights(np.array([[1], [0], [0], [-1]])).item() == pytest.approx(2.0)
