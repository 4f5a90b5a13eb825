"""Momentum (EMA) target networks: the cosine momentum schedule and the parameter update.

MoCo's key encoder (He et al. 2020) and BYOL's target network (Grill et al. 2020) follow the online
network by an exponential moving average of its parameters,

    theta_t <- m * theta_t + (1 - m) * theta_o,

with the momentum ``m`` raised from ``base`` to ``final`` along a half cosine over the optimiser
steps (BYOL section 3.2; MoCo v3):

    m(k) = final - (final - base) * (cos(pi * k / K) + 1) / 2.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def momentum_schedule(step: int, total_steps: int, base: float = 0.99, final: float = 1.0) -> float:
    """Cosine EMA momentum from ``base`` at step 0 to ``final`` at ``total_steps``.

    ``m(k) = final - (final - base) * (cos(pi * k / K) + 1) / 2`` (BYOL, Grill et al. 2020, Eq. in
    section 3.2; MoCo v3). Steps count optimiser steps; ``k`` is clamped to ``[0, K]``.

    Args:
        step: current optimiser step ``k``.
        total_steps: total optimiser steps ``K`` (> 0).
        base: momentum at step 0.
        final: momentum at the last step.

    Returns:
        The momentum ``m`` to pass to :func:`ema_update`.

    Raises:
        ValueError: If ``total_steps`` is not positive.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0; got {total_steps}")
    progress = min(max(step, 0), total_steps) / total_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """Exponential moving average of parameters: ``theta_t <- m * theta_t + (1 - m) * theta_o``.

    Updates ``target``'s parameters in place (MoCo's key encoder, BYOL's target network). Buffers
    (e.g. BatchNorm running statistics) are left alone: the target network keeps its own.

    Args:
        target: the momentum (key/target) network.
        online: the network trained by gradient descent; same parameter structure.
        m: momentum in ``[0, 1]``; 1 keeps ``target`` unchanged, 0 copies ``online``.

    Raises:
        ValueError: If ``m`` is outside ``[0, 1]`` or the parameter shapes differ.
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1]; got {m}")
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        if t.shape != o.shape:
            raise ValueError(f"parameter shapes differ: {tuple(t.shape)} vs {tuple(o.shape)}")
        t.lerp_(o.detach().to(t.dtype), 1.0 - m)
