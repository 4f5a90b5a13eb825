"""The budget of an arm that starts from nothing: as many optimiser steps as pretraining plus
fine-tuning (:func:`scratch_budget`), and its config changes (:func:`scratch_overrides`).

A from-scratch arm of the label-efficiency experiment (:mod:`medcl.evaluate.efficiency`) is fair
only with the compute the pretrained arms spend; early stopping on validation then picks how much
of it is used.
"""

from __future__ import annotations

import math
from typing import Any

from medcl.config import Config
from medcl.data.manifest import Manifest
from medcl.evaluate.fitting import epoch_samples


def planned_pretrain_steps(cfg: Config, n_train: int) -> int:
    """Optimiser steps a pretraining on ``n_train`` training rows will take (one process)."""
    per_epoch = max(1, n_train // cfg.data.batch_size)  # MixedBatchSampler, drop-last
    steps = per_epoch * cfg.optim.epochs // cfg.trainer.accumulate_grad_batches
    return min(steps, cfg.optim.max_steps) if cfg.optim.max_steps > 0 else steps


def scratch_budget(cfg: Config, n_train: int, n_labelled: int) -> tuple[int, int]:
    """Fine-tuning epochs and patience of an arm that starts from nothing.

    A fair from-scratch arm gets at least as many optimiser steps as pretraining and fine-tuning
    together: ``finetune.epochs`` plus the pretraining's steps in fine-tuning epochs
    (:func:`medcl.evaluate.fitting.epoch_samples`). Patience grows in proportion, but at most to
    twice ``finetune.patience``: a network trained from nothing improves on validation by fits and
    starts, so it gets more patience than a pretrained one, yet a proportional patience (33
    epochs in the demo) lets every run go to its last epoch. Measured on the demo's validation
    split (supervised from scratch, 62 epochs): at 5 % labels the best epoch was the 32nd and
    nothing better came in the 30 after it; at 100 % it kept improving to the end, with at most 9
    epochs between improvements. Early stopping on validation then picks how much of the budget
    is used.
    """
    ft = cfg.finetune
    per_epoch = epoch_samples(ft, n_labelled) // ft.batch_size
    extra = math.ceil(planned_pretrain_steps(cfg, n_train) / max(1, per_epoch))
    epochs = ft.epochs + extra
    grown = round(ft.patience * epochs / ft.epochs)
    return epochs, max(ft.patience, min(2 * ft.patience, grown))


def scratch_overrides(cfg: Config, subset: Manifest) -> dict[str, Any]:
    """The config changes of an arm that starts from nothing, for :func:`derive`.

    ``finetune.epochs`` and ``patience`` from :func:`scratch_budget` (with
    ``efficiency.fair_budget``), and ``efficiency.scratch_augment`` as ``augment.options`` (which
    ``derive`` merges over the current options).
    """
    fields: dict[str, Any] = {}
    if cfg.efficiency.fair_budget:
        df = subset.df
        train = df["split"] == "train"
        epochs, patience = scratch_budget(
            cfg, int(train.sum()), int((train & (df["label"] != "")).sum())
        )
        fields.update({"finetune.epochs": epochs, "finetune.patience": patience})
    if cfg.efficiency.scratch_augment:
        fields["augment.options"] = dict(cfg.efficiency.scratch_augment)
    return fields
