"""``warmup_cosine`` against its closed form."""

from __future__ import annotations

import math

import pytest

from medcl.optim.schedule import warmup_cosine

# --------------------------------------------------------------------------------------------------
# Learning-rate multiplier
# --------------------------------------------------------------------------------------------------


def closed_form(k: int, total: int, warmup: int, final: float) -> float:
    """Linear warm-up that reaches the peak on the last warm-up step (``(k + 1) / W``), then
    ``final + (1 - final) (1 + cos(pi (k - W) / (K - W))) / 2``, held at ``final`` after K."""
    if k < warmup:
        return (k + 1) / warmup
    progress = min(1.0, (k - warmup) / (total - warmup))
    return final + (1 - final) * (1 + math.cos(math.pi * progress)) / 2


@pytest.mark.parametrize("final", [0.0, 0.1])
def test_warmup_cosine_key_points(final):
    """Step 0, end of warm-up, start / quarter / middle / end of the cosine, past the end."""
    total, warm = 110, 10
    expected = {
        0: 1 / warm,
        warm - 1: 1.0,  # the peak is reached on the last warm-up step
        warm: 1.0,  # the cosine starts at the peak
        warm + 25: final + (1 - final) * (1 + math.cos(math.pi / 4)) / 2,
        warm + 50: final + (1 - final) * 0.5,
        total: final,
        total + 7: final,  # clamped
    }
    for step, value in expected.items():
        assert warmup_cosine(step, total, warm, final_ratio=final) == pytest.approx(value), step
    for step in range(total + 3):
        got = warmup_cosine(step, total, warm, final_ratio=final)
        assert got == pytest.approx(closed_form(step, total, warm, final)), step


def test_warmup_cosine_shape_and_edge_cases():
    """Increasing during warm-up, non-increasing after; no warm-up starts at 1; K <= 0 is 1."""
    values = [warmup_cosine(k, 50, 5, final_ratio=0.01) for k in range(51)]
    assert all(a < b for a, b in zip(values[:4], values[1:5], strict=True))
    assert all(b <= a for a, b in zip(values[4:-1], values[5:], strict=True))
    assert warmup_cosine(0, 20, 0) == pytest.approx(1.0)
    assert warmup_cosine(10, 20, 0) == pytest.approx(0.5)
    assert warmup_cosine(20, 20, 0) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(3, 0, 0) == 1.0
