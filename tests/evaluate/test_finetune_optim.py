"""Fine-tuning's optimiser and schedule come from the config: ``finetune.weight_decay`` and
``finetune.warmup_fraction`` (defaults: the values that were hard-coded, 1e-4 and steps // 20)."""

from __future__ import annotations

import pytest
from torch import nn

from medcl.config import Config, load_config
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.fitting import BestOnValidation
from medcl.models import EncoderSpec, build_encoder
from medcl.models.description import ModelDescription
from medcl.optim.schedule import warmup_cosine


class _Fixed(BestOnValidation):
    """The shared optimiser set-up with a fixed number of steps (no trainer needed)."""

    def __init__(self, cfg: Config, steps: int, pretrained: bool = True) -> None:
        spec = EncoderSpec("resnet10", 2, 16, width=0.125)
        enc = build_encoder(spec)
        description = ModelDescription(spec, ["a", "b"], "mr", (40.0, 400.0))
        super().__init__(
            Classifier(enc, nn.Linear(enc.out_dim, 2), description), cfg, None, pretrained
        )
        self.steps = steps

    def total_steps(self) -> int:
        return self.steps


def _set_up(overrides: list[str], steps: int) -> tuple[list[float], list[float]]:
    """``(weight decay of each group, lr multiplier at each step)``."""
    out = _Fixed(load_config(None, overrides), steps).configure_optimizers()
    sched = out["lr_scheduler"]["scheduler"]
    decay = [g["weight_decay"] for g in out["optimizer"].param_groups]
    return decay, [sched.lr_lambdas[0](s) for s in range(steps)]


@pytest.mark.parametrize("steps", [1, 19, 20, 47, 200])
def test_defaults_are_the_former_constants(steps):
    decay, mult = _set_up([], steps)
    assert decay == [pytest.approx(1e-4)] * 2
    warm = max(1, steps // 20)
    assert mult == pytest.approx([warmup_cosine(s, steps, warm) for s in range(steps)])


def test_weight_decay_and_warmup_follow_the_config():
    decay, mult = _set_up(["finetune.weight_decay=0.05", "finetune.warmup_fraction=0.25"], 40)
    assert decay == [pytest.approx(0.05)] * 2
    # 10 warm-up steps: (k + 1) / 10, then the cosine from 1
    assert mult[:10] == pytest.approx([(k + 1) / 10 for k in range(10)])
    assert mult[10] == pytest.approx(1.0) and mult[11] < 1.0
