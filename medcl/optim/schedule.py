"""Learning-rate schedule counted in optimiser steps: linear warm-up, then cosine decay.

``lr(k) = lr0 · (k + 1) / W`` for ``k < W`` (so the first step does not run at lr 0), then
``lr0 · (r + (1 − r)(1 + cos(π (k − W) / (K − W))) / 2)`` down to ``r · lr0``, ``r = final_ratio``
(Loshchilov & Hutter 2017; Goyal et al. 2017 for the warm-up). With gradient accumulation or many
devices, K counts optimiser steps, not batches.

It lives in :mod:`medcl.optim`, at the level of the models and losses, because pretraining
(:mod:`medcl.train.module`) and fine-tuning (:mod:`medcl.evaluate.finetune`,
:mod:`medcl.evaluate.fixmatch`) both schedule with it: neither stage imports the other for it.
"""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, final_ratio: float = 0.0
) -> float:
    """The multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    if total_steps <= 0:
        return 1.0
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
