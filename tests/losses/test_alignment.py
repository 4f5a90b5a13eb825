"""DistributionAlignment (ReMixMatch) against an explicit loop over steps; smoothed class
frequencies by hand."""

from __future__ import annotations

import pytest
import torch

from medcl.losses.alignment import DistributionAlignment, smoothed_frequencies


def _reference(batches: list[list[list[float]]], target: list[float], k: int):
    """Step after step in Python floats: record the batch mean, ``p̃`` = mean of the last ``k``
    batch means, ``q ← q · target / p̃`` normalised."""
    means: list[list[float]] = []
    out = []
    for q in batches:
        c = len(target)
        means.append([sum(row[j] for row in q) / len(q) for j in range(c)])
        recent = means[-k:]
        marginal = [sum(m[j] for m in recent) / len(recent) for j in range(c)]
        aligned = [[row[j] * target[j] / marginal[j] for j in range(c)] for row in q]
        out.append([[v / sum(row) for v in row] for row in aligned])
    return out


def test_matches_a_loop_over_steps() -> None:
    g = torch.Generator().manual_seed(0)
    target = [0.5, 0.3, 0.2]
    k, steps = 3, 7  # the window fills, then slides
    batches = [
        torch.softmax(torch.randn(5, 3, generator=g) * 2 + torch.tensor([1.5, 0.0, -1.0]), 1)
        for _ in range(steps)
    ]
    align = DistributionAlignment(torch.tensor(target), window=k)
    got = [align(q) for q in batches]
    ref = _reference([q.tolist() for q in batches], target, k)
    for a, r in zip(got, ref, strict=True):
        torch.testing.assert_close(a, torch.tensor(r), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(a.sum(1), torch.ones(5))
    assert align.seen == steps


def test_aligned_targets_follow_the_target_on_average() -> None:
    """A model that over-predicts class 0 has its targets pulled towards ``target``: with one
    batch, the mean aligned target is much closer to it than the mean prediction."""
    g = torch.Generator().manual_seed(1)
    q = torch.softmax(torch.randn(400, 3, generator=g) + torch.tensor([2.0, 0.0, 0.0]), 1)
    target = torch.tensor([1 / 3, 1 / 3, 1 / 3])
    aligned = DistributionAlignment(target, window=8)(q)
    before = (q.mean(0) - target).abs().max()
    after = (aligned.mean(0) - target).abs().max()
    assert after < before / 3


def test_smoothed_frequencies_by_hand() -> None:
    labels = torch.tensor([0, 0, 0, 1])  # class 2 absent
    torch.testing.assert_close(smoothed_frequencies(labels, 3), torch.tensor([4 / 7, 2 / 7, 1 / 7]))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        DistributionAlignment(torch.tensor([0.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="sum to 1"):
        DistributionAlignment(torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="window"):
        DistributionAlignment(torch.tensor([0.5, 0.5]), window=0)
    with pytest.raises(ValueError, match="q must be"):
        DistributionAlignment(torch.tensor([0.5, 0.5]))(torch.ones(3, 3) / 3)
