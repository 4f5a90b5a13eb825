"""EMA helpers of the momentum target networks: the cosine schedule and the parameter update."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medcl.models.ema import ema_update, momentum_schedule


def test_momentum_schedule_endpoints_and_shape() -> None:
    assert momentum_schedule(0, 100) == pytest.approx(0.99)
    assert momentum_schedule(100, 100) == pytest.approx(1.0)
    assert momentum_schedule(50, 100) == pytest.approx(0.995)
    assert momentum_schedule(25, 100) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    assert momentum_schedule(500, 100) == pytest.approx(1.0)  # clamped
    assert momentum_schedule(0, 10, base=0.9, final=0.95) == pytest.approx(0.9)
    values = [momentum_schedule(s, 20) for s in range(21)]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))
    with pytest.raises(ValueError):
        momentum_schedule(0, 0)


def test_ema_update_math() -> None:
    torch.manual_seed(0)
    online, target = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        target.weight.copy_(torch.tensor([5.0, 6.0, 7.0]))
        online.running_mean.fill_(9.0)
    ema_update(target, online, 0.75)
    torch.testing.assert_close(
        target.weight, 0.75 * torch.tensor([5.0, 6.0, 7.0]) + 0.25 * torch.tensor([1.0, 2.0, 3.0])
    )
    torch.testing.assert_close(target.running_mean, torch.zeros(3))  # buffers untouched
    ema_update(target, online, 0.0)
    torch.testing.assert_close(target.weight, online.weight)
    before = target.weight.clone()
    online.weight.data.add_(1.0)
    ema_update(target, online, 1.0)
    torch.testing.assert_close(target.weight, before)
    with pytest.raises(ValueError):
        ema_update(target, online, 1.5)
